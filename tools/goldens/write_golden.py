#!/usr/bin/env python3
"""Write one golden predictor: tools/goldens/write_golden.py OUTDIR WRITER_ID

Runs inside a writer environment (tools/goldens/build.sh builds them), with the upstream AutoGluon loader:
ag_torchfix is neither installed nor imported, except for stacks that cannot train NeuralNetFastAI without it
(build.sh sets GOLDEN_TRAIN_WITH_AG_TORCHFIX=1 there; it is then imported for training only, and the reference
predictions still come from a fresh process that does not import it).

OUTDIR/WRITER_ID/ (written atomically):
  predictor/      a multiclass NeuralNetFastAI predictor (FASTAI epochs=2, no weighted ensemble), trimmed to what
                  TabularPredictor.load(path, require_py_version_match=False, require_version_match=False) and
                  predict/predict_proba need
  test.csv        30 rows of make_table(30, "multiclass", seed=99, unseen=True) without the label
  expected.json   {"predict": [...], "predict_proba": {"columns": [...], "values": [[...]]}} on pd.read_csv(test.csv)
  writer.json     the writer's Python, package versions, trained_with_ag_torchfix, date

`write_golden.py --zoo OUTDIR WRITER_ID` writes a zoo golden instead (WRITER_ID is then `<writer>-zoo`):
  predictor/      a multiclass predictor over every CPU model family of AutoGluon 1.6 (LightGBM, CatBoost, XGBoost,
                  RandomForest, ExtraTrees, KNeighbors, LinearModel, NeuralNetTorch, NeuralNetFastAI: ZOO, few
                  trees and epochs) and its WeightedEnsemble_L2, not bagged, on the same 200 rows (numeric,
                  categorical, text and datetime columns: the text n-gram, text special and datetime generators)
  expected.json   as above for the predictor's best model, plus "models": {model: {"predict": ..., "predict_proba":
                  ...}} for EVERY model, and "model_best"
  writer.json     as above plus "kind": "zoo", "env" (the venv's directory name) and the model libraries' versions

`write_golden.py --predict[-zoo] PREDICTOR_DIR CSV OUT_JSON` is the reference step (run as a fresh subprocess).

GOLDEN_BLOCK_AG_TORCHFIX=1 (build.sh, when a zoo golden is written in a test-matrix venv that has ag_torchfix
installed editable, e.g. ~/.cache/ag-torchfix/envs/py313): ag_torchfix is blocked from import in every process of
the writer (a meta-path finder refuses it and the checkout is taken off sys.path; AG_TORCHFIX_AUTOLOAD=0 keeps its
start-up hook off), so the files are still written and predicted without it (writer.json
"ag_torchfix_installed_blocked").
"""

from __future__ import annotations

import datetime
import importlib.metadata as md
import importlib.util
import inspect
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

BLOCK_PKG = os.environ.get("GOLDEN_BLOCK_AG_TORCHFIX") == "1"
if BLOCK_PKG:
    import importlib.abc

    class _BlockAgTorchfix(importlib.abc.MetaPathFinder):
        """ag_torchfix is installed in this venv (a test-matrix venv): the golden is written without it."""

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("ag_torchfix", "_ag_torchfix_autoload"):
                raise ImportError(f"{name} is blocked while a golden is written (GOLDEN_BLOCK_AG_TORCHFIX=1)")
            return None

    if "ag_torchfix" in sys.modules or "_ag_torchfix_autoload" in sys.modules:
        raise SystemExit("ag_torchfix was imported at start-up: set AG_TORCHFIX_AUTOLOAD=0")
    sys.meta_path.insert(0, _BlockAgTorchfix())
    # the editable install puts the checkout on sys.path: take it off (nothing of the checkout is imported)
    sys.path[:] = [p for p in sys.path if not os.path.isfile(os.path.join(p or ".", "ag_torchfix", "__init__.py"))]

import numpy as np
import pandas as pd

N_TRAIN = int(os.environ.get("GOLDEN_ROWS", "200"))
PACKAGES = ("torch", "fastai", "fastcore", "fasttransform", "fastprogress", "autogluon.tabular", "autogluon.core",
            "numpy", "pandas", "scikit-learn")
ZOO_PACKAGES = ("lightgbm", "catboost", "xgboost-cpu", "xgboost")
WITH_PKG = os.environ.get("GOLDEN_TRAIN_WITH_AG_TORCHFIX") == "1"
SCRIPT = os.path.abspath(__file__)

# Every CPU model family of autogluon.tabular[all] 1.6, small (the same keys as the test suite's ZOO, fewer trees)
ZOO = {
    "GBM": {"num_boost_round": 10},
    "CAT": {"iterations": 10},
    "XGB": {"n_estimators": 10},
    "RF": {"n_estimators": 10},
    "XT": {"n_estimators": 10},
    "KNN": {},
    "LR": {},
    "NN_TORCH": {"num_epochs": 2},
    "FASTAI": {"epochs": 2},
}
ZOO_MODELS = {"LightGBM", "CatBoost", "XGBoost", "RandomForest", "ExtraTrees", "KNeighbors", "LinearModel",
              "NeuralNetTorch", "NeuralNetFastAI", "WeightedEnsemble_L2"}

# --- a copy of tests/helpers.py's make_table (the goldens must not depend on the test suite) ---------------------
WORDS = ["red", "green", "blue", "big", "small", "fast", "slow", "cat", "dog", "tree"]


def make_table(n: int, problem_type: str, seed: int = 0, unseen: bool = False) -> pd.DataFrame:
    """Numeric with NaN, int, categorical, high-cardinality, bool, datetime and text columns."""
    rng = np.random.default_rng(seed)
    cats = ["a", "b", "c", "d"] + (["never-seen"] if unseen else [])
    df = pd.DataFrame(
        {
            "num_nan": rng.normal(size=n),
            "int": rng.integers(0, 50, n),
            "cat": rng.choice(cats, n),
            "hicard": [f"id{i}" for i in rng.integers(0, 150 if not unseen else 400, n)],
            "flag": rng.random(n) > 0.5,
            "date": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D"),
            "text": [" ".join(rng.choice(WORDS, 8)) for _ in range(n)],
        }
    )
    df.loc[::7, "num_nan"] = np.nan
    signal = df["num_nan"].fillna(0) + (df["cat"] == "a") + 0.02 * df["int"]
    if problem_type == "binary":
        df["label"] = np.where(signal > 0.6, "yes", "no")
    elif problem_type == "multiclass":
        df["label"] = pd.cut(signal, [-np.inf, 0.2, 0.9, 1.5, np.inf], labels=["w", "x", "y", "z"]).astype(str)
    else:
        df["label"] = signal + rng.normal(scale=0.1, size=n)
    return df


# -------------------------------------------------------------------------------------------------------------------


def writer_shims() -> list[str]:
    """GOLDEN_PANDAS_OPTION_SHIM=1 (build.sh, pandas < 2.2 writers): register pandas' future.no_silent_downcasting
    option, which AutoGluon 1.6.3's fit sets unguarded (pandas < 2.2 raises OptionError). It changes nothing on
    those pandas releases (they never downcast silently under that name); the files are pandas' own."""
    if os.environ.get("GOLDEN_PANDAS_OPTION_SHIM") != "1":
        return []
    try:
        pd.get_option("future.no_silent_downcasting")
        return []
    except pd.errors.OptionError:
        import pandas._config.config as pandas_config

        pandas_config.register_option("future.no_silent_downcasting", False)
        return [f"pandas {pd.__version__}: registered option future.no_silent_downcasting (AutoGluon sets it at fit)"]


def load_predictor(path: str):
    from autogluon.tabular import TabularPredictor

    params = inspect.signature(TabularPredictor.load).parameters
    kwargs = {k: False for k in ("require_py_version_match", "require_version_match") if k in params}
    return TabularPredictor.load(path, verbosity=0, **kwargs)


def predictions(predictor, data, model=None) -> dict:
    pred = predictor.predict(data, model=model)
    proba = predictor.predict_proba(data, model=model)
    return {
        "predict": [str(v) for v in pred.tolist()],
        "predict_proba": {"columns": [str(c) for c in proba.columns],
                          "values": [[float(v) for v in row] for row in proba.to_numpy(dtype=np.float64)]},
    }


def predict_to_json(predictor_dir: str, csv: str, zoo: bool = False) -> dict:
    predictor = load_predictor(predictor_dir)
    data = pd.read_csv(csv)
    out = predictions(predictor, data)
    if zoo:  # every model, not only the best
        out["model_best"] = predictor.model_best
        out["models"] = {name: predictions(predictor, data, model=name) for name in predictor.model_names()}
    return out


def reference(predictor_dir: pathlib.Path, csv: pathlib.Path, zoo: bool = False) -> dict:
    """predict/predict_proba in a fresh process with the upstream loader (no ag_torchfix)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "expected.json"
        env = dict(os.environ, AG_TORCHFIX_AUTOLOAD="0", GOLDEN_TRAIN_WITH_AG_TORCHFIX="0")
        flag = "--predict-zoo" if zoo else "--predict"
        subprocess.run([sys.executable, "-I", SCRIPT, flag, str(predictor_dir), str(csv), str(out)], env=env,
                       check=True)
        return json.loads(out.read_text())


def same_one(a: dict, b: dict) -> bool:
    return (a["predict"] == b["predict"] and a["predict_proba"]["columns"] == b["predict_proba"]["columns"]
            and np.allclose(a["predict_proba"]["values"], b["predict_proba"]["values"], rtol=0, atol=1e-7))


def same(a: dict, b: dict) -> bool:
    if not same_one(a, b) or a.get("model_best") != b.get("model_best") or set(a.get("models", {})) != set(
            b.get("models", {})):
        return False
    return all(same_one(a["models"][name], b["models"][name]) for name in a.get("models", {}))


def versions(zoo: bool = False) -> dict:
    out = {}
    for name in PACKAGES + (ZOO_PACKAGES if zoo else ()):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            if name not in ("fasttransform", "xgboost", "xgboost-cpu"):
                out[name] = None
    return out


def train(dest: pathlib.Path) -> None:
    if WITH_PKG:
        import ag_torchfix  # noqa: F401  (this stack cannot train NeuralNetFastAI without it)
    from autogluon.tabular import TabularPredictor

    df = make_table(N_TRAIN, "multiclass", seed=0)
    predictor = TabularPredictor(label="label", problem_type="multiclass", path=str(dest), verbosity=0)
    predictor.fit(df, hyperparameters={"FASTAI": {"epochs": 2}}, fit_weighted_ensemble=False)
    if not list(dest.rglob("model-internals.pkl")):
        raise SystemExit("NeuralNetFastAI was not trained (no model-internals.pkl): see AutoGluon's log in "
                         f"{dest} (rerun with verbosity) ")
    predictor.save_space()


def train_zoo(dest: pathlib.Path) -> None:
    from autogluon.tabular import TabularPredictor

    df = make_table(N_TRAIN, "multiclass", seed=0)
    predictor = TabularPredictor(label="label", problem_type="multiclass", path=str(dest), verbosity=0)
    # one CPU: the machine is shared (AutoGluon records it in each model's params_aux; prediction ignores it)
    predictor.fit(df, hyperparameters=ZOO, num_cpus=1)
    trained = set(predictor.model_names())
    if trained != ZOO_MODELS:
        raise SystemExit(f"zoo: models {sorted(ZOO_MODELS - trained)} were not trained (got {sorted(trained)}): "
                         f"see AutoGluon's log in {dest} (rerun with verbosity)")
    predictor.save_space()


def trim(predictor_dir: pathlib.Path, csv: pathlib.Path, zoo: bool = False) -> list[str]:
    """Delete utils/ folders (training data, out-of-fold predictions, attributes) that load+predict don't need:
    each deletion is kept only if a fresh load still predicts the same (every model's predictions for a zoo)."""
    baseline = reference(predictor_dir, csv, zoo)
    removed = []
    candidates = sorted((p for p in predictor_dir.rglob("utils") if p.is_dir()), key=lambda p: len(p.parts))
    trial = predictor_dir.parent / "trial"
    for cand in candidates:
        if not cand.exists():
            continue
        rel = cand.relative_to(predictor_dir)
        if trial.exists():
            shutil.rmtree(trial)
        shutil.copytree(predictor_dir, trial)
        shutil.rmtree(trial / rel)
        try:
            ok = same(reference(trial, csv, zoo), baseline)
        except subprocess.CalledProcessError:
            ok = False
        if ok:
            shutil.rmtree(cand)
            removed.append(str(rel))
        else:
            print(f"write_golden: keeping {rel} (load+predict needs it)", file=sys.stderr)
    if trial.exists():
        shutil.rmtree(trial)
    return removed


def install_atomically(src: pathlib.Path, dest: pathlib.Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    shutil.copytree(src, staging / dest.name)
    old = None
    if dest.exists():
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}-old-", dir=dest.parent))
        os.replace(dest, old / dest.name)
    os.replace(staging / dest.name, dest)
    shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] in ("--predict", "--predict-zoo"):
        if "ag_torchfix" in sys.modules:
            raise SystemExit("the reference step must run without ag_torchfix")
        writer_shims()
        pathlib.Path(argv[3]).write_text(json.dumps(predict_to_json(argv[1], argv[2], zoo=argv[0] == "--predict-zoo")))
        assert "ag_torchfix" not in sys.modules, "ag_torchfix was imported during the reference step"
        return 0
    zoo = bool(argv) and argv[0] == "--zoo"
    if zoo:
        argv = argv[1:]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    outdir, writer_id = pathlib.Path(argv[0]).resolve(), argv[1]
    if zoo and not writer_id.endswith("-zoo"):
        raise SystemExit("a zoo golden's id ends with -zoo")
    if os.environ.get("AG_TORCHFIX_AUTOLOAD") != "0":
        raise SystemExit("set AG_TORCHFIX_AUTOLOAD=0 in the writer environment")
    if BLOCK_PKG and WITH_PKG:
        raise SystemExit("GOLDEN_BLOCK_AG_TORCHFIX and GOLDEN_TRAIN_WITH_AG_TORCHFIX exclude each other")
    if not WITH_PKG and not BLOCK_PKG and importlib.util.find_spec("ag_torchfix") is not None:
        raise SystemExit("ag_torchfix is importable in this writer environment: goldens are written without it")

    with tempfile.TemporaryDirectory(prefix=f"golden-{writer_id}-") as tmp:
        work = pathlib.Path(tmp) / writer_id
        work.mkdir()
        os.chdir(tmp)  # CatBoost may write catboost_info/ into the working directory
        test = make_table(30, "multiclass", seed=99, unseen=True).drop(columns=["label"])
        test.to_csv(work / "test.csv", index=False)
        shims = writer_shims()
        (train_zoo if zoo else train)(work / "predictor")
        removed = trim(work / "predictor", work / "test.csv", zoo)
        expected = reference(work / "predictor", work / "test.csv", zoo)
        (work / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        info = {"writer_id": writer_id}
        if zoo:
            info["kind"] = "zoo"
            info["env"] = pathlib.Path(sys.prefix).name
        info.update({
            "python": sys.version,
            "python_executable": sys.executable,
            "packages": versions(zoo),
            "trained_with_ag_torchfix": WITH_PKG,
        })
        if BLOCK_PKG:
            info["ag_torchfix_installed_blocked"] = (
                "ag_torchfix is installed (editable) in this venv; the writer and its reference step blocked its "
                "import (AG_TORCHFIX_AUTOLOAD=0, a meta-path finder refusing it, the checkout off sys.path)")
        info.update({
            "writer_shims": shims,
            "train_rows": N_TRAIN,
            "trimmed": removed,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
        if zoo:
            info["models"] = sorted(expected["models"])
            info["hyperparameters"] = ZOO
        if WITH_PKG:
            info["packages"]["ag_torchfix"] = md.version("ag_torchfix")
        (work / "writer.json").write_text(json.dumps(info, indent=1) + "\n")
        install_atomically(work, outdir / writer_id)
    print(f"write_golden: {outdir / writer_id} (removed: {', '.join(removed) or 'nothing'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
