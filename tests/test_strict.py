"""Strict mode: a whole predictor loads without running anything from it, on the real model zoo."""

from __future__ import annotations

import collections
import functools
import io
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import OsSystem, make_table

import ag_torchfix
from ag_torchfix.load import strict_mode
from ag_torchfix.trust import rules as trust

TESTS = str(pathlib.Path(__file__).resolve().parent)


def probabilities(predictor_dir, strict: bool) -> dict[str, np.ndarray]:
    """Every model's predictions (probabilities where there are classes) from a fresh load."""
    from autogluon.tabular import TabularPredictor

    with ag_torchfix.strict(strict):
        predictor = TabularPredictor.load(str(predictor_dir), verbosity=0)
        data = make_table(40, predictor.problem_type, seed=9, unseen=True).drop(columns=["label"])
        classes = predictor.problem_type in ("binary", "multiclass")
        return {m: (predictor.predict_proba(data, model=m) if classes else predictor.predict(data, model=m)).to_numpy()
                for m in predictor.model_names()}


def test_bagged_stacked_zoo_predictor_loads_strictly_bit_for_bit(zoo_predictors):
    path = zoo_predictors["zoo-binary-stacked"]
    expected, got = probabilities(path, strict=False), probabilities(path, strict=True)
    families = {m.split("_")[0] for m in expected}
    assert {"LightGBM", "CatBoost", "XGBoost", "RandomForest", "ExtraTrees", "KNeighbors", "LinearModel",
            "NeuralNetTorch", "NeuralNetFastAI", "WeightedEnsemble"} <= families
    assert any(m.endswith("_L2") for m in expected) and got.keys() == expected.keys()
    for model in expected:
        assert np.array_equal(got[model], expected[model]), model


@pytest.mark.parametrize("name", ["zoo-multiclass", "zoo-regression", "zoo-quantile"])
def test_each_problem_type_loads_strictly_bit_for_bit(name, zoo_predictors):
    expected, got = probabilities(zoo_predictors[name], False), probabilities(zoo_predictors[name], True)
    assert got.keys() == expected.keys() and len(expected) >= 5
    for model in expected:
        assert np.array_equal(got[model], expected[model]), model


def test_fastai_only_predictors_load_strictly(predictors):
    for name, path in predictors.items():
        expected, got = probabilities(path, False), probabilities(path, True)
        assert all(np.array_equal(got[m], expected[m]) for m in expected), name


# --- tampering: a payload in each kind of pickle -------------------------------------------------------

def _attach(obj, payload):
    if hasattr(obj, "attrs") and isinstance(getattr(obj, "attrs"), dict):  # a DataFrame under utils/
        obj.attrs["note"] = payload
    else:
        obj.ag_torchfix_test_note = payload
    return obj


KINDS = {
    "predictor.pkl": "predictor.pkl",
    "learner.pkl": "learner.pkl",
    "trainer.pkl": "models/trainer.pkl",
    "model.pkl": "models/LightGBM_BAG_L1/model.pkl",
    "bagged-child-model.pkl": "models/LightGBM_BAG_L1/S1F1/model.pkl",
    "utils": "utils/data/X.pkl",
}

USE = textwrap.dedent(
    f"""
    import sys
    sys.path.insert(0, {TESTS!r})
    from autogluon.tabular import TabularPredictor
    from helpers import make_table
    p = TabularPredictor.load(sys.argv[1], verbosity=0)
    if sys.argv[2] == "utils":
        p.load_data_internal()
    p.predict(make_table(20, "binary", seed=5).drop(columns=["label"]))
    """
)


def _plant_in_pickle(file: pathlib.Path, marker: pathlib.Path) -> None:
    with open(file, "rb") as fh:  # our own file: full pickle is fine here
        obj = pickle.load(fh)
    with open(file, "wb") as fh:
        pickle.dump(_attach(obj, OsSystem(marker)), fh, protocol=pickle.HIGHEST_PROTOCOL)


@pytest.fixture
def tampered_zoo(zoo_predictors, tmp_path):
    def make(kind: str) -> tuple[pathlib.Path, pathlib.Path]:
        dest = shutil.copytree(zoo_predictors["zoo-binary-stacked"], tmp_path / f"tampered-{kind}")
        marker = tmp_path / f"PWNED-{kind}"
        _plant_in_pickle(dest / KINDS[kind], marker)
        return dest, marker

    return make


@pytest.mark.parametrize("relpath", ["learner.pkl", "models/NeuralNetFastAI/model.pkl"])
def test_fastai_only_predictor_payload_is_refused_in_strict_mode(relpath, binary_predictor, tmp_path):
    """Runs on every stack of the matrix, AutoGluon 1.1.1 included (the zoo tests need 1.6's model zoo)."""
    from autogluon.tabular import TabularPredictor

    dest = shutil.copytree(binary_predictor, tmp_path / "tampered")
    marker = tmp_path / "PWNED"
    _plant_in_pickle(dest / relpath, marker)
    data = make_table(20, "binary", seed=5).drop(columns=["label"])
    with ag_torchfix.strict(), pytest.raises(ag_torchfix.DisallowedGlobalsError) as err:
        TabularPredictor.load(str(dest), verbosity=0).predict(data, model="NeuralNetFastAI")
    assert str(dest / relpath) in str(err.value) and "posix.system (dangerous" in str(err.value)
    assert not marker.exists()
    with ag_torchfix.strict(False):  # the payload is real: AutoGluon's own load runs it
        TabularPredictor.load(str(dest), verbosity=0).predict(data, model="NeuralNetFastAI")
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_payload_in_each_kind_of_pickle_is_refused_in_strict_mode(kind, tampered_zoo):
    from autogluon.tabular import TabularPredictor

    predictor, marker = tampered_zoo(kind)
    with ag_torchfix.strict(), pytest.raises(ag_torchfix.DisallowedGlobalsError) as err:
        p = TabularPredictor.load(str(predictor), verbosity=0)
        if kind == "utils":
            p.load_data_internal()
        p.predict(make_table(20, "binary", seed=5).drop(columns=["label"]))
    message = str(err.value)
    assert str(predictor / KINDS[kind]) in message and "posix.system (dangerous" in message
    if "model.pkl" in kind:
        assert "(model 'LightGBM_BAG_L1" in message
    assert not marker.exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_same_payload_runs_outside_strict_mode(kind, tampered_zoo):
    predictor, marker = tampered_zoo(kind)
    env = {k: v for k, v in os.environ.items() if k != ag_torchfix.activation.ENV_STRICT}
    subprocess.run([sys.executable, "-c", USE, str(predictor), kind], env=env, capture_output=True, timeout=600)
    assert marker.exists(), f"{kind}: the payload did not run without strict mode"


@pytest.mark.parametrize("how", ["env", "install"])
def test_strict_mode_process_wide(how, tampered_zoo):
    predictor, marker = tampered_zoo("learner.pkl")
    code = ("import ag_torchfix; ag_torchfix.install(strict=True)\n" if how == "install" else "") + USE
    env = {**os.environ, **({ag_torchfix.activation.ENV_STRICT: "1"} if how == "env" else {})}
    out = subprocess.run([sys.executable, "-c", code, str(predictor), "learner.pkl"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode != 0 and "DisallowedGlobalsError" in out.stderr and "learner.pkl" in out.stderr
    assert not marker.exists()


def test_trust_lifts_strict_mode_for_trusted_predictors_only(zoo_predictors, tmp_path):
    from autogluon.tabular import TabularPredictor

    dest = shutil.copytree(zoo_predictors["zoo-binary-stacked"], tmp_path / "p")
    with open(dest / "learner.pkl", "rb") as fh:
        learner = pickle.load(fh)
    learner.ag_torchfix_test_note = collections.Counter  # harmless, but not in the strict allowlist
    with open(dest / "learner.pkl", "wb") as fh:
        pickle.dump(learner, fh, protocol=pickle.HIGHEST_PROTOCOL)
    with ag_torchfix.strict():
        with ag_torchfix.trusted(tmp_path / "elsewhere"), pytest.raises(ag_torchfix.DisallowedGlobalsError,
                                                                         match="collections.Counter"):
            TabularPredictor.load(str(dest), verbosity=0)
        if trust.platform_forces_weights_only():  # the platform setting wins, trust included
            with ag_torchfix.trusted(dest), pytest.raises(ag_torchfix.DisallowedGlobalsError,
                                                          match="platform setting wins"):
                TabularPredictor.load(str(dest), verbosity=0)
            return
        with ag_torchfix.trusted(dest), pytest.warns(ag_torchfix.TrustedFallbackWarning, match="collections.Counter"):
            TabularPredictor.load(str(dest), verbosity=0)


def test_outside_strict_mode_load_pkl_is_autogluons_own(zoo_predictors):
    from autogluon.common.loaders import load_pkl

    assert strict_mode.is_applied() and not strict_mode.is_active()
    assert load_pkl.load.__wrapped__.__module__ == "autogluon.common.loaders.load_pkl"
    obj = load_pkl.load(str(zoo_predictors["zoo-binary-stacked"] / "learner.pkl"))
    assert type(obj).__name__ == "DefaultLearner"


# --- the restricted unpickler against gadgets built from allowlisted names -------------------------------

def strict_loads(data: bytes):
    return strict_mode.load_pickle(data, path="<test>")


def g(module: str, name: str) -> bytes:
    """Protocol-4 STACK_GLOBAL of module.name."""
    return u(module) + u(name) + b"\x93"


def u(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


P4 = b"\x80\x04"
FEATURE_METADATA = g("autogluon.common.features.feature_metadata", "FeatureMetadata")


@pytest.mark.parametrize("payload, expected", [
    # BUILD with slot state on an allowlisted class object: setattr(FeatureMetadata, "keys", list)
    (P4 + FEATURE_METADATA + b"N}" + u("keys") + g("builtins", "list") + b"s\x86b.",
     "BUILD on the class or function object autogluon.common.features.feature_metadata.FeatureMetadata"),
    # calling a value-only entry: numpy.clip is allowlisted to be stored (inside a partial), not called
    (P4 + g("numpy", "clip") + b"K\x01K\x00K\x02\x87R.", "numpy.clip is allowlisted as a value only"),
    # SETITEM on something that is not a dict (an allowlisted sklearn estimator)
    (P4 + g("sklearn.preprocessing._data", "StandardScaler") + b")\x81" + u("a") + b"K\x01s.",
     "SETITEM on a sklearn.preprocessing._data.StandardScaler is not allowed"),
    # APPEND to something that is not a list
    (P4 + g("sklearn.preprocessing._data", "StandardScaler") + b")\x81K\x01a.", "APPEND on an object made by sklearn"),
    # BUILD on an object whose type is not allowlisted (a bare dict made by EMPTY_DICT is fine, a set is not)
    (P4 + b"\x8f}b.", "BUILD on a set"),
    # protocol-0 INST
    (b"(iautogluon.common.features.feature_metadata\nFeatureMetadata\n.", "INST"),
])
def test_gadgets_from_allowlisted_names_are_refused(payload, expected):
    with pytest.raises(ag_torchfix.SecureLoadError, match=expected):
        strict_loads(payload)


def test_partial_only_around_allowlisted_functions():
    ok = strict_mode.StrictUnpickler(io.BytesIO(pickle.dumps(functools.partial(np.clip, a_min=0, a_max=1),
                                                             protocol=4))).load()
    assert type(ok) is functools.partial and ok.func is np.clip and ok.keywords == {"a_min": 0, "a_max": 1}
    with pytest.raises(ag_torchfix.DisallowedGlobalsError, match="builtins.print"):
        strict_loads(pickle.dumps(functools.partial(print, "x"), protocol=4))
    # BUILD swapping an allowed partial's function for another allowlisted name
    swap = P4 + g("functools", "partial") + g("numpy", "clip") + b"\x85R(" + g("numpy", "int8") + b")}Ntb."
    with pytest.raises(ag_torchfix.SecureLoadError, match="functools.partial around"):
        strict_loads(swap)


def test_torch_storage_bytes_load_weights_only_and_must_be_a_storage(tmp_path):
    import torch

    genuine = strict_loads(pickle.dumps(torch.arange(4.0), protocol=4))
    assert torch.equal(genuine, torch.arange(4.0))
    marker = tmp_path / "PWNED"
    evil = io.BytesIO()
    torch.save(OsSystem(marker), evil, _use_new_zipfile_serialization=False)
    data = evil.getvalue()
    payload = P4 + g("torch.storage", "_load_from_bytes") + b"B" + len(data).to_bytes(4, "little") + data + b"\x85R."
    with pytest.raises(ag_torchfix.DisallowedGlobalsError, match="strict unpickler refused"):
        strict_loads(payload)
    assert not marker.exists()


def test_an_instance_cannot_bring_its_own_setstate():
    """Stock pickle looks __setstate__ up on the instance, so a first BUILD can plant one for the second."""
    planted = (P4 + FEATURE_METADATA + b")\x81}" + u("__setstate__") + g("numpy", "clip") + b"sb}b.")
    with pytest.raises(TypeError):  # stock pickle: numpy.clip({}) is called
        pickle.loads(planted)
    with pytest.raises(ag_torchfix.DisallowedGlobalsError, match="sets __setstate__ .a dunder name"):
        strict_loads(planted)  # strict: a state may not plant a dunder name at all


def test_scan_strict_reports_whether_a_directory_loads_in_strict_mode(zoo_predictors, tampered_zoo):
    import json

    def scan(*args):
        out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--json", *map(str, args)],
                             capture_output=True, text=True, timeout=600)
        return out.returncode, json.loads(out.stdout)

    code, doc = scan("--strict", zoo_predictors["zoo-binary-stacked"])
    assert code == 0 and doc["strict"] and doc["directories"][0]["loads_securely"]
    assert all(f["covered"] for f in doc["files"])
    code, doc = scan(zoo_predictors["zoo-binary-stacked"])  # without --strict, AutoGluon's pickles need trust
    assert code == 1 and doc["summary"]["needs-trust"] > 0
    tampered, _ = tampered_zoo("learner.pkl")
    code, doc = scan("--strict", tampered)
    assert code == 2 and doc["directories"][0]["dangerous"] == ["learner.pkl"]
