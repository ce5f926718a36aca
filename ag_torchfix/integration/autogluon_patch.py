"""Patch AutoGluon's fastai model loader to use the secure loader.

Only ``NNFastAiTabularModel.load`` changes: it still loads ``model.pkl`` through AutoGluon's base
class and still reads ``model-internals.pkl`` through AutoGluon's ``load_pkl.load_with_fn`` (which
handles local paths and S3), but the function that turns the open file into a Learner is
``secure_load.load_learner`` instead of fastai's full-pickle ``load_learner``.  Nothing else in
AutoGluon, fastai or torch is replaced, so a user's own ``load_learner``/``torch.load`` calls are
unaffected.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import ModuleType

from ..core import patching
from ..core.errors import VersionWarning

from ..core.layout import AUTOGLUON_FASTAI_MODULE as TARGET_MODULE
_originals: dict[type, object] = {}
_warned_versions: set[str] = set()



def apply(module: ModuleType) -> None:
    """Replace ``NNFastAiTabularModel.load`` in ``module`` (idempotent); the replacement is transparent
    (``patching``)."""
    def make(original):
        def load(cls, path: str, reset_paths: bool = True, verbose: bool = True):
            return _load_fastai_model(cls, path, reset_paths=reset_paths, verbose=verbose)
        return load

    if not patching.is_patched(module.NNFastAiTabularModel.__dict__.get("load")):
        _check_version()
    patching.replace_classmethod(module.NNFastAiTabularModel, "load", make, _originals)


def remove() -> None:
    """Put every replaced ``load`` back."""
    patching.restore_classmethod("load", _originals)


def is_applied() -> bool:
    return bool(_originals)


def _load_fastai_model(cls, path: str, reset_paths: bool = True, verbose: bool = True):
    """NNFastAiTabularModel.load, with the internals loaded by ag_torchfix's secure loader."""
    from ..load import secure_load

    module = sys.modules[TARGET_MODULE]
    model = super(module.NNFastAiTabularModel, cls).load(path, reset_paths=reset_paths, verbose=verbose)
    if model._load_model:
        internals = os.path.join(path, model.model_internals_file_name)
        label = _model_label(path)
        secure_load.check_regular(internals, label)  # a FIFO would hang AutoGluon's open() below
        model.model = module.load_pkl.load_with_fn(
            internals, lambda f: secure_load.load_learner(f, path=internals, model=label), verbose=verbose
        )
    model._load_model = None
    return model


def _model_label(path: str) -> str:
    """'NeuralNetFastAI' or, for a bagged child, 'NeuralNetFastAI_BAG_L1/S1F1'."""
    parts = os.path.normpath(path).split(os.sep)
    if "models" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("models"):]) or parts[-1]
    return parts[-1]


def _check_version(installed: dict[str, str | None] | None = None) -> None:
    """One VersionWarning when torch, fastai or autogluon.tabular is a release the compatibility matrix did not
    measure, or torch is outside the range AutoGluon itself declares.  It points at the user's code."""
    from ..core import versions

    installed = installed if installed is not None else {name: versions.installed_version(name) for name in versions.TESTED}
    problems = versions.untested_versions(installed)
    outside = versions.outside_autogluon_torch_range(installed.get("torch"))
    if outside:
        problems.append(outside)
    key = "; ".join(problems)
    if problems and key not in _warned_versions:
        _warned_versions.add(key)
        tested = "; ".join(f"{name} {', '.join(v + '.x' if v.count('.') == 1 else v for v in versions)}"
                           for name, versions in versions.TESTED.items())
        warnings.warn(
            f"ag_torchfix was measured on {tested}; this environment has {key}. The secure fastai loader is "
            "applied, but AutoGluon's, fastai's or torch's loading may differ from what it reproduces "
            "(`ag-torchfix doctor` tells more).",
            VersionWarning,
            stacklevel=_user_stacklevel(),
        )


def _user_stacklevel() -> int:
    """The stacklevel of the first frame outside ag_torchfix, the import machinery and the libraries being
    imported: the user's own import statement."""
    skip = (os.path.dirname(os.path.abspath(__file__)) + os.sep, "<frozen ", os.sep + "autogluon" + os.sep,
            os.sep + "fastai" + os.sep, os.sep + "torch" + os.sep, "_ag_torchfix_autoload")
    frame, level = sys._getframe(1), 1
    while frame is not None and any(part in frame.f_code.co_filename for part in skip):
        frame, level = frame.f_back, level + 1
    return level
