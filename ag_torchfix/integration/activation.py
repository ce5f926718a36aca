"""install()/uninstall(): what ``import ag_torchfix`` does, and how to undo it exactly.

install() only registers post-import hooks, so it imports nothing heavy:
- when ``fastai.learner`` is imported, its ``load_model`` (how ``Learner.load`` reloads a
  weights+optimizer checkpoint, which AutoGluon does after every fit) runs with the few globals it
  needs accepted for that call only, in that thread or task (``torch_scope.adding``): fastai 2.8
  registers them process-wide around the call itself, fastai 2.7.19 only ``L``, fastai <= 2.7.18
  none, which breaks NeuralNetFastAI training on torch >= 2.6.  torch's process-wide safe set is
  never changed: numpy's dtype classes and scalar reconstructor, once accepted by every weights-only
  load of the process, let a crafted checkpoint forge object pointers;
- when AutoGluon's fastai model module is imported, its loader is patched (``autogluon_patch``);
- when AutoGluon's ``load_pkl`` is imported, its ``load`` is wrapped for strict mode (``strict_mode``), and
  so are ``XGBoostModel.load`` (XGBoost's own model file) and AutoGluon's ``load_str`` / ``load_json``
  (version.txt, metadata.json), which read files outside ``load_pkl``.
Every replacement keeps the original's name, module, docstring and signature, so it pickles by
reference as the original did.  All idempotent: installing twice equals once.
"""

from __future__ import annotations

import _thread

from . import import_hooks
from ..core.layout import (AUTOGLUON_FASTAI_MODULE, AUTOGLUON_LOAD_PKL_MODULE, AUTOGLUON_TEXT_MODULES,
                           AUTOGLUON_XGBOOST_MODULE, CATBOOST_MODULE)
from ..core.settings import ENV_STRICT, strict_env_enabled

_lock = _thread.RLock()
_state: dict[str, object] = {"installed": False, "how": None}
_originals: dict[str, object] = {}


def install(*, strict: bool | None = None, how: str = "explicit") -> None:
    """Activate the package in this process (idempotent).

    ``strict=True`` also turns strict mode on for the whole process (see ``strict_mode``);
    ``strict=False`` turns that process default off again; None leaves it as it is.
    """
    with _lock:
        if strict is not None:
            from ..load import strict_mode

            strict_mode.set_process_default(strict)
        if _state["installed"]:
            return
        _state.update(installed=True, how=how)
        import_hooks.when_imported("fastai.learner", _patch_fastai_load_model)
        import_hooks.when_imported(AUTOGLUON_FASTAI_MODULE, _patch_autogluon)
        import_hooks.when_imported(AUTOGLUON_LOAD_PKL_MODULE, _patch_load_pkl)
        import_hooks.when_imported(AUTOGLUON_XGBOOST_MODULE, _patch_xgboost)
        import_hooks.when_imported(CATBOOST_MODULE, _patch_catboost)
        for name in AUTOGLUON_TEXT_MODULES:
            import_hooks.when_imported(name, _patch_text)


def activate() -> None:
    """The ``autogluon.plugins`` entry point: what tools that enumerate AutoGluon plugins call."""
    install(how="entry point")


def uninstall() -> None:
    """Restore every patched object and remove exactly the globals the package added."""
    with _lock:
        import_hooks.discard("fastai.learner", _patch_fastai_load_model)
        import_hooks.discard(AUTOGLUON_FASTAI_MODULE, _patch_autogluon)
        import_hooks.discard(AUTOGLUON_LOAD_PKL_MODULE, _patch_load_pkl)
        import_hooks.discard(AUTOGLUON_XGBOOST_MODULE, _patch_xgboost)
        import_hooks.discard(CATBOOST_MODULE, _patch_catboost)
        for name in AUTOGLUON_TEXT_MODULES:
            import_hooks.discard(name, _patch_text)
        from . import autogluon_patch
        from ..load import native_sandbox, strict_mode, torch_scope

        autogluon_patch.remove()
        strict_mode.remove()
        strict_mode.remove_xgboost()
        native_sandbox.remove_catboost()
        strict_mode.remove_text()
        strict_mode.set_process_default(False)
        _unpatch_fastai_load_model()
        torch_scope.unpatch()
        _state.update(installed=False, how=None)


def status() -> dict[str, object]:
    """Whether and how the package is active in this process."""
    import sys

    from . import autogluon_patch

    hook = sys.modules.get("_ag_torchfix_autoload")
    with _lock:
        return {
            "installed": _state["installed"],
            "how": _state["how"],
            "startup_hook": None if hook is None else getattr(hook, "__file__", "?"),
            "autogluon_patched": autogluon_patch.is_applied(),
            "strict": strict_active(),
            "fastai_load_model_scoped": "fastai.learner.load_model" in _originals,
            "watching": import_hooks.watched(),
        }


def strict_active() -> bool:
    """Whether strict mode is on here, without importing strict_mode just to ask."""
    import sys

    module = sys.modules.get("ag_torchfix.load.strict_mode")
    return module.is_active() if module is not None else strict_env_enabled()


def fastai_load_model_globals() -> dict[str, object]:
    """The globals fastai 2.8 scopes around ``load_model`` (name -> object), under both numpy spellings."""
    import numpy as np
    from fastcore.foundation import L

    scalar = np.dtype("f8").type(0).__reduce__()[0]  # numpy's scalar reconstructor, whatever its module
    other = ("numpy.core.multiarray.scalar" if scalar.__module__.startswith("numpy._core")
             else "numpy._core.multiarray.scalar")
    dtypes = [getattr(np.dtypes, name) for name in getattr(getattr(np, "dtypes", None), "__all__", [])]
    found = {f"{o.__module__}.{o.__qualname__}": o for o in (L, scalar, np.dtype, *dtypes)}
    found[other] = scalar
    return found


def _patch_autogluon(module) -> None:
    from . import autogluon_patch

    autogluon_patch.apply(module)


def _patch_load_pkl(module) -> None:
    from ..load import strict_mode

    strict_mode.apply(module)


def _patch_xgboost(module) -> None:
    from ..load import strict_mode

    strict_mode.apply_xgboost(module)


def _patch_catboost(module) -> None:
    from ..load import native_sandbox

    native_sandbox.apply_catboost(module)


def _patch_text(module) -> None:
    from ..load import strict_mode

    strict_mode.apply_text(module)


def _patch_fastai_load_model(module) -> None:
    """Run fastai's ``load_model`` with its checkpoint globals accepted for that call only."""
    from ..core import patching

    with _lock:
        current = module.load_model
        if not _state["installed"] or patching.is_patched(current):
            return

        def load_model(*args, **kwargs):
            from ..load import torch_scope

            with torch_scope.adding(fastai_load_model_globals()):
                return current(*args, **kwargs)

        _originals["fastai.learner.load_model"] = current
        module.load_model = patching.wrap(current, load_model)


def _unpatch_fastai_load_model() -> None:
    import sys

    from ..core import patching

    module = sys.modules.get("fastai.learner")
    original = _originals.pop("fastai.learner.load_model", None)
    if module is not None and original is not None and patching.is_patched(module.load_model):
        module.load_model = original
