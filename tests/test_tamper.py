"""Tampered predictors: every payload is live under full pickle, and refused by the secure loader.

Each payload leaves a marker file if it runs.  The proof that a payload is live runs in a separate
process with the original loader; the refusal runs here, where the marker must never appear and
fastai's classes must be unchanged afterwards.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import (
    Exec,
    NestedLoadLearner,
    NestedPandas,
    NestedPickle,
    OsSystem,
    Subprocess,
    build_on_class_payload,
    data_pkl,
    full_pickle_learner,
    make_table,
    plant,
    rewrite_archive,
    save_learner,
    stream_payload,
)

import ag_torchfix

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _attach(attribute_value):
    """Tamper by hiding a payload object inside a genuine learner (on a callback's attribute)."""

    def tamper(file: pathlib.Path, marker: pathlib.Path, workdir: pathlib.Path) -> None:
        plant(file, extra=attribute_value(marker, workdir))

    return tamper


def _whole_stream(make_bytes):
    def tamper(file, marker, workdir):
        rewrite_archive(file, file, make_bytes(marker))

    return tamper


def _legacy_format(file, marker, workdir):
    import torch

    torch.save(OsSystem(marker), file, _use_new_zipfile_serialization=False)


def _export_on_predict(file, marker, workdir):
    """A callback event bound (through getattr) to Learner.export: predicting would write a file."""
    learner = full_pickle_learner(file)
    learner.path = marker.parent
    learner.recorder.before_batch = learner.export  # pickled as getattr(learner, 'export')
    save_learner(learner, file)


def _evil_pickle(marker, workdir):
    import pickle

    path = workdir / "evil.pkl"
    path.write_bytes(pickle.dumps(OsSystem(marker), protocol=2))
    return path


def _evil_legacy_torch(marker, workdir):
    import torch

    path = workdir / "evil.pt"
    torch.save(OsSystem(marker), path, _use_new_zipfile_serialization=False)
    return path


PAYLOADS = {
    "os.system": _attach(lambda m, w: OsSystem(m)),
    "exec": _attach(lambda m, w: Exec(m)),
    "subprocess": _attach(lambda m, w: Subprocess(m)),
    "nested-pickle.loads": _attach(lambda m, w: NestedPickle(m)),
    "nested-pandas.read_pickle": _attach(lambda m, w: NestedPandas(_evil_pickle(m, w))),
    "nested-fastai.load_learner": _attach(lambda m, w: NestedLoadLearner(_evil_legacy_torch(m, w))),
    "numpy-object-array": _attach(lambda m, w: np.array([OsSystem(m), 1], dtype=object)),
    "getattr-callback-export": _export_on_predict,
    "build-on-class": _whole_stream(lambda m: build_on_class_payload()),
    "whole-stream-payload": _whole_stream(stream_payload),
    "legacy-format": _legacy_format,
}

# What the refusal must name for each payload.
EXPECTED_IN_MESSAGE = {
    "os.system": "posix.system",
    "exec": "builtins.exec",
    "subprocess": "subprocess.call",
    "nested-pickle.loads": "pickle.loads",
    "nested-pandas.read_pickle": "pandas.io.pickle.read_pickle",
    "nested-fastai.load_learner": "fastai.learner.load_learner",
    "numpy-object-array": "posix.system",
    "getattr-callback-export": "builtins.getattr called with arguments no genuine file passes",
    "build-on-class": "BUILD on the class or function object fastai.tabular.core.Categorify itself",
    "whole-stream-payload": "posix.system",
    "legacy-format": "legacy (non-zip) format",
}


def _tampered_predictor(name, binary_predictor, tmp_path, internals_of):
    predictor = tmp_path / "predictor"
    shutil.copytree(binary_predictor, predictor)
    marker = tmp_path / "markers" / "PWNED"
    marker.parent.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    PAYLOADS[name](internals_of(predictor), marker, workdir)
    return predictor, marker


def _class_state():
    import fastai.learner
    import fastai.tabular.core
    import fastai.tabular.learner

    classes = (fastai.tabular.core.Categorify, fastai.tabular.learner.TabularLearner, fastai.learner.Recorder)
    return {cls: dict(vars(cls)) for cls in classes}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_tampered_predictor_is_refused_and_nothing_runs(name, binary_predictor, tmp_path, internals_of, no_force):
    from autogluon.tabular import TabularPredictor

    predictor, marker = _tampered_predictor(name, binary_predictor, tmp_path, internals_of)
    before = _class_state()
    data = make_table(20, "binary", seed=5).drop(columns=["label"])
    with pytest.raises(ag_torchfix.SecureLoadError) as err:
        TabularPredictor.load(str(predictor), verbosity=0).predict(data, model="NeuralNetFastAI")
    message = str(err.value)
    assert EXPECTED_IN_MESSAGE[name] in message, message
    assert str(internals_of(predictor)) in message and "'NeuralNetFastAI'" in message
    assert "trusted(" in message and "AG_TORCHFIX_TRUST" in message
    assert not marker.exists(), "the payload ran"
    assert not (marker.parent / "export.pkl").exists(), "the payload ran"
    assert _class_state() == before, "fastai classes were modified"


LIVE_PROBE = textwrap.dedent(
    """
    import sys, pathlib
    sys.path.insert(0, {tests!r})
    predictor, name = pathlib.Path(sys.argv[1]), sys.argv[2]
    from autogluon.tabular import TabularPredictor
    from helpers import make_table
    try:
        p = TabularPredictor.load(str(predictor), verbosity=0)
        p.predict(make_table(20, "binary", seed=5).drop(columns=["label"]), model="NeuralNetFastAI")
    except Exception as exc:
        print("load failed:", type(exc).__name__, exc)
    """
)


@pytest.mark.parametrize("name", sorted(set(PAYLOADS) - {"legacy-format", "build-on-class"}))
def test_payload_is_live_under_the_original_loader(name, binary_predictor, tmp_path, internals_of):
    """Without the package (a fresh process that never imports it), the same predictor runs the payload."""
    predictor, marker = _tampered_predictor(name, binary_predictor, tmp_path, internals_of)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_WEIGHTS_ONLY_LOAD"}
    env["AG_TORCHFIX_AUTOLOAD"] = "0"
    subprocess.run([sys.executable, "-c", LIVE_PROBE.format(tests=str(ROOT / "tests")), str(predictor), name],
                   env=env, check=True, capture_output=True, timeout=300)
    assert marker.exists() or (marker.parent / "export.pkl").exists(), f"{name}: payload did not run"


def test_build_on_class_is_a_live_gadget_under_full_pickle(tmp_path):
    """The class-mutation payload really rewrites a fastai class when loaded with plain pickle."""
    probe = textwrap.dedent(
        f"""
        import pickle, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from helpers import build_on_class_payload
        from fastai.tabular.core import Categorify
        pickle.loads(build_on_class_payload())
        print(Categorify.encodes is print)
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"})
    assert out.stdout.strip().endswith("True")


def test_every_disallowed_global_is_named_at_once(binary_predictor, internals_of, tmp_path):
    file = internals_of(shutil.copytree(binary_predictor, tmp_path / "p"))
    plant(file, a=OsSystem(tmp_path / "m1"), b=Exec(tmp_path / "m2"), c=Subprocess(tmp_path / "m3"))
    with pytest.raises(ag_torchfix.DisallowedGlobalsError) as err:
        ag_torchfix.load_learner(file)
    assert [g.split(" ")[0] for g in err.value.globals] == ["builtins.exec", "posix.system", "subprocess.call"]
    assert all("(dangerous:" in g for g in err.value.globals)
    assert not any((tmp_path / m).exists() for m in ("m1", "m2", "m3"))


def test_value_only_entries_cannot_be_called(binary_predictor, internals_of, tmp_path):
    """print is allowlisted as the learner's logger, but a file that *calls* it is refused."""
    file = internals_of(binary_predictor)
    payload = data_pkl(file)
    call_print = b"\x80\x02cbuiltins\nprint\nX\x03\x00\x00\x00hi!\x85R."
    bad = tmp_path / "model-internals.pkl"
    rewrite_archive(file, bad, call_print)
    with pytest.raises(ag_torchfix.DisallowedGlobalsError, match="builtins.print is allowlisted as a value only"):
        ag_torchfix.load_learner(bad)
    assert b"cbuiltins\nprint\n" in payload or b"c__builtin__\nprint\n" in payload
