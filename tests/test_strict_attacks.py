"""Strict mode against whoever can write the predictor directory (issue 9).

Each attack is built from a genuine zoo predictor, shown to run (or hang, or crash) when AutoGluon loads the
predictor without strict mode, and refused in strict mode with nothing run, no hang and no crash; and
``ag-torchfix scan --strict`` exits non-zero on every tampered directory.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import OsSystem, dump_obj, load_obj, make_table

import ag_torchfix

TESTS = str(pathlib.Path(__file__).resolve().parent)
RF_COMPILER = "autogluon.tabular.models.rf.compilers.native"

USE = textwrap.dedent(
    f"""
    import sys, json
    sys.path.insert(0, {TESTS!r})
    from autogluon.tabular import TabularPredictor
    from helpers import make_table
    p = TabularPredictor.load(sys.argv[1], verbosity=0)
    data = make_table(20, p.problem_type, seed=5).drop(columns=["label"])
    model = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
    p.predict(data, model=model)
    print(json.dumps({{"wave_imported": "wave" in sys.modules}}))
    """
)


def run_autogluon(predictor, model: str | None = None, *, strict: bool, timeout: int = 300):
    env = {k: v for k, v in os.environ.items() if k != "AG_TORCHFIX_STRICT"}
    if strict:
        env["AG_TORCHFIX_STRICT"] = "1"
    return subprocess.run([sys.executable, "-c", USE, str(predictor), model or "-"], capture_output=True, text=True,
                          env=env, timeout=timeout)


def with_state(cls, state):
    """An object that pickles as NEWOBJ cls + BUILD state (its instance __getstate__ is what pickle asks)."""
    obj = cls.__new__(cls)
    obj.__dict__["__getstate__"] = lambda: state
    return obj


def scan_strict(predictor) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--strict", "--json", str(predictor)],
                         capture_output=True, text=True, timeout=600)
    return out.returncode, json.loads(out.stdout)


def strict_refuses(predictor, model: str | None = None, match: str | None = None):
    """In-process, strict: typed refusal (never RecursionError/AttributeError/KeyError), nothing run."""
    from autogluon.tabular import TabularPredictor

    with ag_torchfix.strict(), pytest.raises(ag_torchfix.SecureLoadError, match=match) as err:
        p = TabularPredictor.load(str(predictor), verbosity=0)
        p.predict(make_table(20, p.problem_type, seed=5).drop(columns=["label"]), model=model)
    return err.value


@pytest.fixture
def zoo_copy(zoo_predictors, tmp_path):
    def make(name: str = "zoo-binary-stacked") -> pathlib.Path:
        return shutil.copytree(zoo_predictors[name], tmp_path / f"tampered-{name}")

    return make


# --- classes AutoGluon calls later ------------------------------------------------------------------------

def test_learner_type_set_to_the_native_compiler_is_refused(zoo_copy, tmp_path):
    """TabularPredictor._load calls predictor._learner_type.load(path); the compiler's load unpickles
    model_native.pkl with plain pickle."""
    import importlib

    compiler = importlib.import_module(RF_COMPILER).AbstractNativeCompiler
    predictor = zoo_copy()
    obj = load_obj(predictor / "predictor.pkl")
    obj._learner_type = compiler
    dump_obj(obj, predictor / "predictor.pkl")
    marker = tmp_path / "PWNED-learner-type"
    (predictor / "model_native.pkl").write_bytes(pickle.dumps(OsSystem(marker)))
    run_autogluon(predictor, strict=False)
    assert marker.exists()  # live without strict mode
    marker.unlink()
    strict_refuses(predictor, match="_learner_type holds the class")
    assert not marker.exists()
    assert scan_strict(predictor)[0] != 0


def test_build_slot_state_cannot_rewrite_an_objects_class(zoo_copy, tmp_path):
    """A bagged child's _compiler pickled as FeatureMetadata with slot state {'__class__': the native compiler}
    and save_in_pkl=False: AbstractModel.load would call its load, which unpickles model_native.pkl."""
    import importlib

    from autogluon.common.features.feature_metadata import FeatureMetadata

    compiler = importlib.import_module(RF_COMPILER).AbstractNativeCompiler
    predictor = zoo_copy()
    child = predictor / "models" / "RandomForest_BAG_L1" / "S1F1"
    obj = load_obj(child / "model.pkl")
    obj._compiler = with_state(FeatureMetadata, ({"save_in_pkl": False}, {"__class__": compiler}))
    dump_obj(obj, child / "model.pkl")
    marker = tmp_path / "PWNED-slot-class"
    (child / "model_native.pkl").write_bytes(pickle.dumps(OsSystem(marker)))
    run_autogluon(predictor, "RandomForest_BAG_L1", strict=False)
    assert marker.exists()
    marker.unlink()
    strict_refuses(predictor, "RandomForest_BAG_L1", match="slot state sets '?__class__")
    assert not marker.exists()
    assert scan_strict(predictor)[0] != 0


@pytest.mark.parametrize("attack", ["learner-type-predictor", "learner-is-a-dict", "node-type", "child-type"])
def test_wrong_kinds_and_classes_are_typed_refusals(attack, zoo_copy):
    from autogluon.tabular import TabularPredictor
    from autogluon.tabular.models.rf.rf_model import RFModel

    predictor = zoo_copy()
    if attack == "learner-type-predictor":  # upstream: RecursionError
        obj = load_obj(predictor / "predictor.pkl")
        obj._learner_type = TabularPredictor
        dump_obj(obj, predictor / "predictor.pkl")
    elif attack == "learner-is-a-dict":  # upstream: AttributeError: 'dict' object has no attribute ...
        dump_obj({"path": "x"}, predictor / "learner.pkl")
    elif attack == "node-type":
        trainer = load_obj(predictor / "models" / "trainer.pkl")
        trainer.model_graph.nodes["LightGBM_BAG_L1"]["type"] = TabularPredictor
        dump_obj(trainer, predictor / "models" / "trainer.pkl")
    else:  # a bag whose children would load as another model class
        bag = load_obj(predictor / "models" / "LightGBM_BAG_L1" / "model.pkl")
        bag._child_type = RFModel
        dump_obj(bag, predictor / "models" / "LightGBM_BAG_L1" / "model.pkl")
    expected = {"learner-type-predictor": r"_learner_type holds the class .*TabularPredictor",
                "learner-is-a-dict": r"learner.pkl holds a builtins.dict",
                "node-type": r"\[LightGBM_BAG_L1\]\[type\] holds the class .*TabularPredictor",
                "child-type": r"loaded this file as a .*RFModel .*but it holds a .*LGBModel"}[attack]
    err = strict_refuses(predictor, "LightGBM_BAG_L1" if attack in ("node-type", "child-type") else None,
                         match=expected)
    assert isinstance(err, ag_torchfix.DisallowedGlobalsError)
    assert scan_strict(predictor)[0] != 0 or attack == "child-type"  # child-type: only the load tells (cross-file)


def test_a_model_graph_path_cannot_leave_the_predictor(zoo_copy):
    predictor = zoo_copy()
    trainer = load_obj(predictor / "models" / "trainer.pkl")
    trainer.model_graph.nodes["LightGBM_BAG_L1"]["path"] = ["..", "..", "elsewhere"]
    dump_obj(trainer, predictor / "models" / "trainer.pkl")
    strict_refuses(predictor, "LightGBM_BAG_L1", match="not a plain file name")
    assert scan_strict(predictor)[0] != 0


@pytest.mark.parametrize("container, match", [
    ("dict", "model_specific_feature_generator_kwargs"),
    # a Series answers params_aux["key"] and .get like the dict AutoGluon writes (issue 18): the dict is required
    ("series", "AutoGluon writes a dict there"),
])
def test_a_feature_generator_named_by_string_is_not_imported(zoo_copy, container, match):
    """AutoGluon 1.6 resolves model_specific_feature_generator_kwargs' class names with importlib at predict."""
    import pandas as pd

    predictor = zoo_copy("zoo-multiclass")
    path = predictor / "models" / "LinearModel" / "model.pkl"
    model = load_obj(path)
    if not hasattr(model, "_model_specific_feature_generators"):
        pytest.skip("this AutoGluon has no model-specific feature generators")
    model._model_specific_feature_generators = "NOTSET"
    params = dict(model.params_aux)
    params["model_specific_feature_generator_kwargs"] = {"feature_generators": [["wave:Error", {}]]}
    if container == "dict":
        model.params_aux.update(params)
    else:
        model.params_aux = pd.Series(params, dtype=object)
    dump_obj(model, path)
    live = run_autogluon(predictor, "LinearModel", strict=False)
    assert "No module named" not in live.stderr and ("wave" in live.stderr or "Error()" in live.stderr), live.stderr
    strict_refuses(predictor, "LinearModel", match=match)
    assert scan_strict(predictor)[0] != 0


def test_a_local_path_that_looks_like_a_url_is_loaded_strictly(zoo_copy, tmp_path):
    """AutoGluon reads 'dir/evil://x' as a local file (only s3 and http(s) with a host are remote): strict mode
    must not hand it to AutoGluon's own full-pickle loader (issue 18)."""
    source = zoo_copy("zoo-multiclass")
    (tmp_path / "evil:").mkdir()
    shutil.move(str(source), str(tmp_path / "evil:" / "p"))
    predictor = f"{tmp_path / 'evil:'}//p"
    assert "://" in predictor and os.path.isdir(predictor)
    marker = tmp_path / "ran"
    dump_obj(OsSystem(marker), pathlib.Path(predictor) / "models" / "LightGBM" / "model.pkl")
    run_autogluon(predictor, "LightGBM", strict=False)
    assert marker.exists()  # plain AutoGluon runs it
    marker.unlink()
    strict_refuses(predictor, "LightGBM", match="outside the allowlist")
    assert not marker.exists()


# --- native state ---------------------------------------------------------------------------------------

def _first_tree_model(predictor: pathlib.Path):
    path = predictor / "models" / "RandomForest_BAG_L1" / "S1F1" / "model.pkl"
    return path, load_obj(path)


def test_a_cyclic_sklearn_tree_is_refused_instead_of_hanging(zoo_copy):
    predictor = zoo_copy()
    path, model = _first_tree_model(predictor)
    tree = model.model.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    first_internal = int(np.flatnonzero(nodes["left_child"] >= 0)[0])
    nodes["left_child"][first_internal] = first_internal  # a child pointing back at its parent: predict loops
    state["nodes"] = nodes
    tree.__setstate__(state)
    dump_obj(model, path)
    live = None
    try:
        live = run_autogluon(predictor, "RandomForest_BAG_L1", strict=False, timeout=25)
    except subprocess.TimeoutExpired:
        pass
    assert live is None or live.returncode != 0  # without strict mode: hangs (or fails)
    strict_refuses(predictor, "RandomForest_BAG_L1", match="tree")
    assert scan_strict(predictor)[0] != 0


def test_an_out_of_range_sklearn_child_is_refused_instead_of_crashing(zoo_copy):
    predictor = zoo_copy()
    path, model = _first_tree_model(predictor)
    tree = model.model.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["right_child"][int(np.flatnonzero(nodes["right_child"] >= 0)[0])] = 2**40
    state["nodes"] = nodes
    tree.__setstate__(state)
    dump_obj(model, path)
    live = run_autogluon(predictor, "RandomForest_BAG_L1", strict=False, timeout=120)
    assert live.returncode != 0  # without strict mode: the interpreter dies or errors
    strict_refuses(predictor, "RandomForest_BAG_L1", match="tree")


def test_a_tampered_catboost_blob_is_refused(zoo_copy):
    predictor = zoo_copy()
    path = predictor / "models" / "CatBoost_BAG_L1" / "S1F1" / "model.pkl"
    model = load_obj(path)
    from test_native import cb_flip  # one byte changed: the high byte of the first split id (SIGSEGV on load)

    state = model.model.__getstate__()
    state["__model"] = cb_flip([state["__model"]])
    model.model = with_state(type(model.model), state)
    dump_obj(model, path)
    strict_refuses(predictor, "CatBoost_BAG_L1", match="CatBoost|catboost")
    assert scan_strict(predictor)[0] != 0


def test_a_tampered_xgboost_file_is_refused(zoo_copy):
    predictor = zoo_copy()
    ubj = predictor / "models" / "XGBoost_BAG_L1" / "S1F1" / "xgb.ubj"
    ubj.write_bytes(ubj.read_bytes()[: len(ubj.read_bytes()) // 2])
    strict_refuses(predictor, "XGBoost_BAG_L1", match="XGBoost")


# --- what scan --strict covers ----------------------------------------------------------------------------

def test_scan_strict_tells_which_files_strict_mode_does_not_cover(zoo_copy, tmp_path):
    predictor = zoo_copy()
    (predictor / "models" / "RandomForest_BAG_L1" / "model_native.pkl").write_bytes(
        pickle.dumps({"harmless": 1}, protocol=4))
    code, doc = scan_strict(predictor)
    files = {os.path.relpath(f["path"], predictor): f for f in doc["files"]}
    native = files[os.path.join("models", "RandomForest_BAG_L1", "model_native.pkl")]
    assert native["verdict"] == "needs-trust" and not native["covered"] and code == 1
    assert files["predictor.pkl"]["verdict"] == "allowed" and files["predictor.pkl"]["covered"]
