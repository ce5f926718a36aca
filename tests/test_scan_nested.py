"""``ag-torchfix scan`` (issue 21): pickles nested in a pickle's values, danger first in refused archives, numpy's
.npy/.npz, 7z, FRAME straddles, and messages that name each thing once.

Every payload is built by hand, opcode by opcode (as in test_catalogue.py): nothing here is ever unpickled.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import pytest

from ag_torchfix.cli import scanner
from ag_torchfix.formats import archive, nested, pickle_scan
from ag_torchfix.policy import denylist


# --- building pickles ------------------------------------------------------------------------------------------

def sbu(text: str) -> bytes:
    data = text.encode()
    return (b"\x8c" + bytes([len(data)]) if len(data) < 256 else b"X" + struct.pack("<I", len(data))) + data


def sbb(data: bytes) -> bytes:
    return (b"C" + bytes([len(data)]) if len(data) < 256 else b"B" + struct.pack("<I", len(data))) + data


def call4(module: str, name: str, arg: str = "id") -> bytes:
    """Protocol 4: STACK_GLOBAL module.name, called with one str (a REDUCE)."""
    return b"\x80\x04" + sbu(module) + sbu(name) + b"\x93" + sbu(arg) + b"\x85R."


SYSTEM = call4("posix", "system")
PRINT = call4("builtins", "print", "hello")
PLAIN = b"\x80\x04}" + sbu("tiny") + sbu("payload") + b"s."  # {'tiny': 'payload'}: no global


def holder(value: bytes, key: str = "blob") -> bytes:
    """Protocol 4 {key: value}: plain data whose only oddity is the value (a bytes or str opcode)."""
    return b"\x80\x04}" + sbu(key) + value + b"s."


def urlsafe(data: bytes) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    assert "-" in text or "_" in text
    return text


def holding(inner: bytes, how: str) -> bytes:
    """``inner`` as one value of a plain dict, encoded as ``how``."""
    encoders = {
        "bytes": lambda b: sbb(b),
        "hex": lambda b: sbu(b.hex()),
        "base64": lambda b: sbu(base64.b64encode(b).decode()),
        "base64url": lambda b: sbu(urlsafe(b + b"\xfb\xff\xfe")),  # bytes after STOP: pickle.loads ignores them
        "base64-lines": lambda b: sbu(base64.encodebytes(b * 3).decode()),
        "base64-bytes": lambda b: sbb(base64.b64encode(b)),
        "zlib": lambda b: sbb(zlib.compress(b)),
        "gzip": lambda b: sbb(gzip.compress(b)),
        "bz2": lambda b: sbb(bz2.compress(b)),
        "xz": lambda b: sbb(lzma.compress(b)),
        "lzma-alone": lambda b: sbb(lzma.compress(b, format=lzma.FORMAT_ALONE)),
        "zlib-base64": lambda b: sbu(base64.b64encode(zlib.compress(b)).decode()),
        "gzip-hex": lambda b: sbu(gzip.compress(b).hex()),
        "bz2-base64-hex": lambda b: sbu(base64.b64encode(bz2.compress(b)).hex()),
    }
    return holder(encoders[how](inner))


def scan(tmp_path, data: bytes, name: str = "x.pkl") -> scanner.FileReport:
    path = tmp_path / name
    path.write_bytes(data)
    return scanner.scan_file(str(path))


def scan_json(*paths):
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--json", *map(str, paths)],
                         capture_output=True, text=True, timeout=600)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout)


def dangerous_names(report) -> list[str]:
    return [g.name for g in report.globals if g.status == "dangerous"]


# --- nested pickles ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["bytes", "hex", "base64", "base64url", "base64-lines", "base64-bytes", "zlib", "gzip",
                                 "bz2", "xz", "lzma-alone", "zlib-base64", "gzip-hex", "bz2-base64-hex"])
def test_a_danger_in_a_nested_pickle_wins(tmp_path, how):
    report = scan(tmp_path, holding(SYSTEM, how))
    assert report.verdict == "dangerous", report
    assert dangerous_names(report) == ["posix.system"]
    (g,) = report.globals
    assert "in a nested pickle" in g.reason and "at byte 9" in g.reason, g.reason
    assert g.uses == ["called", "referenced"]


def test_where_the_nested_pickle_is_is_said_plainly(tmp_path):
    reasons = {how: scan(tmp_path, holding(SYSTEM, how)).globals[0].reason
               for how in ("bytes", "hex", "base64", "zlib-base64", "gzip-hex")}
    assert reasons["bytes"].endswith("; in a nested pickle: bytes at byte 9"), reasons
    assert reasons["hex"].endswith("; in a nested pickle: hex text at byte 9")
    assert reasons["base64"].endswith("; in a nested pickle: base64 text at byte 9")
    assert reasons["zlib-base64"].endswith("; in a nested pickle: zlib data in base64 text at byte 9")
    assert reasons["gzip-hex"].endswith("; in a nested pickle: gzip data in hex text at byte 9")


def test_protocol_0_and_protocol_less_nested_pickles(tmp_path):
    p0 = b"cposix\nsystem\n(S'id'\ntR."
    no_proto = sbu("posix") + sbu("system") + b"\x93" + sbu("id") + b"\x85R."  # STACK_GLOBAL without PROTO
    for inner in (p0, no_proto):
        for how in ("bytes", "base64", "hex"):
            assert scan(tmp_path, holding(inner, how)).verdict == "dangerous", (inner, how)


def test_multi_stage_nesting(tmp_path):
    stage2 = holder(sbu(base64.b64encode(SYSTEM).decode()), "stage2")
    stage1 = holder(sbb(zlib.compress(stage2)), "stage1")
    report = scan(tmp_path, holding(stage1, "base64"))
    assert report.verdict == "dangerous"
    assert report.globals[0].reason.endswith(
        "; in a nested pickle: base64 text at byte 9 → zlib data in bytes at byte 11 → base64 text at byte 11")


def test_a_danger_before_a_malformed_point_counts(tmp_path):
    truncated = SYSTEM[:-1] + b"\xff"  # REDUCE runs, then an unknown opcode: pickle.loads ran os.system already
    assert scan(tmp_path, holding(truncated, "base64")).verdict == "dangerous"


def test_a_nested_pickle_without_globals_is_plain_data(tmp_path):
    for how in ("bytes", "base64", "zlib"):
        report = scan(tmp_path, holding(PLAIN, how))
        assert report.verdict == "allowed" and not report.globals and not report.constructs, report
        assert report.note == "plain data: no globals, so no unpickler can run anything from it"


def test_a_nested_pickle_with_other_globals_needs_trust(tmp_path):
    report = scan(tmp_path, holding(PRINT, "hex"))
    assert report.verdict == "needs-trust"
    assert [(g.name, g.status) for g in report.globals] == [("builtins.print", "unknown")]
    assert report.constructs == ["a nested pickle (hex text at byte 9) references builtins.print: nothing here "
                                 "unpickles it, but pickle.loads on that value would"]


def test_a_long_nested_pickle_is_read_across_windows(tmp_path):
    # 3 MiB of bytes, then the call: the value spans the scanner's 1 MiB read windows (plain and gzip files)
    filler = __import__("random").Random(0).randbytes(3 << 20)  # incompressible: no gzip bomb
    inner = b"\x80\x04" + b"\x8e" + struct.pack("<Q", len(filler)) + filler + b"0" + SYSTEM[2:]
    data = holder(b"\x8e" + struct.pack("<Q", len(inner)) + inner)
    assert scan(tmp_path, data).verdict == "dangerous"
    assert scan(tmp_path, gzip.compress(data), "x.pkl.gz").verdict == "dangerous"
    # compressed values longer than the 4 KiB head (bz2 gives nothing before its first block ends)
    small = b"\x80\x04" + sbb(filler[:200_000]) + b"0" + SYSTEM[2:]
    for compress in (bz2.compress, zlib.compress, lzma.compress):
        value = compress(small)
        assert len(value) > 4096
        for encoded in (value, base64.b64encode(value)):
            report = scan(tmp_path, holder(b"B" + struct.pack("<I", len(encoded)) + encoded))
            assert report.verdict == "dangerous", (compress, report)


def test_values_that_only_look_encoded_change_nothing(tmp_path):
    words = ["abcdabcd", "deadbeef" * 4, "gAAAAAAA", "eJyrVkrOz8lJTc7PS8lJLQ", "0123456789abcdef", "Zm9vYmFy" * 10]
    data = b"\x80\x04]" + b"(" + b"".join(sbu(w) for w in words) + sbb(b"\x80\x04\x95" + bytes(200)) + b"e."
    report = scan(tmp_path, data)
    assert report.verdict == "allowed" and not report.constructs, report


def test_the_cli_reports_the_nested_danger(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(holding(SYSTEM, "base64"))
    code, doc = scan_json(path)
    assert code == 2 and doc["files"][0]["verdict"] == "dangerous"
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", str(path)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 2 and "dangerous: posix.system" in out.stdout and "in a nested pickle" in out.stdout


def test_nested_pickles_in_torch_archives_and_legacy_files(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2), "note": base64.b64encode(SYSTEM).decode()}, path)
    assert scanner.scan_file(str(path)).verdict == "dangerous"
    torch.save({"w": torch.zeros(2), "note": base64.b64encode(SYSTEM).decode()}, path,
               _use_new_zipfile_serialization=False)
    assert scanner.scan_file(str(path)).verdict == "dangerous"
    torch.save({"w": torch.zeros(2), "note": "plain"}, path)
    assert scanner.scan_file(str(path)).verdict == "allowed"


# --- bounds ------------------------------------------------------------------------------------------------------

def _zlib_of_zeros(size: int, head: bytes = b"") -> bytes:
    z = zlib.compressobj(9)
    out = [z.compress(head)]
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        out.append(z.compress(chunk))
    out.append(z.flush())
    return b"".join(out)


def test_a_1gb_decompression_bomb_in_base64_is_bounded(tmp_path):
    bomb = base64.b64encode(_zlib_of_zeros(1 << 30)).decode()
    start = time.monotonic()
    report = scan(tmp_path, holder(sbu(bomb)))  # zeros: not a pickle, decided on the first bytes
    assert report.verdict == "allowed" and time.monotonic() - start < 5

    # the same bomb behind a pickle's first opcodes (a 1 GiB BINBYTES8 and a danger after it): read up to the bound
    head = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 30)
    bomb = base64.b64encode(_zlib_of_zeros(1 << 30, head)).decode()
    start = time.monotonic()
    report = scan(tmp_path, holder(sbu(bomb)))
    assert time.monotonic() - start < 10
    assert report.verdict == "unreadable"
    assert "is longer than the 8388608 bytes the scan decodes of one value" in report.error, report.error


def test_the_decompression_ratio_is_bounded():
    head = b"\x80\x04\x8e" + struct.pack("<Q", 50 << 20)
    value = _zlib_of_zeros(50 << 20, head)  # ~50 KB inflating to 50 MB
    search = nested.Search(denylist.danger)
    pickle_scan.scan(holder(sbb(value)), payloads=search.payloads)
    found = search.finish()
    assert found.incomplete is not None and "inflates more than 100 times its size" in found.incomplete


def test_many_candidates_are_bounded(tmp_path):
    benign = [sbu(base64.b64encode(PRINT).decode()) for _ in range(1000)]
    start = time.monotonic()
    last = scan(tmp_path, b"\x80\x04](" + b"".join(benign) + sbu(base64.b64encode(SYSTEM).decode()) + b"e.")
    first = scan(tmp_path, b"\x80\x04](" + sbu(base64.b64encode(SYSTEM).decode()) + b"".join(benign) + b"e.")
    assert time.monotonic() - start < 10
    assert last.verdict == "unreadable"
    assert last.error == "more than 64 values that could hold a nested pickle: the rest were not read"
    assert first.verdict == "dangerous"  # found before the bound
    assert "more than 64 values" in " ".join(first.constructs)

    # values that look encoded but hold no pickle cost nothing and count nothing
    decoys = [sbu(base64.b64encode(b"\x00" + bytes([i % 256]) * 30).decode()) for i in range(1000)]
    report = scan(tmp_path, b"\x80\x04](" + b"".join(decoys) + sbu(base64.b64encode(SYSTEM).decode()) + b"e.")
    assert report.verdict == "dangerous"


def test_nesting_depth_is_bounded(tmp_path):
    def nest(levels: int) -> bytes:
        data = SYSTEM
        for _ in range(levels):
            data = holder(sbb(data))
        return data

    start = time.monotonic()
    deep = scan(tmp_path, nest(10))
    assert time.monotonic() - start < 5
    assert deep.verdict == "unreadable" and "nested pickles deeper than 4 levels" in deep.error, deep
    assert scan(tmp_path, nest(4)).verdict == "dangerous"  # the file's pickle and 4 levels in it: read
    assert scan(tmp_path, nest(5)).verdict == "unreadable"


def test_encodings_per_value_are_bounded(tmp_path):
    text = SYSTEM
    for _ in range(3):
        text = base64.b64encode(text)
    assert scan(tmp_path, holder(sbb(text))).verdict == "dangerous"  # three encodings: read
    # a fourth encoding is not opened: the value is not recognised as a pickle (it is text of text of text of text)
    assert scan(tmp_path, holder(sbb(base64.b64encode(text)))).verdict == "allowed"


def test_time_is_bounded():
    search = nested.Search(denylist.danger, nested.Bounds(seconds=0))
    pickle_scan.scan(holding(SYSTEM, "bytes"), payloads=search.payloads)
    found = search.finish()
    assert found.incomplete is not None and not found.pickles


def test_large_numpy_like_byte_strings_are_not_copied(tmp_path):
    rng = __import__("random").Random(0)
    values = [sbb(bytes(rng.getrandbits(8) for _ in range(4096)) * 64) for _ in range(40)]  # 40 x 256 KiB
    data = b"\x80\x04](" + b"".join(values) + b"e."
    search = nested.Search(denylist.danger)
    pickle_scan.scan(data, payloads=search.payloads)
    found = search.finish()
    assert found.candidates == 0 and search.spent == 0 and search.probed < 10_000


# --- danger first in archives the scanner refuses ---------------------------------------------------------------

def _zip(records: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_record_at_the_zip_root_is_named_once(tmp_path):
    report = scan(tmp_path, _zip({"data.pkl": PLAIN}), "x.pt")
    assert report.verdict == "unreadable"
    assert "a record at the zip root ('data.pkl')" in report.error and report.error.count("data.pkl") == 1


def test_two_top_level_directories_are_named(tmp_path):
    report = scan(tmp_path, _zip({"a/data.pkl": PLAIN, "b/x": b"1"}), "x.pt")
    assert "records in more than one top-level directory ('a' and 'b')" in report.error


def test_encrypted_flags_and_methods_have_their_own_messages(tmp_path):
    data = bytearray(_zip({"model/config.pkl": SYSTEM}))
    data[6] |= 0x1  # the local header's flags
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 0x1
    report = scan(tmp_path, bytes(data), "x.pt")
    assert "record 'model/config.pkl' is marked encrypted (flag bits 0x1" in report.error
    assert "compression method" not in report.error
    assert report.verdict == "dangerous"  # stored in plain text whatever the flag says


@pytest.mark.parametrize("records", [
    {"data.pkl": SYSTEM},  # at the root
    {"model/config.pkl": SYSTEM},  # no data.pkl
    {"../../../etc/evil.txt": b"x", "model/malicious.pkl": SYSTEM},  # path traversal
    {"a/data.pkl": PLAIN, "b/data.pkl": SYSTEM},  # two top-level directories
    {"version": b"3\n", "data.pkl": holding(SYSTEM, "base64")},  # a nested danger in a record
])
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_danger_in_any_record_of_a_refused_archive_wins(tmp_path, records, compression):
    report = scan(tmp_path, _zip(records, compression), "x.pt")
    assert report.verdict == "dangerous", report
    assert report.error.startswith("it is"), report.error  # the refusal is kept beside the danger
    (g,) = [g for g in report.globals if g.status == "dangerous"]
    assert "in record '" in g.reason


def test_a_refused_archive_without_a_danger_stays_unreadable(tmp_path):
    report = scan(tmp_path, _zip({"data.pkl": PRINT, "notes.txt": b"hello"}), "x.pt")
    assert report.verdict == "unreadable" and not report.globals and report.error.startswith("it is not an archive")


def test_refused_internals_put_a_danger_first(tmp_path):
    path = tmp_path / "models" / "NeuralNetFastAI" / "model-internals.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(_zip({"data.pkl": SYSTEM}))
    report = scanner.scan_file(str(path))
    assert report.role == "fastai-internals" and report.verdict == "dangerous"


def test_genuine_refused_archives_stay_unreadable(tmp_path, binary_predictor, internals_of):
    torch = pytest.importorskip("torch")
    script = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()))
    buf = io.BytesIO()
    torch.jit.save(script, buf)
    report = scan(tmp_path, buf.getvalue(), "script.pt")  # its pickles name torch.jit._pickle's builders
    assert report.verdict == "unreadable" and report.error == "it is a TorchScript archive, not a torch.save archive"
    genuine = bytearray(internals_of(binary_predictor).read_bytes())
    genuine[-2:] = b"\x05\x00"  # an archive comment: refused
    path = tmp_path / "models" / "NeuralNetFastAI" / "model-internals.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(genuine) + b"hello")
    report = scanner.scan_file(str(path))
    assert report.verdict == "unreadable" and not report.globals, report  # its getattr shim is no danger here


def test_the_local_headers_are_read_too(tmp_path):
    data = bytearray(_zip({"data.pkl": SYSTEM}))
    central = data.find(b"PK\x01\x02")
    data[central + 46:central + 54] = b"a/b.txt\x00"[:8]  # the directory names it differently
    report = scan(tmp_path, bytes(data), "x.pt")
    assert report.verdict == "dangerous"


def test_salvage_is_bounded():
    bomb = _zip({"a.bin": bytes(50 << 20)}, zipfile.ZIP_DEFLATED)  # 50 MB of zeros in ~50 KB
    records, stopped = archive.salvage(io.BytesIO(bomb))
    assert len(records[0].data) <= archive.MAX_RATIO * len(bomb) + (1 << 20)
    assert records[0].problem is not None and "read in part" in records[0].problem


# --- numpy's formats, 7z ----------------------------------------------------------------------------------------

def npy(descr: str, data: bytes, shape: str = "(1,)") -> bytes:
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def test_npy_object_arrays_are_scanned_as_pickles(tmp_path):
    assert scan(tmp_path, npy("|O", SYSTEM), "a.npy").verdict == "dangerous"
    report = scan(tmp_path, npy("|O", PRINT), "a.npy")
    assert report.verdict == "needs-trust" and report.kind == "npy-pickle"
    report = scan(tmp_path, npy("<f8", bytes(8)), "a.npy")
    assert report.verdict == "allowed" and report.kind == "npy"
    assert scan(tmp_path, npy([("a", "<f8"), ("b", "|O")], SYSTEM), "a.npy").verdict == "dangerous"
    assert scan(tmp_path, b"\x93NUMPY\x01\x00\xff\xff{", "a.npy").verdict == "unreadable"


def test_npz_archives_are_judged_by_their_arrays(tmp_path):
    numbers = _zip({"a.npy": npy("<i8", bytes(8)), "b.npy": npy("<f4", bytes(4))})
    assert scan(tmp_path, numbers, "x.npz").verdict == "allowed"
    objects = _zip({"a.npy": npy("<i8", bytes(8)), "b.npy": npy("|O", PRINT)}, zipfile.ZIP_DEFLATED)
    assert scan(tmp_path, objects, "x.npz").verdict == "needs-trust"
    evil = _zip({"a.npy": npy("<i8", bytes(8)), "b.npy": npy("|O", SYSTEM)})
    report = scan(tmp_path, evil, "x.npz")
    assert report.verdict == "dangerous" and report.kind == "npz"


def test_7z_archives_are_named(tmp_path):
    report = scan(tmp_path, b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(40), "x.7z")
    assert report.verdict == "unreadable" and report.kind == "7z"
    assert report.error == "it is a 7z archive: the scanner has no 7z reader, so the files in it were not scanned"


# --- FRAME straddles ----------------------------------------------------------------------------------------

def test_an_opcode_past_its_frame_is_unreadable(tmp_path):
    frame = lambda n: b"\x95" + struct.pack("<Q", n)  # noqa: E731
    for data in (b"\x80\x05" + frame(5) + b"Vhello world\n.",  # a line past the frame
                 b"\x80\x05" + frame(3) + sbu("A" * 20) + b".",  # a payload past the frame
                 b"\x80\x05" + frame(30) + b"N" + frame(2) + b"N."):  # a frame inside a frame
        report = scan(tmp_path, data)
        assert report.verdict == "unreadable" and "FRAME" in report.error, report
    # frames as pickle writes them
    well_formed = b"\x80\x05" + frame(13) + b"]\x94(K\x01K\x02K\x03K\x04e."
    assert scan(tmp_path, well_formed).verdict == "allowed"
    big = b"\x80\x05" + frame(2) + b"]\x94" + b"B" + struct.pack("<I", 100_000) + b"x" * 100_000 + frame(2) + b"a."
    assert scan(tmp_path, big).verdict == "allowed"


def test_unhashable_keys_are_unreadable(tmp_path):
    own_key = b"\x80\x02}\x94g0\n\x8c\x05values."  # a dict as its own key
    in_itself = b"\x80\x04\x8f\x94(g0\n\x90."  # a set added to itself
    list_key = b"\x80\x04}](K\x01e\x8c\x01vs."
    for data, why in ((own_key, "a dict used as a dict key"), (in_itself, "a set added to itself"),
                      (list_key, "a list used as a dict key")):
        report = scan(tmp_path, data)
        assert report.verdict == "unreadable" and why in report.error, report
    assert scan(tmp_path, b"\x80\x04}(K\x01\x8c\x01v\x8c\x01kK\x02u.").verdict == "allowed"  # hashable keys


# --- genuine predictors: no change ----------------------------------------------------------------------------

def test_genuine_predictors_scan_as_before(zoo_predictors, monkeypatch):
    """No genuine file holds a nested pickle, almost none a value that looks like one on its first 4 KiB (CatBoost's
    model bytes can: decoded, then dropped), and every verdict, global and message is what a scan without the nested
    search gives."""
    searches = []
    real = scanner._nested_search

    def counting():
        searches.append(real())
        return searches[-1]

    monkeypatch.setattr(scanner, "_nested_search", counting)
    roots = [str(p) for p in zoo_predictors.values()]
    with_nested = scanner.scan_paths(roots).to_json()
    assert searches and all(s.findings.candidates <= 2 and not s.findings.pickles and s.findings.incomplete is None
                            for s in searches)

    class Off(nested.Search):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.payloads = None

    monkeypatch.setattr(scanner, "_nested_search", lambda: Off(denylist.danger))
    assert scanner.scan_paths(roots).to_json() == with_nested


# --- structures no pickler writes (fickling rates them unsafe) ---------------------------------------------------

def scanned_verdict(tmp_path, data: bytes) -> tuple[str, list[str]]:
    path = tmp_path / "sample.pkl"
    path.write_bytes(data)
    report = scanner.scan_file(str(path))
    return report.verdict, report.constructs


def test_a_second_proto_inside_one_pickle_is_no_plain_data(tmp_path):
    data = b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00](K\x01\x80\x04K\x02e."
    verdict, constructs = scanned_verdict(tmp_path, data)
    assert verdict == scanner.UNREADABLE and any("PROTO" in c for c in constructs)
    assert scanned_verdict(tmp_path, b"\x80\x04](K\x01K\x02e.")[0] == scanner.ALLOWED  # control


def test_expansion_patterns_are_no_plain_data(tmp_path):
    self_appends = b"\x80\x04]\x94" + b"h\x00a" * 60 + b"."  # a list appended to itself 60 times
    dups = b"\x80\x04]" + b"2" * 150 + b"."  # 150 DUPs of one list
    for data in (self_appends, dups):
        verdict, constructs = scanned_verdict(tmp_path, data)
        assert verdict == scanner.UNREADABLE and any("expansion" in c or "DUP" in c or "themselves" in c
                                                      for c in constructs), constructs
    once = b"\x80\x04]\x94h\x00a."  # a list holding itself once: legal Python, what pickle.dumps writes for it
    assert scanned_verdict(tmp_path, once)[0] == scanner.ALLOWED
