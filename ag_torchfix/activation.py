"""install()/uninstall(): what ``import ag_torchfix`` does, and how to undo it exactly.

install() only registers post-import hooks, so it imports nothing heavy:
- when ``fastai.learner`` is imported, the few globals fastai's own ``Learner.load`` of a
  weights+optimizer checkpoint needs are added to torch's process-wide safe set (what fastai >= 2.7.19
  scopes around its ``load_model``; fastai <= 2.7.18 forgets to, which breaks NeuralNetFastAI
  training on torch >= 2.6).  Only names torch did not already hold are added, and only those are
  removed again by uninstall();
- when AutoGluon's fastai model module is imported, its loader is patched (``autogluon_patch``).
Both are idempotent: installing twice equals once.
"""

from __future__ import annotations

import _thread
import os

from . import import_hooks

AUTOGLUON_FASTAI_MODULE = "autogluon.tabular.models.fastainn.tabular_nn_fastai"
AUTOGLUON_LOAD_PKL_MODULE = "autogluon.common.loaders.load_pkl"

ENV_STRICT = "AG_TORCHFIX_STRICT"
_lock = _thread.RLock()
_state: dict[str, object] = {"installed": False, "how": None, "added_globals": []}


def install(*, strict: bool | None = None, how: str = "explicit") -> None:
    """Activate the package in this process (idempotent).

    ``strict=True`` also turns strict mode on for the whole process (see ``strict_mode``);
    ``strict=False`` turns that process default off again; None leaves it as it is.
    """
    with _lock:
        if strict is not None:
            from . import strict_mode

            strict_mode.set_process_default(strict)
        if _state["installed"]:
            return
        _state.update(installed=True, how=how)
        import_hooks.when_imported("fastai.learner", _register_fastai_globals)
        import_hooks.when_imported(AUTOGLUON_FASTAI_MODULE, _patch_autogluon)
        import_hooks.when_imported(AUTOGLUON_LOAD_PKL_MODULE, _patch_load_pkl)


def activate() -> None:
    """The ``autogluon.plugins`` entry point: what tools that enumerate AutoGluon plugins call."""
    install(how="entry point")


def uninstall() -> None:
    """Restore every patched object and remove exactly the globals the package added."""
    with _lock:
        import_hooks.discard("fastai.learner", _register_fastai_globals)
        import_hooks.discard(AUTOGLUON_FASTAI_MODULE, _patch_autogluon)
        import_hooks.discard(AUTOGLUON_LOAD_PKL_MODULE, _patch_load_pkl)
        from . import autogluon_patch, strict_mode, torch_scope

        autogluon_patch.remove()
        strict_mode.remove()
        strict_mode.set_process_default(False)
        torch_scope.unpatch()
        added = _state["added_globals"]
        if added:
            from torch import _weights_only_unpickler as wou

            wou._remove_safe_globals(added)
        _state.update(installed=False, how=None, added_globals=[])


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
            "fastai_globals_registered": len(_state["added_globals"]),
            "watching": import_hooks.watched(),
        }


def strict_env_enabled() -> bool:
    """AG_TORCHFIX_STRICT=1/true/yes/on (any case) turns strict mode on for the whole process."""
    return os.environ.get(ENV_STRICT, "").strip().lower() in ("1", "true", "yes", "on")


def strict_active() -> bool:
    """Whether strict mode is on here, without importing strict_mode just to ask."""
    import sys

    module = sys.modules.get("ag_torchfix.strict_mode")
    return module.is_active() if module is not None else strict_env_enabled()


def fastai_load_model_globals() -> list:
    """The globals fastai >= 2.7.19 scopes around ``load_model``, under both numpy spellings."""
    import numpy as np
    from fastcore.foundation import L

    scalar = np.dtype("f8").type(0).__reduce__()[0]  # numpy's scalar reconstructor, whatever its module
    other = ("numpy.core.multiarray.scalar" if scalar.__module__.startswith("numpy._core")
             else "numpy._core.multiarray.scalar")
    dtypes = [getattr(np.dtypes, name) for name in getattr(getattr(np, "dtypes", None), "__all__", [])]
    return [L, scalar, (scalar, other), np.dtype, *dtypes]


def _patch_autogluon(module) -> None:
    from . import autogluon_patch

    autogluon_patch.apply(module)


def _patch_load_pkl(module) -> None:
    from . import strict_mode

    strict_mode.apply(module)


def _register_fastai_globals(_module) -> None:
    import torch.serialization

    with _lock:
        if not _state["installed"] or _state["added_globals"]:
            return
        present = set(torch.serialization.get_safe_globals())
        missing = [g for g in fastai_load_model_globals() if g not in present]
        # de-duplicate aliases numpy exposes twice in np.dtypes.__all__ (e.g. Int64DType/LongDType)
        missing = list(dict.fromkeys(missing))
        torch.serialization.add_safe_globals(missing)
        _state["added_globals"] = missing
