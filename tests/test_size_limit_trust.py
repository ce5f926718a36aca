"""A fastai internals file over the in-memory limit: refused, unless trusted (then full pickle, as the README says).

The limit is lowered for the test (a real file over 1 GiB would take the test a minute to write); the logic under
test is the loader's, with real torch and fastai.
"""

from __future__ import annotations

import warnings

import pytest

import ag_torchfix
from ag_torchfix.load import secure_load


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(secure_load, "MAX_IN_MEMORY", 4096)


def test_over_the_limit_is_refused_untrusted(small_limit, binary_predictor, internals_of):
    with pytest.raises(ag_torchfix.SecureLoadError, match="larger than 4096 bytes"):
        ag_torchfix.load_learner(internals_of(binary_predictor))


def test_over_the_limit_loads_when_trusted(small_limit, no_force, binary_predictor, internals_of):
    from fastai.learner import Learner

    internals = internals_of(binary_predictor)
    with ag_torchfix.trusted(str(binary_predictor)), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner = ag_torchfix.load_learner(internals)
    assert isinstance(learner, Learner)
    assert any(issubclass(w.category, ag_torchfix.TrustedFallbackWarning) for w in caught)


def test_over_the_limit_is_refused_when_forced_even_if_trusted(small_limit, force, binary_predictor, internals_of):
    with ag_torchfix.trusted(str(binary_predictor)), pytest.raises(ag_torchfix.SecureLoadError):
        ag_torchfix.load_learner(internals_of(binary_predictor))
