"""Indistinguishable from AutoGluon where nothing is attacked, and honest about the environment (issue 13)."""

from __future__ import annotations

import functools
import inspect
import os
import pickle
import shutil
import subprocess
import sys
import warnings

import pytest
from helpers import make_table, package_uninstalled

import ag_torchfix
from ag_torchfix.integration import autogluon_patch
from ag_torchfix.cli import doctor
from ag_torchfix.trust import rules as trust


def patched_objects():
    import fastai.learner
    from autogluon.common.loaders import load_pkl
    from autogluon.tabular.models.fastainn.tabular_nn_fastai import NNFastAiTabularModel

    found = {"load_pkl.load": load_pkl.load, "NNFastAiTabularModel.load": NNFastAiTabularModel.load,
             "fastai.learner.load_model": fastai.learner.load_model}
    try:
        from autogluon.tabular.models.xgboost.xgboost_model import XGBoostModel

        found["XGBoostModel.load"] = XGBoostModel.load
    except ImportError:
        pass
    return found


def test_every_patched_object_is_patched_and_pickles_by_reference():
    for name, obj in patched_objects().items():
        function = getattr(obj, "__func__", obj)
        assert getattr(function, "__ag_torchfix_patch__", False), name
        assert pickle.loads(pickle.dumps(obj)) == obj, name  # by reference, as multiprocessing sends it
        partial = functools.partial(obj, "x")
        assert pickle.loads(pickle.dumps(partial)).func == obj, name


def test_patched_objects_keep_the_originals_identity_signature_and_docs():
    for name, obj in patched_objects().items():
        function = getattr(obj, "__func__", obj)
        original = function.__wrapped__
        for attribute in ("__module__", "__qualname__", "__name__", "__doc__"):
            assert getattr(function, attribute) == getattr(original, attribute), (name, attribute)
        assert inspect.signature(function) == inspect.signature(original), name


def test_patched_functions_pickle_into_a_fresh_process():
    from autogluon.common.loaders import load_pkl

    payload = pickle.dumps(functools.partial(load_pkl.load, verbose=False))
    code = "import pickle, sys; f = pickle.loads(sys.stdin.buffer.read()); print(f.func.__qualname__)"
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == b"load", out.stderr


# --- AutoGluon's own behaviours, in every mode ---------------------------------------------------------------

MODES = ["upstream", "package", "strict"]


def in_mode(mode: str):
    import contextlib

    if mode == "upstream":
        return package_uninstalled()
    if mode == "strict":
        return ag_torchfix.strict()
    return contextlib.nullcontext()


def outcome(fn):
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - the type is the point
        return type(exc), None


@pytest.mark.parametrize("mode", MODES)
def test_loading_a_missing_path_raises_autogluons_own_error(mode, tmp_path):
    from autogluon.tabular import TabularPredictor

    with in_mode(mode), pytest.raises(FileNotFoundError):
        TabularPredictor.load(str(tmp_path / "does-not-exist"))


def test_documented_load_behaviours_match_upstream_in_every_mode(predictors, tmp_path):
    """clone, clone_for_deployment (+ refit_full on it), refit_full after load, persist/unpersist,
    require_version_match: the same outcomes with and without the package, strict mode included."""
    from autogluon.tabular import TabularPredictor

    source = predictors["bagged"]
    data = make_table(20, "binary", seed=3).drop(columns=["label"])
    results = {}
    for mode in MODES:
        work = shutil.copytree(source, tmp_path / mode / "p")
        steps = {}
        with in_mode(mode), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = TabularPredictor.load(str(work), verbosity=0, require_version_match=True)
            steps["predict"] = outcome(lambda: p.predict_proba(data).to_numpy().round(12).tolist())
            steps["persist"] = outcome(lambda: sorted(p.persist()))
            steps["unpersist"] = outcome(lambda: sorted(p.unpersist()))
            clone = p.clone(str(tmp_path / mode / "clone"))
            steps["clone"] = outcome(lambda: TabularPredictor.load(str(clone), verbosity=0).predict(data).tolist())
            deploy = p.clone_for_deployment(str(tmp_path / mode / "deploy"))
            loaded = TabularPredictor.load(str(deploy), verbosity=0)
            steps["deploy-predict"] = outcome(lambda: loaded.predict(data).tolist())
            steps["deploy-refit"] = outcome(lambda: loaded.refit_full())
        results[mode] = {k: v[0] if v[0] != "ok" else ("ok", v[1]) for k, v in steps.items()}
    assert results["strict"] == results["package"]
    if not trust.platform_forces_weights_only():
        assert results["package"] == results["upstream"]
        return
    # Forced weights-only: upstream cannot load the fastai model (the failure this package fixes), and the
    # steps after it differ for that reason alone (nothing persisted, so nothing to unpersist).
    assert results["upstream"]["predict"] is RuntimeError and results["package"]["predict"][0] == "ok"
    assert results["upstream"]["deploy-refit"] == results["package"]["deploy-refit"]


# --- warnings and doctor, from measured facts -------------------------------------------------------------------

def test_version_warning_names_torch_outside_autogluons_pin_and_points_at_the_caller():
    autogluon_patch._warned_versions.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        autogluon_patch._check_version({"torch": "2.15.0", "fastai": "2.8.7", "autogluon.tabular": "1.6.3"})
    (warning,) = [w for w in caught if issubclass(w.category, ag_torchfix.VersionWarning)]
    assert "torch 2.15.0" in str(warning.message)
    if doctor.autogluon_torch_range():
        assert "outside autogluon.tabular's own requirement" in str(warning.message)
    assert warning.filename == __file__


def _env(**versions):
    forced = versions.pop("forced", False)
    pin = versions.pop("pin", "<2.14,>=2.10")  # what autogluon.tabular 1.6.3 declares for torch
    base = {"torch": "2.13.0", "fastai": "2.8.7", "autogluon.tabular": "1.6.3", "setuptools": "80.9.0"}
    return doctor.Env({**base, **{k.replace("_", "."): v for k, v in versions.items()}}, forced, pin)


@pytest.mark.parametrize("env, expected", [
    (_env(), set()),
    (_env(forced=True), {"forced-load"}),
    (_env(fastai="2.7.19", forced=True), {"fastai-2.7.19-partial", "forced-load"}),
    (_env(fastai="2.7.19"), set()),
    (_env(fastai="2.7.18", autogluon_tabular="1.1.1"), {"fastai-unscoped"}),
    (_env(fastai="2.7.18"), set()),  # AutoGluon >= 1.2 asks for weights_only=False itself
    (_env(autogluon_tabular="1.2.0", setuptools="82.0.0"), {"pkg-resources"}),
    (_env(autogluon_tabular="1.3.1", setuptools="80.9.0"), set()),
    (_env(torch="2.15.0"), {"torch-untested"}),
    (_env(torch="2.14.1"), {"torch-untested"}),  # measured, but outside AutoGluon 1.6.3's own torch<2.14
    (_env(torch="2.14.1", pin=None), set()),
])
def test_known_failures_follow_the_measured_version_ranges(env, expected):
    affected = {f.id for f in doctor.KNOWN_FAILURES if f.applies(env)} - {"full-pickle"}
    assert affected == expected


def test_doctor_asks_a_subprocess_whether_neuralnetfastai_is_usable():
    assert doctor.fastai_model_usable() == ""
    broken = doctor.fastai_model_usable(python=os.devnull)
    assert broken  # an interpreter that cannot even start is reported, not mistaken for "usable"
