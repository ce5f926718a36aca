"""Golden predictors from other writers (issue 16): every genuine file loads, whichever stack wrote it.

``tests/goldens/<writer>/`` holds a NeuralNetFastAI predictor written WITHOUT ag_torchfix by one writer stack (a
Python patch release, numpy, pandas, torch, fastai or AutoGluon version: ``writer.json``), the frame it was asked
to predict (``test.csv``) and what it predicted there (``expected.json``).  ``make goldens`` regenerates them
(tools/goldens/, outside CI: other Pythons need several GB of CUDA torch).

On each stack of the test matrix, a golden is judged only where upstream AutoGluon itself (full pickle, the package
off) reads it and predicts what the writer predicted: a stack whose fastai cannot import another fastai's classes
is not asked to do better than upstream.  Where upstream reads it, the package must give the writer's predictions
in default mode (forced too: the matrix's forced row sets TORCH_FORCE_WEIGHTS_ONLY_LOAD) and strict mode, and the
scanner must say "loads securely" in plain and strict mode.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import CACHE

import ag_torchfix
from ag_torchfix import scanner

GOLDENS = pathlib.Path(__file__).resolve().parent / "goldens"
WRITERS = sorted(p.name for p in GOLDENS.iterdir() if (p / "expected.json").is_file()) if GOLDENS.is_dir() else []
ATOL = 1e-5  # CPU vs CUDA float32 kernels (measured 1.2e-7) and torch releases; labels must match exactly

UPSTREAM = r"""
import json, os, sys, traceback
import numpy as np, pandas as pd
from autogluon.tabular import TabularPredictor
out = {}
for golden in sys.argv[1:]:
    try:
        predictor = TabularPredictor.load(os.path.join(golden, "predictor"), verbosity=0,
                                          require_py_version_match=False, require_version_match=False)
        data = pd.read_csv(os.path.join(golden, "test.csv"))
        proba = predictor.predict_proba(data)
        out[golden] = {"columns": [str(c) for c in proba.columns], "values": proba.to_numpy().tolist()}
    except Exception as exc:
        out[golden] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"}
print("UPSTREAM" + json.dumps(out))
"""


def _golden_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(GOLDENS.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(GOLDENS)).encode() + path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def upstream() -> dict[str, dict]:
    """What upstream AutoGluon (the package off, unforced) predicts for every golden on this stack, measured once
    per stack and golden set in a subprocess and cached beside the trained test predictors."""
    cache = CACHE / f"goldens-upstream-{_golden_digest()}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "AG_TORCHFIX_TRUST")}
    env["AG_TORCHFIX_AUTOLOAD"] = "0"
    proc = subprocess.run([sys.executable, "-c", UPSTREAM, *(str(GOLDENS / w) for w in WRITERS)],
                          capture_output=True, text=True, env=env, timeout=1200)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("UPSTREAM")), None)
    assert line is not None, proc.stderr[-3000:]
    result = {pathlib.Path(k).name: v for k, v in json.loads(line[len("UPSTREAM"):]).items()}
    CACHE.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


def expected(writer: str) -> dict:
    return json.loads((GOLDENS / writer / "expected.json").read_text())


def same_generation(writer: str) -> bool:
    """Written by this stack's AutoGluon, fastai and fastcore (another Python, numpy, pandas or torch): the package
    must load it even where upstream cannot (upstream fastai cannot unpickle CPython 3.13's pathlib._local on an
    older Python, for one)."""
    written = json.loads((GOLDENS / writer / "writer.json").read_text())["packages"]
    return all(written.get(name) == md.version(name) for name in ("autogluon.tabular", "fastai", "fastcore"))


def readable(upstream, writer: str) -> dict:
    """The writer's expectations, if upstream reads this golden on this stack and agrees with the writer, or if
    this stack's AutoGluon and fastai wrote it."""
    got = upstream[writer]
    if "error" in got:
        if same_generation(writer):
            return expected(writer)
        pytest.skip(f"upstream AutoGluon cannot read {writer} on this stack either: {got['error']}")
    want = expected(writer)["predict_proba"]
    assert got["columns"] == [str(c) for c in want["columns"]]
    np.testing.assert_allclose(np.array(got["values"]), np.array(want["values"]), atol=ATOL, rtol=0)
    return expected(writer)


def predict(writer: str):
    from autogluon.tabular import TabularPredictor

    predictor = TabularPredictor.load(str(GOLDENS / writer / "predictor"), verbosity=0,
                                      require_py_version_match=False, require_version_match=False)
    data = pd.read_csv(GOLDENS / writer / "test.csv")
    return predictor.predict(data), predictor.predict_proba(data)


def assert_as_written(writer: str, want: dict) -> None:
    labels, proba = predict(writer)
    assert [str(c) for c in proba.columns] == [str(c) for c in want["predict_proba"]["columns"]]
    np.testing.assert_allclose(proba.to_numpy(), np.array(want["predict_proba"]["values"]), atol=ATOL, rtol=0)
    assert [str(v) for v in labels] == [str(v) for v in want["predict"]]


def test_goldens_are_present():
    """The writers matrix is data the suite always loads: a missing directory is a failure, not a skip."""
    ids = set(WRITERS)
    for writer in ("py3.11.2-debian", "py3.13.0", "py3.10.13", "py3.12.1", "py3.11.7", "py3.12.3-torch2.11-cu130"):
        assert writer in ids, f"golden {writer} is missing from tests/goldens"
    for writer in WRITERS:
        meta = json.loads((GOLDENS / writer / "writer.json").read_text())
        assert meta["writer_id"] == writer and meta["python"] and meta["packages"]


@pytest.mark.parametrize("writer", WRITERS)
def test_golden_loads_as_written(upstream, writer):
    """Default mode (forced in the matrix's forced row): the writer's own predictions."""
    want = readable(upstream, writer)
    assert_as_written(writer, want)


@pytest.mark.parametrize("writer", WRITERS)
def test_golden_loads_as_written_in_strict_mode(upstream, writer):
    want = readable(upstream, writer)
    with ag_torchfix.strict():
        assert_as_written(writer, want)


@pytest.mark.parametrize("writer", WRITERS)
def test_scanner_agrees_on_golden(upstream, writer):
    """``ag-torchfix scan``: the fastai internals load securely; ``scan --strict``: every file does."""
    readable(upstream, writer)
    root = str(GOLDENS / writer / "predictor")
    plain = scanner.scan_paths([root])
    internals = [f for f in plain.files if f.path.endswith("model-internals.pkl")]
    assert internals and all(f.verdict == scanner.ALLOWED and f.covered for f in internals), internals
    # AutoGluon's other pickles are full pickle upstream: plain mode says they need trust (--strict covers them)
    assert plain.verdict == scanner.NEEDS_TRUST and not plain.directories[0].dangerous, plain.directories
    strict = scanner.scan_paths([root], strict=True)
    assert strict.verdict == scanner.ALLOWED, [(f.path, f.verdict, f.note) for f in strict.files
                                               if f.verdict != "allowed"]
