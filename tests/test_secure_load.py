"""The secure loader on real predictors: same predictions and same learner as the original loader."""

from __future__ import annotations

import collections
import io
import pathlib

import numpy as np
import pytest
from helpers import (
    assert_same_graph,
    data_pkl,
    find_instances,
    full_pickle_learner,
    package_uninstalled,
    predict_all,
    rewrite_archive,
)

import ag_torchfix
from ag_torchfix.load.secure_load import load_learner


@pytest.mark.parametrize("forced", [False, True], ids=["default", "force-weights-only"])
def test_predictions_match_original_loader_bit_for_bit(predictors, monkeypatch, forced):
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    with package_uninstalled():
        expected = {name: predict_all(path) for name, path in predictors.items()}
    if forced:
        monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    for name, path in predictors.items():
        got = predict_all(path)
        assert got.keys() == expected[name].keys(), name
        for model, (pred, proba) in expected[name].items():
            assert np.array_equal(got[model][0], pred), f"{name}/{model}: predictions differ"
            if proba is not None:
                assert np.array_equal(got[model][1], proba), f"{name}/{model}: probabilities differ"


def test_original_loader_fails_when_torch_forces_weights_only(binary_predictor, force):
    """The failure the package fixes: AutoGluon's loader under TORCH_FORCE_WEIGHTS_ONLY_LOAD=1."""
    with package_uninstalled(), pytest.raises(RuntimeError, match="explicit pickle_module"):
        predict_all(binary_predictor)


def test_loaded_learner_equals_full_pickle_learner(predictors):
    from fastai.data.transforms import CategoryMap

    files = sorted(p for path in predictors.values() for p in path.rglob("model-internals.pkl"))
    assert len(files) >= 7  # five predictors, bagged children and the refit model
    for file in files:
        secure = load_learner(file)
        original = full_pickle_learner(file)
        original.dls.cpu()
        assert_same_graph(secure, original)
        # every fixture has categorical columns: Categorify's maps must stay defaultdict(int)
        maps = find_instances(secure, CategoryMap)
        assert any(type(m.o2i) is collections.defaultdict and m.o2i.default_factory is int for m in maps), file


def test_open_file_and_bytesio_both_load_and_messages_name_the_real_file(binary_predictor, internals_of, tmp_path):
    file = internals_of(binary_predictor)
    with open(file, "rb") as fh:
        assert type(load_learner(fh, path=str(file))).__name__ == "TabularLearner"
    assert type(load_learner(io.BytesIO(file.read_bytes()), path="s3://bucket/x/model-internals.pkl")).__name__ \
        == "TabularLearner"
    bad = tmp_path / "model-internals.pkl"
    rewrite_archive(file, bad, data_pkl(file).replace(b"cpathlib\nPosixPath\n", b"cdatetime\ndatetime\n"))
    with pytest.raises(ag_torchfix.DisallowedGlobalsError) as err:
        load_learner(io.BytesIO(bad.read_bytes()), path="s3://bucket/x/model-internals.pkl", model="NeuralNetFastAI")
    assert "s3://bucket/x/model-internals.pkl" in str(err.value) and "'NeuralNetFastAI'" in str(err.value)
    assert err.value.globals == ["datetime.datetime"]


def test_windows_paths_load_as_posix_paths(binary_predictor, internals_of, tmp_path):
    file = internals_of(binary_predictor)
    windows = tmp_path / "model-internals.pkl"
    payload = data_pkl(file)
    assert b"cpathlib\nPosixPath\n" in payload
    rewrite_archive(file, windows, payload.replace(b"cpathlib\nPosixPath\n", b"cpathlib\nWindowsPath\n"))
    learner = load_learner(windows)
    assert type(learner.path) is pathlib.PosixPath


def test_users_own_loads_are_unaffected(binary_predictor, internals_of, no_force):
    """fastai's load_learner stays full pickle; plain weights-only torch.load stays strict."""
    import torch
    from fastai.learner import load_learner as fastai_load_learner

    file = internals_of(binary_predictor)
    assert type(fastai_load_learner(file)).__name__ == "TabularLearner"
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(file, weights_only=True)


def test_fastai_checkpoint_globals_are_scoped_to_load_model(binary_predictor, internals_of, tmp_path):
    """fastai's Learner.save/Learner.load of weights + optimizer state works, and torch's process-wide safe set
    is never widened: numpy's dtype classes and scalar, accepted by every weights-only load of the process,
    would let any checkpoint forge object pointers."""
    import fastai.learner
    import torch
    from fastcore.foundation import L

    names = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
             for g in torch.serialization.get_safe_globals()}
    assert not any(n.startswith(("fastcore.", "numpy.", "fastai.")) for n in names)
    learner = load_learner(internals_of(binary_predictor))
    learner.path = tmp_path
    learner.create_opt()
    saved = learner.save("ckpt", with_opt=True)
    with pytest.raises(Exception, match="fastcore.foundation.L|numpy"):
        torch.load(saved, weights_only=True)  # outside fastai's load_model: torch's defaults only
    learner.load("ckpt")  # fastai's load_model: its globals, for that call
    assert getattr(fastai.learner.load_model, "__ag_torchfix_patch__", False)
    state = fastai.learner.load_model.__wrapped__  # the original, still reachable and unchanged
    assert state.__module__ == "fastai.learner" and L is not None


def test_an_export_from_the_other_fastai_generation_gets_a_clear_error(binary_predictor, internals_of, tmp_path,
                                                                      no_force):
    """fastai 2.7 pickles fastcore.transform.Pipeline, 2.8 fasttransform's: both are allowlisted, one imports."""
    import importlib.util

    file = internals_of(binary_predictor)
    payload = data_pkl(file)
    here, other = ((b"cfasttransform.transform\nPipeline\n", b"cfastcore.transform\nPipeline\n")
                   if b"cfasttransform.transform\nPipeline\n" in payload
                   else (b"cfastcore.transform\nPipeline\n", b"cfasttransform.transform\nPipeline\n"))
    if other.startswith(b"cfasttransform") and importlib.util.find_spec("fasttransform") is not None:
        pytest.skip("both fastai generations' Pipeline import here")
    bad = tmp_path / "model-internals.pkl"
    rewrite_archive(file, bad, payload.replace(here, other))
    with pytest.raises(ag_torchfix.SecureLoadError, match="allowlisted names this environment cannot import"):
        load_learner(bad)
