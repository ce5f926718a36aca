"""AutoGluon's layout, as every layer needs it: where a predictor's files are (the predictor root, the model a file
belongs to) and which modules the package patches."""

from __future__ import annotations

import os

AUTOGLUON_FASTAI_MODULE = "autogluon.tabular.models.fastainn.tabular_nn_fastai"
AUTOGLUON_LOAD_PKL_MODULE = "autogluon.common.loaders.load_pkl"
AUTOGLUON_XGBOOST_MODULE = "autogluon.tabular.models.xgboost.xgboost_model"
AUTOGLUON_TEXT_MODULES = ("autogluon.common.loaders.load_str", "autogluon.common.loaders.load_json")
CATBOOST_MODULE = "catboost.core"  # strict mode's prediction sandbox for CatBoost models from untrusted files


def model_of(path: str) -> str | None:
    """The AutoGluon model a file belongs to, from the predictor layout (None outside a predictor)."""
    root, rel = predictor_root(path)
    if root is None:
        return None
    if rel[:1] == ["models"] and len(rel) >= 3:
        # models/<model>/file, models/<model>/<bagged child>/file, models/<model>/utils/...
        return rel[1] if len(rel) == 3 or rel[2] == "utils" else f"{rel[1]}/{rel[2]}"
    if rel[:1] == ["models"]:
        return "(trainer)"
    if rel[:2] == ["utils", "attr"] and len(rel) >= 4:
        return rel[2]
    return "(predictor)" if len(rel) == 1 else f"({rel[0]})"


def predictor_root(path: str) -> tuple[str | None, list[str]]:
    """The predictor directory holding ``path`` (the nearest ancestor with a predictor.pkl) and the
    path's components below it."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        root = os.sep.join(parts[:i]) or os.sep
        if _is_predictor(root):
            return root, parts[i:]
    return None, parts


_predictors: dict[str, bool] = {}  # a small cache (not functools: `import ag_torchfix` imports this module)


def _is_predictor(directory: str) -> bool:
    known = _predictors.get(directory)
    if known is None:
        if len(_predictors) >= 256:
            _predictors.clear()
        known = _predictors[directory] = os.path.isfile(os.path.join(directory, "predictor.pkl"))
    return known
