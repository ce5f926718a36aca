"""Version handling: one clear warning for unknown releases; refusal to pretend on an old torch."""

from __future__ import annotations

import warnings

import pytest

import ag_torchfix
from ag_torchfix.integration import autogluon_patch
from ag_torchfix.cli import doctor


def test_unknown_versions_warn_once_and_do_not_crash():
    autogluon_patch._warned_versions.clear()
    with pytest.warns(ag_torchfix.VersionWarning, match="autogluon.tabular 1.9.0; fastai 2.9.1") as caught:
        autogluon_patch._check_version({"autogluon.tabular": "1.9.0", "fastai": "2.9.1"})
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        autogluon_patch._check_version({"autogluon.tabular": "1.9.0", "fastai": "2.9.1"})  # once only
        autogluon_patch._check_version({"autogluon.tabular": "1.6.3", "fastai": "2.8.7"})  # known: silent
        autogluon_patch._check_version({"autogluon.tabular": "1.1.1", "fastai": "2.7.18"})
        if doctor.outside_autogluon_torch_range(doctor.installed_version("torch")) is None:
            autogluon_patch._check_version()  # a measured environment whose torch AutoGluon accepts: silent


def test_old_torch_refuses_to_pretend(binary_predictor, internals_of, monkeypatch, no_force):
    """torch < 2.6 lacks what the secure loader relies on: a clear error, full pickle only when trusted."""
    import torch

    monkeypatch.setattr(torch, "__version__", "2.5.1")
    file = internals_of(binary_predictor)
    with pytest.raises(ag_torchfix.UnsupportedTorchError, match="older than 2.6, the oldest torch ag_torchfix supports"):
        ag_torchfix.load_learner(file)
    with ag_torchfix.trusted(), pytest.warns(ag_torchfix.TrustedFallbackWarning, match="older than 2.6"):
        assert type(ag_torchfix.load_learner(file)).__name__ == "TabularLearner"
