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

from .errors import VersionWarning

from .activation import AUTOGLUON_FASTAI_MODULE as TARGET_MODULE
# Releases whose NNFastAiTabularModel.load (and fastai export format) this patch reproduces and tests.
TESTED = {"autogluon.tabular": ("1.1", "1.6"), "fastai": ("2.7", "2.8")}

_originals: dict[type, object] = {}
_warned_versions: set[str] = set()


def apply(module: ModuleType) -> None:
    """Replace ``NNFastAiTabularModel.load`` in ``module`` (idempotent)."""
    cls = module.NNFastAiTabularModel
    current = cls.__dict__.get("load")
    if getattr(current, "__func__", None) is _load_fastai_model:
        return
    _check_version()
    _originals[cls] = current
    cls.load = classmethod(_load_fastai_model)


def remove() -> None:
    """Put every replaced ``load`` back."""
    for cls, original in list(_originals.items()):
        if getattr(cls.__dict__.get("load"), "__func__", None) is _load_fastai_model:
            cls.load = original
        del _originals[cls]


def is_applied() -> bool:
    return bool(_originals)


def _load_fastai_model(cls, path: str, reset_paths: bool = True, verbose: bool = True):
    """NNFastAiTabularModel.load, with the internals loaded by ag_torchfix's secure loader."""
    from . import secure_load

    module = sys.modules[TARGET_MODULE]
    model = super(module.NNFastAiTabularModel, cls).load(path, reset_paths=reset_paths, verbose=verbose)
    if model._load_model:
        internals = os.path.join(path, model.model_internals_file_name)
        label = _model_label(path)
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
    """One VersionWarning when autogluon.tabular or fastai is a release this patch was not built for."""
    installed = installed if installed is not None else _installed_versions()
    unknown = [f"{name} {version}" for name, version in installed.items()
               if version and not version.startswith(tuple(v + "." for v in TESTED[name]))]
    key = ", ".join(unknown)
    if unknown and key not in _warned_versions:
        _warned_versions.add(key)
        built_for = "; ".join(f"{name} {', '.join(v + '.x' for v in TESTED[name])}" for name in TESTED)
        warnings.warn(
            f"ag_torchfix was built and tested for {built_for}; this environment has {key}. The secure fastai "
            "loader is applied, but AutoGluon's or fastai's loading may differ from what it reproduces.",
            VersionWarning,
            stacklevel=3,
        )


def _installed_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in TESTED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
