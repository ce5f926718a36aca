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

Zoo goldens (``tests/goldens/<writer>-zoo/``, writer.json ``"kind": "zoo"``; issue 18) hold a predictor over every
CPU model family of AutoGluon 1.6 (LightGBM, CatBoost, XGBoost, RandomForest, ExtraTrees, KNeighbors, LinearModel,
NeuralNetTorch, NeuralNetFastAI and the weighted ensemble) written by the Python, numpy and pandas writers; their
``expected.json`` holds every model's predictions (``"models"``), and every model is compared, upstream and with the
package, in default and strict mode.
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
from conftest import CACHE, STACK_PACKAGES

import ag_torchfix
from ag_torchfix.cli import scanner
from ag_torchfix.core.errors import DisallowedGlobalsError

GOLDENS = pathlib.Path(__file__).resolve().parent / "goldens"
WRITERS = sorted(p.name for p in GOLDENS.iterdir() if (p / "expected.json").is_file()) if GOLDENS.is_dir() else []
ATOL = 1e-5  # CPU vs CUDA float32 kernels (measured 1.2e-7) and torch releases; labels must match exactly
# the zoo goldens every stack must hold (tools/goldens/build.sh WRITER-zoo), and the models each one holds
ZOO_WRITERS = ("py3.11.2-debian-zoo", "py3.13.0-zoo", "py3.10.13-zoo", "py3.12.1-zoo", "py3.11.7-zoo", "numpy1.26-zoo",
               "pandas2.0-zoo")
ZOO_MODELS = {"LightGBM", "CatBoost", "XGBoost", "RandomForest", "ExtraTrees", "KNeighbors", "LinearModel",
              "NeuralNetTorch", "NeuralNetFastAI", "WeightedEnsemble_L2"}
# the libraries a zoo golden's models need besides AutoGluon and fastai (a stack without them cannot read it at all)
ZOO_LIBRARIES = ("lightgbm", "catboost", "xgboost")

UPSTREAM = r"""
import json, os, sys, traceback
import numpy as np, pandas as pd
from autogluon.tabular import TabularPredictor
def error(exc):
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
def table(proba):
    return {"columns": [str(c) for c in proba.columns], "values": proba.to_numpy().tolist()}
out = {}
for golden in sys.argv[1:]:
    with open(os.path.join(golden, "writer.json")) as f:
        zoo = json.load(f).get("kind") == "zoo"
    try:
        predictor = TabularPredictor.load(os.path.join(golden, "predictor"), verbosity=0,
                                          require_py_version_match=False, require_version_match=False)
        data = pd.read_csv(os.path.join(golden, "test.csv"))
    except Exception as exc:
        out[golden] = {"error": error(exc)}
        continue
    try:
        out[golden] = table(predictor.predict_proba(data))
    except Exception as exc:
        out[golden] = {"error": error(exc)}
    if zoo:  # every model, each on its own (one model's failure does not hide the others)
        out[golden]["loaded"] = True
        out[golden]["models"] = models = {}
        for name in predictor.model_names():
            try:
                models[name] = table(predictor.predict_proba(data, model=name))
            except Exception as exc:
                models[name] = {"error": error(exc)}
print("UPSTREAM" + json.dumps(out))
"""


def _golden_digest() -> str:
    # the goldens, what upstream is asked about them, and the stack that answers (not the package's sources:
    # upstream runs without it, so edits to ag_torchfix keep this cache warm)
    h = hashlib.sha256(UPSTREAM.encode() + sys.version.encode())
    for name in STACK_PACKAGES:
        try:
            h.update(f"{name}={md.version(name)}".encode())
        except md.PackageNotFoundError:
            h.update(f"{name}=-".encode())
    for path in sorted(GOLDENS.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(GOLDENS)).encode() + path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def upstream() -> dict[str, dict]:
    """What upstream AutoGluon (the package off, unforced) predicts for every golden on this stack, measured once
    per stack and golden set in a subprocess and cached in the test cache (keyed by the goldens and the stack)."""
    cache = CACHE.parent / f"goldens-upstream-{_golden_digest()}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "AG_TORCHFIX_TRUST")}
    env["AG_TORCHFIX_AUTOLOAD"] = "0"
    proc = subprocess.run([sys.executable, "-c", UPSTREAM, *(str(GOLDENS / w) for w in WRITERS)],
                          capture_output=True, text=True, env=env, timeout=1200)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("UPSTREAM")), None)
    assert line is not None, proc.stderr[-3000:]
    result = {pathlib.Path(k).name: v for k, v in json.loads(line[len("UPSTREAM"):]).items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


def expected(writer: str) -> dict:
    return json.loads((GOLDENS / writer / "expected.json").read_text())


def is_zoo(writer: str) -> bool:
    return json.loads((GOLDENS / writer / "writer.json").read_text()).get("kind") == "zoo"


def version(packages: dict | None, name: str) -> str | None:
    """A package's version in writer.json's packages (None: this stack's); xgboost is also xgboost-cpu."""
    names = (name, f"{name}-cpu") if name == "xgboost" else (name,)
    for candidate in names:
        if packages is not None:
            if packages.get(candidate):
                return packages[candidate]
            continue
        try:
            return md.version(candidate)
        except md.PackageNotFoundError:
            pass
    return None


# What a golden's files were pickled with and that no other version promises to read: AutoGluon, fastai and
# fastcore for every golden; for a zoo golden's model also the library whose objects its model.pkl holds (sklearn
# estimators: RandomForest, ExtraTrees, KNeighbors, LinearModel, NeuralNetTorch's preprocessing; every model.pkl
# names sklearn's metric functions, which every release reads), and for the predictor's default model and the
# ensemble all of them (the learner's text n-gram generator holds a sklearn CountVectorizer).
GENERATION = ("autogluon.tabular", "fastai", "fastcore")
MODEL_LIBRARY = {"LightGBM": ("lightgbm",), "CatBoost": ("catboost",), "XGBoost": ("xgboost",),
                 "RandomForest": ("scikit-learn",), "ExtraTrees": ("scikit-learn",), "KNeighbors": ("scikit-learn",),
                 "LinearModel": ("scikit-learn",), "NeuralNetTorch": ("scikit-learn",), "NeuralNetFastAI": ()}


def same_generation(writer: str, model: str | None = None) -> bool:
    """Written by this stack's AutoGluon, fastai and fastcore (another Python, numpy, pandas or torch): the package
    must load it even where upstream cannot (upstream fastai cannot unpickle CPython 3.13's pathlib._local on an
    older Python, for one). For a zoo golden's model (None: the predictor itself and its default model) also this
    stack's release of the libraries its files pickle (MODEL_LIBRARY)."""
    written = json.loads((GOLDENS / writer / "writer.json").read_text())["packages"]
    names = GENERATION
    if is_zoo(writer):
        names += MODEL_LIBRARY.get(model, ("scikit-learn", *ZOO_LIBRARIES))
    return all(version(written, name) == version(None, name) is not None for name in names)


def assert_same(got: dict, want: dict, what: str) -> None:
    assert got["columns"] == [str(c) for c in want["columns"]], what
    np.testing.assert_allclose(np.array(got["values"]), np.array(want["values"]), atol=ATOL, rtol=0, err_msg=what)


def readable(upstream, writer: str) -> tuple[dict, dict]:
    """What this stack must predict as the writer did: {model (None: the default model): the writer's predictions}
    for every model upstream reads on this stack (and predicts as the writer did), or that this stack's AutoGluon,
    fastai (and for a zoo golden scikit-learn and the model's library) wrote; and {model: upstream's error} for
    the models left out. A golden none of whose models is required is skipped."""
    got, want = upstream[writer], expected(writer)
    if "error" in got and not got.get("loaded"):  # the predictor itself does not load upstream
        if not same_generation(writer):
            pytest.skip(f"upstream AutoGluon cannot read {writer} on this stack either: {got['error']}")
        return {None: want, **want.get("models", {})}, {}
    cases, unread = {}, {}
    pairs = [(None, got, want)]
    if is_zoo(writer):
        assert set(got["models"]) == set(want["models"]), (sorted(got["models"]), sorted(want["models"]))
        pairs += [(name, got["models"][name], want["models"][name]) for name in sorted(want["models"])]
    for model, up, case in pairs:
        if "error" in up:
            if same_generation(writer, model):
                cases[model] = case
            else:
                unread[model or "default"] = up["error"]
            continue
        assert_same(up, case["predict_proba"], f"upstream, {writer}: model {model or 'default'}")
        cases[model] = case
    if not cases:
        pytest.skip(f"upstream AutoGluon cannot read {writer} on this stack either: {unread}")
    return cases, unread


def assert_as_written(writer: str, cases: dict, unread: dict) -> None:
    """Load the golden and predict every required model (None: the default model) as the writer did; then skip,
    naming the models upstream cannot read on this stack either, if there are any."""
    from autogluon.tabular import TabularPredictor

    predictor = TabularPredictor.load(str(GOLDENS / writer / "predictor"), verbosity=0,
                                      require_py_version_match=False, require_version_match=False)
    data = pd.read_csv(GOLDENS / writer / "test.csv")
    if is_zoo(writer):
        want = expected(writer)
        assert set(predictor.model_names()) == set(want["models"]) and predictor.model_best == want["model_best"]
        # each model loaded once (AutoGluon's own predict_proba_multi: the ensemble reuses its base models'
        # predictions); labels as predict makes them from the probabilities
        models = [m for m in cases if m is not None]
        probas = predictor.predict_proba_multi(data, models=models)
        if None in cases:
            probas[None] = probas[predictor.model_best] if predictor.model_best in probas else \
                predictor.predict_proba(data)
        labels = {model: predictor.predict_from_proba(proba) for model, proba in probas.items()}
    else:
        labels, probas = {None: predictor.predict(data)}, {None: predictor.predict_proba(data)}
    assert set(probas) == set(cases)
    for model, case in cases.items():
        what = f"{writer}: model {model or 'default'}"
        proba = probas[model]
        assert [str(c) for c in proba.columns] == [str(c) for c in case["predict_proba"]["columns"]], what
        np.testing.assert_allclose(proba.to_numpy(), np.array(case["predict_proba"]["values"]), atol=ATOL, rtol=0,
                                   err_msg=what)
        assert [str(v) for v in labels[model]] == [str(v) for v in case["predict"]], what
    if unread:
        asserted = sorted(str(m) for m in cases if m is not None) + (["the default model"] if None in cases else [])
        pytest.skip(f"{writer}: as written by {', '.join(asserted)}; upstream AutoGluon cannot read "
                    f"{', '.join(sorted(unread))} on this stack either: {unread}")


def test_goldens_are_present():
    """The writers matrix is data the suite always loads: a missing directory is a failure, not a skip."""
    ids = set(WRITERS)
    for writer in ("py3.11.2-debian", "py3.13.0", "py3.10.13", "py3.12.1", "py3.11.7", "py3.12.3-torch2.11-cu130"):
        assert writer in ids, f"golden {writer} is missing from tests/goldens"
    for writer in WRITERS:
        meta = json.loads((GOLDENS / writer / "writer.json").read_text())
        assert meta["writer_id"] == writer and meta["python"] and meta["packages"]


def test_zoo_goldens_are_present():
    """Issue 18: every model family of AutoGluon 1.6, written by each Python, numpy and pandas writer, with every
    model's own predictions, without ag_torchfix active."""
    ids = set(WRITERS)
    for writer in ZOO_WRITERS:
        assert writer in ids, f"zoo golden {writer} is missing from tests/goldens (tools/goldens/build.sh {writer})"
    for writer in WRITERS:
        meta = json.loads((GOLDENS / writer / "writer.json").read_text())
        if not (writer.endswith("-zoo") or meta.get("kind") == "zoo"):
            continue
        assert writer.endswith("-zoo") and meta["kind"] == "zoo" and meta["env"], writer
        want = expected(writer)
        assert set(want["models"]) == ZOO_MODELS == set(meta["models"]) and want["model_best"] in ZOO_MODELS, writer
        assert all(want["models"][m]["predict"] and want["models"][m]["predict_proba"]["values"] for m in ZOO_MODELS)
        assert not meta["trained_with_ag_torchfix"], writer
        assert all(version(meta["packages"], name) for name in ZOO_LIBRARIES), (writer, meta["packages"])


@pytest.mark.parametrize("writer", WRITERS)
def test_golden_loads_as_written(upstream, writer):
    """Default mode (forced in the matrix's forced row): the writer's own predictions."""
    cases, unread = readable(upstream, writer)
    assert_as_written(writer, cases, unread)


def strict_refusal(writer: str) -> tuple[str, str] | None:
    """(the file, the exact refusal) of a genuine golden that strict mode refuses on this stack, or None: a finding
    not fixed yet, each test that meets one an expected failure that must fail with exactly that refusal.  None are
    known.  (The first one, fixed: sklearn 1.9 removed ColumnTransformer's force_int_remainder_cols; strict mode's
    parameter check called ``_validate_params``, whose get_params reads every parameter of the *reader's* release,
    and refused sklearn >= 1.9 zoo goldens on sklearn 1.5-1.8.  It now validates the parameters the file holds.)"""
    return None


class KnownStrictRefusal(Exception):
    """The scanner's strict verdict is the loader's known refusal (strict_refusal), file for file."""


def strict_params(raises) -> list:
    """Every golden; one strict mode refuses on this stack (strict_refusal) is a strict xfail naming the refusal."""
    return [pytest.param(w, marks=pytest.mark.xfail(strict=True, raises=raises, reason=strict_refusal(w)[1]))
            if strict_refusal(w) else w for w in WRITERS]


@pytest.mark.parametrize("writer", strict_params(DisallowedGlobalsError))
def test_golden_loads_as_written_in_strict_mode(upstream, writer):
    cases, unread = readable(upstream, writer)
    refusal = strict_refusal(writer)
    with ag_torchfix.strict():
        try:
            assert_as_written(writer, cases, unread)
        except DisallowedGlobalsError as exc:
            # the known refusal is the expected failure; any other refusal is a failure of its own
            assert refusal is not None and str(exc).startswith(refusal[1]), str(exc)
            raise


@pytest.mark.parametrize("writer", strict_params(KnownStrictRefusal))
def test_scanner_agrees_on_golden(upstream, writer):
    """``ag-torchfix scan``: the fastai internals load securely; ``scan --strict``: every file does."""
    _, unread = readable(upstream, writer)
    root = str(GOLDENS / writer / "predictor")
    plain = scanner.scan_paths([root])
    internals = [f for f in plain.files if f.path.endswith("model-internals.pkl")]
    assert internals and all(f.verdict == scanner.ALLOWED and f.covered for f in internals), internals
    # AutoGluon's other pickles are full pickle upstream: plain mode says they need trust (--strict covers them)
    assert plain.verdict == scanner.NEEDS_TRUST and not plain.directories[0].dangerous, plain.directories
    strict = scanner.scan_paths([root], strict=True)
    # a zoo model upstream cannot read on this stack either (unread) is not asked to scan as loadable
    skipped = tuple(os.path.join(root, "models", model) + os.sep for model in unread if model != "default")
    refused = [(f.path, f.verdict, f.note) for f in strict.files
               if f.verdict != scanner.ALLOWED and not f.path.startswith(skipped)]
    refusal = strict_refusal(writer)
    if refusal and refused:  # the loader's known refusal (strict_refusal): the scanner must agree, file for file
        assert [f[0] for f in refused] == [refusal[0]], refused
        raise KnownStrictRefusal(refusal[1])
    assert not refused and (strict.verdict == scanner.ALLOWED or skipped), refused
