"""Train a grid of tiny NeuralNetFastAI predictors and record what their exports reference.

This is how the allowlist was built (``make sweep``).  It loads only files it has just
written itself, with a recording unpickler, and writes a JSON report of *candidates*:
every global, every ``getattr(obj, name)`` pair and every ``defaultdict`` factory found.
A human reviews each candidate before it enters ``ag_torchfix/policy/allowlist.py``.

Usage: python tools/sweep_exports.py OUT.json [--quick]   (or: make sweep)
"""

from __future__ import annotations

import collections
import functools
import json
import pathlib
import pickle
import sys
import tempfile
import types

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from helpers import make_table  # noqa: E402  (the same table the tests train on)


BINARY_METRICS = ["accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "roc_auc", "precision",
                  "precision_macro", "precision_micro", "precision_weighted", "recall", "recall_macro",
                  "recall_micro", "recall_weighted", "log_loss", "balanced_accuracy"]
MULTICLASS_METRICS = ["accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "precision_micro",
                      "precision_weighted", "recall_macro", "recall_micro", "recall_weighted", "log_loss"]
REGRESSION_METRICS = ["root_mean_squared_error", "mean_squared_error", "mean_absolute_error", "r2",
                      "median_absolute_error"]


def configs(quick: bool):
    yield dict(name="binary-accuracy", problem_type="binary", eval_metric="accuracy")
    if quick:
        return
    for m in BINARY_METRICS[1:]:
        yield dict(name=f"binary-{m}", problem_type="binary", eval_metric=m)
    for m in MULTICLASS_METRICS:
        yield dict(name=f"multiclass-{m}", problem_type="multiclass", eval_metric=m)
    for m in REGRESSION_METRICS:
        yield dict(name=f"regression-{m}", problem_type="regression", eval_metric=m)
    yield dict(name="quantile-pinball_loss", problem_type="quantile", eval_metric="pinball_loss")
    yield dict(name="binary-bag-refit", problem_type="binary", eval_metric="accuracy", bag=True, refit=True)
    yield dict(name="multiclass-bag-weights", problem_type="multiclass", eval_metric="accuracy", bag=True, weights=True)
    yield dict(name="regression-weights", problem_type="regression", eval_metric="r2", weights=True)
    yield dict(name="regression-numeric-only", problem_type="regression", eval_metric="root_mean_squared_error",
               columns=["num_nan", "int"])
    yield dict(name="binary-categorical-only", problem_type="binary", eval_metric="accuracy",
               columns=["cat", "hicard", "flag"])


class Recorder:
    """Records globals, getattr pairs and defaultdict factories while unpickling a trusted file."""

    def __init__(self):
        self.globals = collections.Counter()
        self.getattr_pairs = collections.Counter()
        self.factories = collections.Counter()
        self.partials = collections.Counter()
        self.uses: dict[str, set[str]] = {}  # static: normalised name -> how the stream uses it

    def pickle_module(self):
        rec = self

        def recording_getattr(obj, name, *default):
            owner = obj if isinstance(obj, type) else type(obj)
            kind = "class" if isinstance(obj, type) else "instance"
            rec.getattr_pairs[f"{kind} {owner.__module__}.{owner.__qualname__}.{name}"] += 1
            return getattr(obj, name, *default)

        def recording_defaultdict(*args):
            factory = args[0] if args else None
            rec.factories[f"{factory.__module__}.{factory.__qualname__}" if factory else "None"] += 1
            return collections.defaultdict(*args)

        def recording_partial(func, *args, **kwargs):
            rec.partials[f"{func.__module__}.{func.__qualname__}"] += 1
            return functools.partial(func, *args, **kwargs)

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                obj = super().find_class(module, name)
                rec.globals[f"{module}.{name}"] += 1
                if obj is getattr:
                    return recording_getattr
                if obj is collections.defaultdict:
                    return recording_defaultdict
                if obj is functools.partial:
                    return recording_partial
                return obj

        mod = types.ModuleType("recording_pickle")
        mod.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
        mod.Unpickler = Unpickler
        return mod


def record_file(path: pathlib.Path, rec: Recorder) -> None:
    import zipfile

    import torch

    from ag_torchfix.formats.pickle_scan import scan

    with zipfile.ZipFile(path) as zf:
        (member,) = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        for name, uses in scan(zf.open(member)).globals.items():
            rec.uses.setdefault(name, set()).update(uses)
    torch.load(path, map_location="cpu", weights_only=False, pickle_module=rec.pickle_module())


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    quick = "--quick" in sys.argv
    import ag_torchfix  # noqa: F401  (fastai <= 2.7.18 cannot train on torch >= 2.6 without it)
    from autogluon.tabular import TabularPredictor

    report = {"configs": {}, "globals": {}, "uses": {}, "getattr_pairs": {}, "defaultdict_factories": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in configs(quick):
            df = make_table(240, cfg["problem_type"])
            if cfg.get("columns"):
                df = df[cfg["columns"] + ["label"]]
            kwargs = {}
            if cfg.get("weights"):
                df["w"] = np.linspace(0.5, 1.5, len(df))
                kwargs["sample_weight"] = "w"
            if cfg["problem_type"] == "quantile":
                kwargs["quantile_levels"] = [0.1, 0.5, 0.9]
            path = pathlib.Path(tmp) / cfg["name"]
            predictor = TabularPredictor(label="label", problem_type=cfg["problem_type"],
                                         eval_metric=cfg["eval_metric"], path=str(path), verbosity=0, **kwargs)
            fit_kwargs = dict(hyperparameters={"FASTAI": {"epochs": 2}}, fit_weighted_ensemble=False)
            if cfg.get("bag"):
                fit_kwargs.update(num_bag_folds=2, num_bag_sets=1)
            predictor.fit(df, **fit_kwargs)
            if cfg.get("refit"):
                predictor.refit_full()
            rec = Recorder()
            files = sorted(path.rglob("model-internals.pkl"))
            for f in files:
                record_file(f, rec)
            report["configs"][cfg["name"]] = {"files": len(files), "globals": len(rec.uses)}
            for name, uses in rec.uses.items():
                report["uses"][name] = sorted(set(report["uses"].get(name, [])) | uses)
            for key, counter in (("globals", rec.uses), ("getattr_pairs", rec.getattr_pairs),
                                 ("defaultdict_factories", rec.factories)):
                for name in counter:
                    report[key].setdefault(name, []).append(cfg["name"])
            print(f"{cfg['name']}: {len(files)} files, {len(rec.uses)} globals", flush=True)
    for key in ("globals", "uses", "getattr_pairs", "defaultdict_factories"):
        report[key] = dict(sorted(report[key].items()))
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{len(report['globals'])} distinct globals -> {out}")


if __name__ == "__main__":
    main()
