"""Regression tests for what the fuzzer (tools/fuzz.py, ``make fuzz``) found: one test per distinct finding,
each built from a minimal reproducer, asserting the typed refusal the component promises."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import pytest

from ag_torchfix.load import strict_mode
from ag_torchfix.core.errors import UnreadableFileError


def run_with_address_space(code: str, headroom_mb: int = 512) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose address space is capped ``headroom_mb`` above what it uses
    once imports are done: an input that makes the code allocate what the file declares fails there with
    MemoryError instead of taking the machine's memory."""
    prelude = textwrap.dedent(f"""
        import io, pickle, resource, struct
        from ag_torchfix import strict_mode
        def _vm():
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) << 10 for l in fh if l.startswith("VmSize:"))
        _cap = _vm() + ({headroom_mb} << 20)
        resource.setrlimit(resource.RLIMIT_AS, (_cap, _cap))
    """)
    env = dict(os.environ, AG_TORCHFIX_AUTOLOAD="0")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)


# --- finding: StrictUnpickler allocates BYTEARRAY8's declared length before reading it ----------------------
# fuzz target `strict`, step StrictUnpickler; reproducer .cache/fuzz/findings/strict/memory-56aa5d67ac5c.bin.
# pickle._Unpickler.load_bytearray8 (then inherited unchanged) does ``bytearray(n)`` with the 8-byte length from
# the stream and only then reads: 10 bytes of input made the unpickler allocate (and zero) any size below
# sys.maxsize: a memory blow-up, or MemoryError, where an UnpicklingError is due.  load_pickle was not exposed
# (its scan refuses the truncated payload first); StrictUnpickler used on its own was.  Fixed in 10995fb.

def bytearray8(declared: int) -> bytes:
    return b"\x96" + struct.pack("<Q", declared) + b"."


@pytest.mark.parametrize("declared", [1 << 40, 700 << 20], ids=["1TiB", "700MiB"])
def test_strict_unpickler_bytearray8_is_bounded_by_the_stream(declared):
    result = run_with_address_space(f"""
        data = {bytearray8(declared)!r}
        try:
            strict_mode.StrictUnpickler(io.BytesIO(data)).load()
        except BaseException as exc:
            print(type(exc).__name__, isinstance(exc, pickle.UnpicklingError))
        else:
            print("loaded")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["UnpicklingError", "True"], (
        f"BYTEARRAY8 declaring {declared} bytes in a 10-byte stream: {result.stdout.strip()} (MemoryError means "
        "the unpickler allocated the declared size before reading)")


def test_load_pickle_refuses_bytearray8_past_the_stream():
    with pytest.raises(UnreadableFileError):
        strict_mode.load_pickle(bytearray8(1 << 40), path="/nonexistent/predictor.pkl")


def test_strict_unpickler_bytearray8_genuine_value_still_loads():
    data = pickle.dumps(bytearray(b"abc"), protocol=5)
    assert strict_mode.StrictUnpickler(io.BytesIO(data)).load() == bytearray(b"abc")


# --- finding: an array where dispatch compares a value escapes load_pickle as ValueError ---------------------
# Found by reading dispatch.py while building the fuzzer's strict dictionary (its attribute names), confirmed by
# hand; the `strict` target's mutations can make it since (a scalar replaced by an array, its key by one of those
# names).  Fixed in 10995fb.  dispatch.check_file runs after the strict unpickling, outside load_pickle's try: a
# numpy array (allowlisted in strict mode) in
#   - an attribute whose name contains "file" that the class also defines (AbstractModel.model_file_name):
#     _object_rule's ``state[key] != attribute`` is an array, and ``if ... and array`` raises ValueError;
#   - a SLOTS entry with a quoted literal (AbstractModel._model_specific_feature_generators: None or 'NOTSET'):
#     _is's ``value == 'NOTSET'`` is an array, and ``any(...)`` raises ValueError;
# so load_pickle raised ValueError, not a SecureLoadError (AutoGluon's loader, the scanner's --strict report and
# fallback all expect the typed refusal).

def linear_model_with(attribute: str, value) -> bytes:
    lr_model = pytest.importorskip("autogluon.tabular.models.lr.lr_model")
    obj = object.__new__(lr_model.LinearModel)
    obj.__dict__[attribute] = value
    return pickle.dumps(obj, protocol=4)


@pytest.mark.parametrize("attribute", ["model_file_name", "_model_specific_feature_generators"])
def test_strict_load_refuses_array_where_dispatch_compares(attribute):
    import numpy as np

    from ag_torchfix.core.errors import SecureLoadError

    data = linear_model_with(attribute, np.array([1, 2]))
    with pytest.raises(SecureLoadError):
        strict_mode.load_pickle(data, path="/nonexistent/model.pkl", model="LinearModel")


# --- finding: a numpy dtype BUILD state of six items crashes the interpreter in strict mode -----------------
# fuzz target `strict` (worker killed by SIGSEGV); reproducer
# .cache/fuzz/findings/strict/crash-8f1c3d6b3fbf895b9fcf30e92cf1b39fe1ae7db0 (first byte 6: models/M/utils/oof.pkl).
# numpy.dtype('f8', False, True) followed by BUILD with (3, '<', None, -1, -1, 0): numpy's dtype.__setstate__
# takes a 6-item state as (version, endian, subarray, fields, elsize, alignment) and stores -1 as the fields
# dict, then dereferences it: SIGSEGV inside __setstate__.  strict_mode checks dtype states only after BUILD
# (_SEQUENCE_CHECKS["numpy.dtype"] returns None, _AFTER_BUILD runs _dtype_problem), which is too late; the scan
# does not check dtype states for the strict profile (check_calls=False).  load_pickle, StrictUnpickler and
# `ag-torchfix scan --strict` (scanner.scan_file(strict=True) on a predictor's model.pkl) all die.
# (The fastai internals are not exposed: TorchRules' _dtype_rule accepts only numpy's exact 8-item states.)

DTYPE_SIX_ITEM_STATE = (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R"
                        b"(K\x03X\x01\x00\x00\x00<NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb.")


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: a crash there fails the test instead of killing pytest."""
    env = dict(os.environ, AG_TORCHFIX_AUTOLOAD="0")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_strict_load_refuses_dtype_six_item_state_without_crashing():
    result = run_isolated(f"""
        from ag_torchfix import strict_mode
        from ag_torchfix.errors import SecureLoadError
        try:
            strict_mode.load_pickle({DTYPE_SIX_ITEM_STATE!r}, path="/nonexistent/x.pkl")
        except SecureLoadError as exc:
            print("refused", type(exc).__name__)
        else:
            print("loaded")
    """)
    assert result.returncode == 0, f"the interpreter died (exit {result.returncode}): {result.stderr[-500:]}"
    assert result.stdout.startswith("refused"), result.stdout + result.stderr[-500:]


def test_strict_unpickler_dtype_six_item_state_raises_instead_of_crashing():
    result = run_isolated(f"""
        import io
        from ag_torchfix import strict_mode
        try:
            strict_mode.StrictUnpickler(io.BytesIO({DTYPE_SIX_ITEM_STATE!r})).load()
        except Exception as exc:
            print("raised", type(exc).__name__)
        else:
            print("loaded")
    """)
    assert result.returncode == 0, f"the interpreter died (exit {result.returncode}): {result.stderr[-500:]}"
    assert result.stdout.startswith("raised"), result.stdout


def test_scan_strict_reports_dtype_six_item_state_without_crashing(tmp_path):
    root = tmp_path / "predictor"
    (root / "models" / "M").mkdir(parents=True)
    (root / "predictor.pkl").write_bytes(pickle.dumps(None))
    target = root / "models" / "M" / "model.pkl"
    target.write_bytes(DTYPE_SIX_ITEM_STATE)
    result = run_isolated(f"""
        from ag_torchfix import scanner
        report = scanner.scan_file({str(target)!r}, strict=True)
        print("verdict", report.verdict)
    """)
    assert result.returncode == 0, f"the interpreter died (exit {result.returncode}): {result.stderr[-500:]}"
    assert result.stdout.split() in (["verdict", "needs-trust"], ["verdict", "unreadable"]), result.stdout
