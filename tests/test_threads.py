"""Concurrent secure loads beside threads that use torch's own allowlist API."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import make_table


class UserRegistered:
    """A class the user registered process-wide before anything else ran."""

    def __init__(self, x=1):
        self.x = x


class UserScoped:
    """A class the user allowlists with torch.serialization.safe_globals around their own loads."""

    def __init__(self, x=2):
        self.x = x


def test_parallel_loads_never_fail_and_never_leak_or_lose_registrations(predictors, internals_of, tmp_path):
    import torch
    from autogluon.tabular import TabularPredictor

    registered_file, scoped_file = tmp_path / "registered.pt", tmp_path / "scoped.pt"
    torch.save({"obj": UserRegistered(), "t": torch.ones(2)}, registered_file)
    torch.save({"obj": UserScoped(), "t": torch.ones(2)}, scoped_file)
    torch.serialization.add_safe_globals([UserRegistered])
    internals = internals_of(predictors["binary"])
    data = {name: make_table(30, TabularPredictor.load(str(p), verbosity=0).problem_type, seed=3).drop(
        columns=["label"]) for name, p in predictors.items()}
    stop = threading.Event()
    rounds = 4

    def load_predictors(name):
        out = []
        for _ in range(rounds):
            predictor = TabularPredictor.load(str(predictors[name]), verbosity=0)
            out.append(predictor.predict(data[name]).to_numpy())
        return out

    def user_scoped_loads():
        n = 0
        while not stop.is_set() or n < 5:
            with torch.serialization.safe_globals([UserScoped]):
                assert type(torch.load(scoped_file, weights_only=True)["obj"]) is UserScoped
            n += 1
        return n

    def user_registered_loads():
        n = 0
        while not stop.is_set() or n < 5:
            assert type(torch.load(registered_file, weights_only=True)["obj"]) is UserRegistered
            n += 1
        return n

    def plain_weights_only_stays_strict():
        """The package's allowlist never leaks into other threads' weights-only loads."""
        n = 0
        while not stop.is_set() or n < 5:
            with pytest.raises(Exception, match="Unsupported global"):
                torch.load(internals, weights_only=True)
            n += 1
        return n

    with ThreadPoolExecutor(max_workers=8) as pool:
        background = [pool.submit(f) for f in (user_scoped_loads, user_registered_loads,
                                               plain_weights_only_stays_strict)]
        loaders = {name: pool.submit(load_predictors, name) for name in ("binary", "multiclass", "regression",
                                                                          "bagged")}
        results = {name: f.result(timeout=600) for name, f in loaders.items()}
        stop.set()
        counts = [f.result(timeout=600) for f in background]

    for name, preds in results.items():
        assert all(np.array_equal(preds[0], p) for p in preds[1:]), name
    assert all(n >= 5 for n in counts)
    assert UserRegistered in torch.serialization.get_safe_globals()
    assert UserScoped not in torch.serialization.get_safe_globals()
    torch.serialization._weights_only_unpickler._remove_safe_globals([UserRegistered])
