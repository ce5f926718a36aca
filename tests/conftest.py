"""Session fixtures: tiny real predictors, trained once and cached on disk per library stack.

The cache key covers the installed versions of everything that shapes an export and the source of
this file, so a different stack or a changed recipe retrains (seconds per predictor).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

import ag_torchfix  # noqa: F401  (activates the package before AutoGluon is imported)

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import fit_zoo, make_table, plant_os_system  # noqa: E402

STACK_PACKAGES = ("torch", "fastai", "fastcore", "autogluon.tabular", "numpy", "pandas", "scikit-learn", "lightgbm",
                  "catboost", "xgboost-cpu")

# name -> (problem_type, eval_metric, fit options)
PREDICTORS = {
    "binary": ("binary", "accuracy", {}),
    "multiclass": ("multiclass", "f1_macro", {}),
    "regression": ("regression", "r2", {"sample_weight": True}),
    "quantile": ("quantile", "pinball_loss", {}),
    "bagged": ("binary", "roc_auc", {"bag": True, "refit_full": True}),
}


# strict mode's zoo (needs autogluon.tabular[all]'s CPU models): name -> (problem_type, fit options)
ZOO_PREDICTORS = {
    "zoo-binary-stacked": ("binary", {"bag": True, "stack": True}),
    "zoo-multiclass": ("multiclass", {"bag": False}),
    "zoo-regression": ("regression", {"bag": True, "refit": True}),
    "zoo-quantile": ("quantile", {"bag": False}),
}


# package files (relative to ag_torchfix/) that never run while AutoGluon trains and saves: strict mode, the scanner,
# the command line (the whole cli layer), locks
NOT_IN_TRAINING = frozenset({"load/strict_unpickler.py", "load/strict_mode.py", "policy/dispatch.py", "load/native.py",
                             "load/native_sandbox.py", "load/forking.py", "policy/value_invariants.py",
                             "formats/text.py", "trust/lock.py", "__main__.py", "cli/"})


def _in_training(path: pathlib.Path) -> bool:
    relative = path.relative_to(ROOT / "ag_torchfix").as_posix()
    return not any(relative == entry or entry.endswith("/") and relative.startswith(entry) for entry in NOT_IN_TRAINING)


def stack_key() -> str:
    parts = [sys.version.split()[0]]
    for name in STACK_PACKAGES:
        try:
            parts.append(f"{name}={md.version(name)}")
        except md.PackageNotFoundError:
            parts.append(f"{name}=-")
    # the recipe, and the package's modules that run while AutoGluon trains and saves (training on legacy fastai
    # stacks depends on them); strict mode, the scanner and the command line never run during training
    package = [p for p in sorted((ROOT / "ag_torchfix").rglob("*.py")) if _in_training(p)]
    for source in [ROOT / "tests" / "conftest.py", ROOT / "tests" / "helpers.py", *package]:
        parts.append(hashlib.sha256(source.read_bytes()).hexdigest()[:12])
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


CACHE = pathlib.Path(os.environ.get("AG_TORCHFIX_TEST_CACHE", ROOT / ".cache" / "predictors")) / stack_key()


def train(name: str, dest: pathlib.Path) -> None:
    import numpy as np
    from autogluon.tabular import TabularPredictor

    if name in ZOO_PREDICTORS:
        problem_type, opts = ZOO_PREDICTORS[name]
        fit_zoo(dest, problem_type, **opts)
        return

    problem_type, metric, opts = PREDICTORS[name]
    df = make_table(240, problem_type, seed=sorted(PREDICTORS).index(name))
    kwargs = {}
    if opts.get("sample_weight"):
        df["weight"] = np.linspace(0.5, 1.5, len(df))
        kwargs["sample_weight"] = "weight"
    if problem_type == "quantile":
        kwargs["quantile_levels"] = [0.1, 0.5, 0.9]
    predictor = TabularPredictor(label="label", problem_type=problem_type, eval_metric=metric, path=str(dest),
                                 verbosity=0, **kwargs)
    fit = dict(hyperparameters={"FASTAI": {"epochs": 3}}, fit_weighted_ensemble=False)
    if opts.get("bag"):
        fit.update(num_bag_folds=2, num_bag_sets=1)
    predictor.fit(df, **fit)
    if opts.get("refit_full"):
        predictor.refit_full()
    internals = list(dest.rglob("model-internals.pkl"))
    assert internals, f"{name}: NeuralNetFastAI was not trained (no model-internals.pkl)"


def cached_predictor(name: str) -> pathlib.Path:
    path = CACHE / name
    if not (path / "predictor.pkl").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE))
        train(name, tmp / name)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp / name, path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@pytest.fixture(scope="session")
def predictors() -> dict[str, pathlib.Path]:
    return {name: cached_predictor(name) for name in PREDICTORS}


@pytest.fixture(scope="session")
def zoo_predictors() -> dict[str, pathlib.Path]:
    for module in ("lightgbm", "catboost", "xgboost"):
        pytest.importorskip(module, reason="strict mode's zoo needs autogluon.tabular[all]'s CPU models")
    return {name: cached_predictor(name) for name in ZOO_PREDICTORS}


@pytest.fixture(scope="session")
def binary_predictor(predictors) -> pathlib.Path:
    return predictors["binary"]


@pytest.fixture
def predictor_copy(binary_predictor, tmp_path) -> pathlib.Path:
    """A private copy of the binary predictor, safe to tamper with."""
    dest = tmp_path / "predictor"
    shutil.copytree(binary_predictor, dest)
    return dest


@pytest.fixture
def tampered_predictor(binary_predictor, tmp_path) -> pathlib.Path:
    """A copy of the binary predictor whose fastai internals run ``touch tmp_path/PWNED`` under full pickle."""
    dest = tmp_path / "tampered"
    shutil.copytree(binary_predictor, dest)
    plant_os_system(next(dest.rglob("model-internals.pkl")), tmp_path / "PWNED")
    return dest


@pytest.fixture
def internals_of():
    def find(predictor_dir: pathlib.Path) -> pathlib.Path:
        (path,) = sorted(predictor_dir.rglob("model-internals.pkl"))[:1]
        return path

    return find


# Modules whose behaviour depends neither on TORCH_FORCE_WEIGHTS_ONLY_LOAD nor on the fastai/AutoGluon generation
# (the static scanner, the catalogue, the native validators, strict mode's attack matrix on the CPU zoo): the
# Makefile runs them once, on the current stack unforced, and sets AG_TORCHFIX_TEST_ONCE=0 for the other rows of
# the matrix, which skip them (`make test` stays well under 30 minutes).
RUN_ONCE = {"test_pickle_scan", "test_catalogue", "test_native", "test_strict_attacks", "test_scan_formats",
            "test_fuzz_findings", "test_bounds", "test_scan_roles", "test_spellings", "test_redteam_materialize",
            "test_strict_values", "test_native_values", "test_redteam_strict_values"}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AG_TORCHFIX_TEST_ONCE", "1") != "0":
        return
    skip = pytest.mark.skip(reason="run once, on the current stack unforced (AG_TORCHFIX_TEST_ONCE=0 here)")
    for item in items:
        if item.module.__name__ in RUN_ONCE:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_trust_from_env(monkeypatch):
    """Tests start with nothing trusted.  TORCH_FORCE_WEIGHTS_ONLY_LOAD is left as the run set it (the
    matrix runs the suite with and without it); tests that depend on it set or clear it themselves."""
    monkeypatch.delenv("AG_TORCHFIX_TRUST", raising=False)


@pytest.fixture
def no_force(monkeypatch):
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)


@pytest.fixture
def force(monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
