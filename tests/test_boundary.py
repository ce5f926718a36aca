"""The fastai loader's boundary (issue 11): nothing in the file is ever called, every byte is bounded, one
reading of the archive, typed errors always.

Each attack is first shown live: torch's weights-only unpickler under the very same scoped allowlist, without
ag_torchfix's static pass, calls the planted callable, crashes the interpreter or reads what the scan did not.
Then ag_torchfix refuses it before torch reads a byte, and ``ag-torchfix scan`` says so too.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile

import pytest
from helpers import B, G, I, PROTO, S, data_pkl, rewrite_archive

import ag_torchfix
from ag_torchfix.cli import scanner


def archive_with(genuine, tmp_path, payload: bytes, name: str = "model-internals.pkl"):
    path = tmp_path / name
    rewrite_archive(genuine, path, payload)
    return path


LIVE = textwrap.dedent(
    """
    import sys, torch
    from ag_torchfix import pickle_scan, secure_load, torch_scope
    path = sys.argv[1]
    names = frozenset(secure_load.policy.check_internals(open(path, "rb")).scan.globals)
    scope = secure_load._scope_cached(names)
    torch_scope.patch()
    with torch_scope.active(scope):  # the same allowlist, without the static pass
        obj = torch.load(path, map_location="cpu", weights_only=True)
    print("LOADED", repr(obj)[:200])
    """
)


def live(path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"}
    return subprocess.run([sys.executable, "-c", LIVE, str(path)], capture_output=True, text=True, env=env, timeout=300)


def refused(path, match: str, error=ag_torchfix.DisallowedGlobalsError):
    with pytest.raises(error, match=match) as err:
        ag_torchfix.load_learner(path)
    report = scanner.scan_file(str(path))
    assert report.verdict != "allowed", report  # the scanner agrees with the loader
    return err.value


@pytest.fixture
def genuine(binary_predictor, internals_of):
    return internals_of(binary_predictor)


# --- value-only entries are never called --------------------------------------------------------------

def test_instance_setstate_planted_by_a_first_build_is_refused(genuine, tmp_path):
    """torch's BUILD looks __setstate__ up on the instance: a first BUILD plants print, the second calls it."""
    payload = (PROTO + G("fastai.learner", "Recorder") + b")\x81" + b"}" + S("__setstate__") + G("builtins", "print")
               + b"sb" + S("PLANTED-CALL-RAN") + b"b.")
    path = archive_with(genuine, tmp_path, payload)
    assert "PLANTED-CALL-RAN" in live(path).stdout  # live: torch called print with the file's data
    err = refused(path, "sets __setstate__")
    assert "after it was built" in str(err)  # and the second BUILD is refused in its own right


def test_wif_planted_as_setstate_does_not_change_the_thread_count(genuine, tmp_path):
    import torch

    payload = (PROTO + G("fastai.learner", "Recorder") + b")\x81" + b"}" + S("__setstate__")
               + G("fastai.data.load", "_wif") + b"sb" + I(0) + b"b.")
    path = archive_with(genuine, tmp_path, payload)
    before = torch.get_num_threads()
    refused(path, "sets __setstate__")
    assert torch.get_num_threads() == before


def test_rebuild_from_type_v2_may_only_call_torchs_rebuild_function(genuine, tmp_path):
    """torch's own default _rebuild_from_type_v2(func, new_type, args, state) calls func whatever it is."""
    payload = (PROTO + G("torch._tensor", "_rebuild_from_type_v2") + b"(" + G("builtins", "print")
               + G("fastai.torch_core", "TensorBase") + S("REBUILD-CALLED-PRINT") + b"\x85Nt" + b"R.")
    path = archive_with(genuine, tmp_path, payload)
    assert "REBUILD-CALLED-PRINT" in live(path).stdout
    refused(path, "_rebuild_from_type_v2 called with arguments no genuine file passes")


def test_torch_defaults_that_exports_never_use_are_refused(genuine, tmp_path):
    import torch

    payload = PROTO + G("builtins", "bytearray") + I(1 << 20) + b"\x85R."
    path = archive_with(genuine, tmp_path, payload)
    assert len(torch.load(path, weights_only=True)) == 1 << 20  # torch's own default: bytearray(n) allocates n
    refused(path, "builtins.bytearray")


def test_a_value_only_entry_called_by_reduce_is_refused(genuine, tmp_path):
    payload = PROTO + G("builtins", "print") + S("REDUCE-CALLED-PRINT") + b"\x85R."
    refused(archive_with(genuine, tmp_path, payload), "builtins.print is allowlisted as a value only")


# --- numpy state that crashes the interpreter ------------------------------------------------------------

def _array(dtype_code: str, dtype_state: bytes, shape: tuple, data: bytes) -> bytes:
    dtype = G("numpy", "dtype") + S(dtype_code) + b"\x89\x88\x87R" + dtype_state + b"b"
    return (PROTO + G("numpy._core.multiarray", "_reconstruct") + G("numpy", "ndarray") + I(0) + b"\x85" + B(b"b")
            + b"\x87R" + b"(" + I(1) + b"(" + b"".join(I(n) for n in shape) + b"t" + dtype + b"\x89" + data + b"tb.")


def test_a_forged_object_dtype_is_refused_before_numpy_reads_pointers_from_bytes(genuine, tmp_path):
    """An object dtype whose state clears its flags makes numpy read object pointers from raw bytes."""
    state = b"(" + I(3) + S("|") + b"NNN" + I(-1) + I(-1) + I(0) + b"t"
    path = archive_with(genuine, tmp_path, _array("O8", state, (1,), B(b"\x41" * 8)))
    assert live(path).returncode < 0  # live: the interpreter dies (SIGSEGV)
    refused(path, "not what numpy writes for O8")


def test_an_object_array_shorter_than_its_shape_is_refused(genuine, tmp_path):
    state = b"(" + I(3) + S("|") + b"NNN" + I(-1) + I(-1) + I(63) + b"t"
    path = archive_with(genuine, tmp_path, _array("O8", state, (1000,), b"](" + I(1) + I(2) + b"e"))
    assert live(path).returncode < 0  # live: numpy reads past the list (SIGSEGV)
    refused(path, "needs a list of exactly 1000 items")


# --- storages and records --------------------------------------------------------------------------------

def test_a_storage_larger_than_its_record_is_refused(genuine, tmp_path):
    pid = b"(" + S("storage") + G("torch", "FloatStorage") + S("0") + S("cpu") + I(1 << 28) + b"tQ"
    payload = (PROTO + G("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + I(0) + I(1 << 28) + b"\x85" + I(1)
               + b"\x85\x89" + G("collections", "OrderedDict") + b")Rt" + b"R.")
    refused(archive_with(genuine, tmp_path, payload), "declares 268435456 x 4 bytes")


def _rezip(src, dst, *, transform):
    """Rebuild an archive record by record; ``transform(name, data) -> (name, data, compress_type)``."""
    with zipfile.ZipFile(src) as zin:
        records = [(i.filename, zin.read(i)) for i in zin.infolist()]
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in records:
            new_name, new_data, compress = transform(name, data)
            zout.writestr(zipfile.ZipInfo(new_name), new_data, compress_type=compress)


def test_a_deflated_bomb_record_is_refused_before_torch_inflates_it(genuine, tmp_path):
    path = tmp_path / "model-internals.pkl"
    _rezip(genuine, path, transform=lambda n, d: (n, d + b"\x00" * (64 << 20) if n.endswith("data/0") else d,
                                                  zipfile.ZIP_DEFLATED if n.endswith("data/0") else zipfile.ZIP_STORED))
    refused(path, "zip bomb", ag_torchfix.UnreadableFileError)


def test_names_equal_up_to_case_are_refused(genuine, tmp_path):
    """torch's reader (miniz) looks records up case-insensitively: DATA.PKL could be what torch reads."""
    path = tmp_path / "model-internals.pkl"
    shutil.copy(genuine, path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("archive/DATA.PKL", PROTO + G("posix", "system") + S("id") + b"\x85R.")
    refused(path, "equal up to case", ag_torchfix.UnreadableFileError)


def test_more_than_one_top_level_directory_is_refused(genuine, tmp_path):
    path = tmp_path / "model-internals.pkl"
    _rezip(genuine, path, transform=lambda n, d: (n.replace("archive/", "other/") if n.endswith("byteorder") else n, d,
                                                  zipfile.ZIP_STORED))
    refused(path, "more than one top-level directory", ag_torchfix.UnreadableFileError)


def _patch_zip(raw: bytes, *, flags: int | None = None, method: int | None = None, corrupt_deflate=False) -> bytes:
    data = bytearray(raw)
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            if flags is not None:
                data[i + flag_at:i + flag_at + 2] = struct.pack("<H", flags)
            if method is not None:
                data[i + method_at:i + method_at + 2] = struct.pack("<H", method)
            start = i + 4
    if corrupt_deflate:
        i = data.find(b"PK\x03\x04")
        n, e = struct.unpack_from("<HH", data, i + 26)
        body = i + 30 + n + e
        data[body:body + 16] = b"\xff" * 16
    return bytes(data)


@pytest.mark.parametrize("kind, match", [("broken-deflate", "not a valid deflate stream|does not inflate"),
                                          ("encrypted", "encrypted"), ("method-99", "compression method 99")])
def test_broken_zip_records_get_a_typed_error_and_the_scanner_one_line(kind, match, genuine, tmp_path):
    path = tmp_path / "model-internals.pkl"
    if kind == "broken-deflate":
        _rezip(genuine, path, transform=lambda n, d: (n, d, zipfile.ZIP_DEFLATED if n.endswith("data.pkl")
                                                      else zipfile.ZIP_STORED))
        path.write_bytes(_patch_zip(path.read_bytes(), corrupt_deflate=True))
    else:
        path.write_bytes(_patch_zip(genuine.read_bytes(), flags=1 if kind == "encrypted" else None,
                                    method=99 if kind == "method-99" else None))
    refused(path, match, ag_torchfix.UnreadableFileError)
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3 and "Traceback" not in out.stdout + out.stderr


def test_mark_flood_and_memo_flood_are_refused_without_reaching_torch(genuine, tmp_path):
    refused(archive_with(genuine, tmp_path, PROTO + b"(" * (2 << 20) + b"."), "MARK nesting",
            ag_torchfix.UnreadableFileError)
    memo = b"".join(b"r" + struct.pack("<I", i) for i in range(600_000))
    refused(archive_with(genuine, tmp_path, PROTO + b"]" + memo + b"."), "memo entries",
            ag_torchfix.UnreadableFileError)


def test_data_after_stop_is_refused(genuine, tmp_path):
    payload = data_pkl(genuine) + PROTO + G("posix", "system") + S("id") + b"\x85R."
    refused(archive_with(genuine, tmp_path, payload), "after the pickle's STOP opcode")


def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "model-internals.pkl"
    os.mkfifo(fifo)
    outcome = {}

    def load():
        try:
            ag_torchfix.load_learner(fifo)
        except Exception as exc:  # noqa: BLE001 - the type is asserted below
            outcome["error"] = exc

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the loader hung on a FIFO"
    assert isinstance(outcome["error"], ag_torchfix.UnreadableFileError)
    assert scanner.scan_file(str(fifo)).verdict == "unreadable"
