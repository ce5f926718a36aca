"""Issue 17, item 2: every opcode of a fastai internals pickle is bounded before torch's unpickler reads a byte.

Each attack is first shown live: torch's weights-only unpickler under the very same scoped allowlist, without
ag_torchfix's static pass (as in test_boundary), grows memory, hangs, crashes or keeps a value the scan never saw.
Then ag_torchfix refuses it quickly with a typed error, and the scanner does not call it allowed.  Payloads are kept
small (the suite stays fast): each live run shows the mechanism at a size whose cost extrapolates past the target
(no input of <= 10 MB may take the loader or the scanner past 512 MiB or 10 s, or crash them).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
from helpers import G, I, PROTO, S

import ag_torchfix
from ag_torchfix.formats import pickle_scan
from ag_torchfix.policy import verdicts as policy
from ag_torchfix.cli import scanner

HASH_MODULUS = (1 << 61) - 1

LIVE = textwrap.dedent(
    """
    import dataclasses, sys, time, torch
    from ag_torchfix import policy, secure_load, torch_scope

    def status(field):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field)) * 1024

    path = sys.argv[1]
    names_only = dataclasses.replace(policy.fastai_internals(), check_calls=False)  # the names, not the checks
    names = frozenset(policy.check_internals(open(path, "rb"), names_only).scan.globals)
    scope = secure_load._scope_cached(names)
    torch_scope.patch()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the peak (VmHWM) starts again from here
    before, start = status("VmRSS"), time.perf_counter()
    with torch_scope.active(scope):  # the same allowlist, without the static pass
        obj = torch.load(path, map_location="cpu", weights_only=True)
    print("SECONDS", time.perf_counter() - start)
    print("GREW", status("VmHWM") - before)
    exec(sys.argv[2] if len(sys.argv) > 2 else "")
    """
)


def live(path, show: str = "", timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"}
    return subprocess.run([sys.executable, "-c", LIVE, str(path), show], capture_output=True, text=True, env=env,
                          timeout=timeout)


def measured(out: subprocess.CompletedProcess, what: str) -> float:
    assert out.returncode == 0, out.stderr[-2000:]
    return float(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith(what)))


def archive_with(genuine, path, payload: bytes, *, deflate: bool = False):
    """A copy of a genuine archive whose data.pkl is ``payload`` (deflated when asked; the rest stored)."""
    with zipfile.ZipFile(genuine) as zin:
        records = [(i.filename, zin.read(i)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for name, data in records:
            pkl = name.endswith("/data.pkl")
            zout.writestr(name, payload if pkl else data, compresslevel=9,
                          compress_type=zipfile.ZIP_DEFLATED if pkl and deflate else zipfile.ZIP_STORED)
    return path


def refused(path, match: str, error=ag_torchfix.SecureLoadError, within: float = 10.0):
    import torch  # noqa: F401  (imported before the clock starts: the bound is on reading the file)

    start = time.perf_counter()
    with pytest.raises(error, match=match) as err:
        ag_torchfix.load_learner(path)
    report = scanner.scan_file(str(path))
    assert time.perf_counter() - start < within
    assert report.verdict != "allowed", report  # the scanner agrees with the loader
    return err.value


@pytest.fixture
def genuine(binary_predictor, internals_of):
    return internals_of(binary_predictor)


# --- every push counts ----------------------------------------------------------------------------------

def _none_flood(pushes: int) -> bytes:
    """NONE opcodes with a random BININT every 105: deflates about 19:1, under the archive reader's 20:1."""
    rnd, parts, count = random.Random(0), [PROTO], 0
    while count < pushes:
        parts += [b"N" * 105, b"J" + rnd.randbytes(4)]
        count += 106
    return b"".join(parts) + b"."


def test_a_none_flood_is_refused_before_torch_holds_its_pushes(genuine, tmp_path):
    path = archive_with(genuine, tmp_path / "model-internals.pkl", _none_flood(1_000_000), deflate=True)
    with zipfile.ZipFile(path) as z:
        (info,) = [i for i in z.infolist() if i.filename.endswith("/data.pkl")]
        assert 15 < info.file_size / info.compress_size < 20  # what the archive reader accepts
    grew = measured(live(path), "GREW")
    # live: torch keeps every push (~8 bytes each, ~80 bytes per stored byte): 10 MB of it takes it past 512 MiB
    assert grew / info.compress_size * (10 << 20) > 512 << 20, (grew, info.compress_size)
    refused(path, "more than 750000 opcodes", ag_torchfix.UnreadableFileError)


def test_every_opcode_counts_against_the_bound():
    limits = pickle_scan.Limits(opcodes=10_000)
    for push in (b"N", b"\x88", b"\x89", b"K\x01", b"J\x01\x00\x00\x00", b"h\x00", b"2"):
        result = pickle_scan.scan(PROTO + b"N\x94" + push * 100_000 + b".", limits=limits)
        assert result.error and "more than 10000 opcodes" in result.error, push
    # MEMOIZE pushes nothing but grows the memo: counted too
    assert "opcodes" in pickle_scan.scan(PROTO + b"N" + b"\x94" * 100_000 + b".", limits=limits).error


# --- nesting ---------------------------------------------------------------------------------------------

def test_a_deep_tuple_dict_key_crashes_torch_and_is_refused(genuine, tmp_path):
    """CPython hashes a tuple recursively in C: a key 400k tuples deep overflows the C stack."""
    payload = PROTO + b"}N" + b"\x85" * 400_000 + b"Ns."
    path = archive_with(genuine, tmp_path / "model-internals.pkl", payload)
    assert live(path).returncode == -11  # live: SIGSEGV
    refused(path, "nested deeper than 100", ag_torchfix.UnreadableFileError)
    # the scanner's own pass (any profile) never hashes it: a plain pickle of it is scanned, not crashed on
    plain = tmp_path / "deep.pkl"
    plain.write_bytes(payload)
    assert "nested deeper than 1000" in scanner.scan_file(str(plain)).error


def test_nesting_is_bounded_for_lists_dicts_and_sets_too():
    limits = pickle_scan.Limits(nesting=50)
    deep_tuple = PROTO + b"N" + b"\x85" * 60 + b"."
    deep_list = PROTO + b"]" + b"]" * 59 + b"a" * 59 + b"."
    deep_dict = PROTO + b"}" + b"X\x01\x00\x00\x00k}" * 59 + b"s" * 59 + b"."
    deep_mark = PROTO + b"N" + b"(" * 60 + b"t" * 60 + b"."
    for data in (deep_tuple, deep_list, deep_dict, deep_mark):
        result = pickle_scan.scan(data, limits=limits)
        assert result.error and "nested deeper than 50" in result.error, (data[:20], result.error)
    assert pickle_scan.scan(PROTO + b"N" + b"\x85" * 49 + b".", limits=limits).error is None


# --- dict keys -------------------------------------------------------------------------------------------

def _long1(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _colliding(n: int, step: int) -> bytes:
    return PROTO + b"}(" + b"".join(_long1(k * step) + b"N" for k in range(1, n + 1)) + b"u."


def test_int_keys_whose_hashes_collide_hang_torch_and_are_refused(genuine, tmp_path):
    colliding = archive_with(genuine, tmp_path / "model-internals.pkl", _colliding(14_000, HASH_MODULUS))
    spread = archive_with(genuine, tmp_path / "spread.pkl", _colliding(14_000, 1))
    out = live(colliding, f"start = time.perf_counter(); torch.load({str(spread)!r}, weights_only=True); "
                          "print('SPREAD', time.perf_counter() - start)")
    slow, fast = measured(out, "SECONDS"), measured(out, "SPREAD")
    assert slow > 10 * fast, (slow, fast)  # live: quadratic (14k keys: ~1-2 s; 160k keys: minutes)
    refused(colliding, "past 32 bits", ag_torchfix.DisallowedGlobalsError)


def test_the_scan_never_hashes_a_key_the_file_chose(tmp_path):
    """Text INT keys kept their value in the scan and were hashed into a real dict: quadratic in the scanner."""
    data = PROTO + b"}(" + b"".join(b"I%d\nN" % (k * HASH_MODULUS) for k in range(1, 60_001)) + b"u."
    start = time.perf_counter()
    result = pickle_scan.scan(data)
    assert result.error is None and time.perf_counter() - start < 2
    (key, *_), values = list(result.value), list(result.value.values())
    assert type(key) is pickle_scan.Key and len(values) == 60_000


def test_distinct_keys_are_never_merged():
    """1, 1.0 and True are one key to Python; two floats are one NUMBER to the scan: every value stays visible."""
    data = PROTO + b"}(" + b"K\x01" + S("a") + b"\x88" + S("b") + b"G" + b"\x3f\xf0" + b"\x00" * 6 + S("c") \
        + b"G" + b"\x40\x00" + b"\x00" * 6 + S("d") + b"u."
    result = pickle_scan.scan(data)
    assert sorted(result.value.values()) == ["a", "b", "c", "d"]


def test_float_keys_hide_no_value_from_the_check(genuine, tmp_path):
    """Two float keys were one NUMBER in the scan: the checked annotation was the benign last one, while torch kept
    both, a string annotation included (typing.get_type_hints evaluates it)."""
    annotations = (b"}(" + b"G\x3f\xf8" + b"\x00" * 6 + S("__import__('os')") + b"G\x40\x04" + b"\x00" * 6
                   + G("torch", "Tensor") + b"u")
    payload = PROTO + G("fastai.learner", "Recorder") + b")\x81" + b"}" + S("__annotations__") + annotations + b"sb."
    path = archive_with(genuine, tmp_path / "model-internals.pkl", payload)
    assert "__import__('os')" in live(path, "print(obj.__annotations__)").stdout
    refused(path, "a float or an int past 32 bits", ag_torchfix.DisallowedGlobalsError)


def test_numpy_integer_scalar_keys_must_hash_apart():
    dtype = G("numpy", "dtype") + S("i8") + b"\x89\x88\x87R" + b"(" + I(3) + S("<") + b"NNN" + I(-1) + I(-1) + I(0) \
        + b"tb" + b"q\x01"

    def scalar(value: int, first: bool) -> bytes:
        raw = value.to_bytes(8, "little", signed=True).decode("latin1")
        return (G("numpy._core.multiarray", "scalar") + (dtype if first else b"h\x01")
                + G("_codecs", "encode") + S(raw) + S("latin1") + b"\x86R" + b"\x86R")

    def judged(values):
        data = PROTO + b"}(" + b"".join(scalar(v, i == 0) + b"N" for i, v in enumerate(values)) + b"u."
        rules = policy.TorchRules(policy.fastai_internals())
        result = pickle_scan.scan(data, rules=rules)
        return [p.detail for p in result.problems] + [p.detail for p in rules.problems]

    assert judged([0, 1, 2, 3]) == []  # a genuine label vocabulary
    assert any("past 2**61-1" in p for p in judged([HASH_MODULUS, 2 * HASH_MODULUS]))


# --- a checked container is frozen -----------------------------------------------------------------------

def test_a_state_dict_filled_after_its_build_was_checked_is_refused(genuine, tmp_path):
    """BUILD stores the annotations dict by reference: filled afterwards, the instance holds what was never
    checked."""
    payload = (PROTO + G("fastai.learner", "Recorder") + b")\x81" + b"}" + S("__annotations__") + b"}q\x01" + b"sb"
               + b"h\x01" + S("x") + S("__import__('os').system('id')") + b"s" + b"\x86.")
    path = archive_with(genuine, tmp_path / "model-internals.pkl", payload)
    assert "system('id')" in live(path, "print(obj[0].__annotations__)").stdout
    refused(path, "after a call or a BUILD was checked with it", ag_torchfix.DisallowedGlobalsError)


def test_a_call_argument_changed_after_the_call_is_refused():
    data = PROTO + G("builtins", "set") + b"]q\x01\x85R" + b"h\x01" + G("posix", "system") + b"a" + b"\x86."
    rules = policy.TorchRules(policy.fastai_internals())
    result = pickle_scan.scan(data, rules=rules)
    assert any(p.kind == "mutated-after-check" for p in result.problems)


# --- tensors are views inside their storage -------------------------------------------------------------

def _storage_record(genuine) -> tuple[str, int]:
    with zipfile.ZipFile(genuine) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    return info.filename.rsplit("/", 1)[1], info.file_size // 4


def _tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    pid = b"(" + S("storage") + G("torch", "FloatStorage") + S(key) + S("cpu") + I(numel) + b"tQ"
    return (PROTO + G("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + I(offset) + b"(" + b"".join(map(I, size))
            + b"t(" + b"".join(map(I, stride)) + b"t\x89" + G("collections", "OrderedDict") + b")Rt" + b"R.")


def test_a_tensor_with_zero_strides_over_a_small_storage_is_refused(genuine, tmp_path):
    key, numel = _storage_record(genuine)
    path = archive_with(genuine, tmp_path / "model-internals.pkl", _tensor(key, numel, 0, (5_000_000, 36), (0, 0)))
    # live: a 720 MB tensor over a storage of a few KB; any use of it (a copy, a matmul) allocates all of it
    show = ("import resource; print('CLAIMS', obj.numel() * obj.element_size()); "
            "resource.setrlimit(resource.RLIMIT_AS, (int(open('/proc/self/statm').read().split()[0]) * 4096 "
            "+ (256 << 20),) * 2)\ntry: obj.contiguous()\nexcept Exception as e: print('OVER', type(e).__name__)")
    out = live(path, show)
    assert measured(out, "CLAIMS") == 5_000_000 * 36 * 4 and "OVER" in out.stdout
    refused(path, "not the contiguous stride", ag_torchfix.DisallowedGlobalsError)


@pytest.mark.parametrize("offset, size, stride, match", [
    (0, (10, 10), (10, 1), None),  # genuine: contiguous, inside the storage
    (0, (1, 10), (1, 1), None),  # a size-1 dimension's stride is free (torch writes what the tensor had)
    (0, (10, 10), (1, 10), "not the contiguous stride"),
    (0, (10, 10), (0, 1), "not the contiguous stride"),
    (-1, (10,), (1,), "negative"),
    (0, (10,), (-1,), "negative"),
    (95, (10,), (1,), "outside its storage"),
    (0, (1 << 15, 1 << 14), (1 << 14, 1), "elements"),
    (0, (10,), (1, 1), "do not describe a tensor"),
])
def test_tensor_views_must_be_what_torch_save_writes(offset, size, stride, match):
    problem = policy._tensor_view_problem((_FakeStorage(100), offset, size, stride))
    assert (problem is None) if match is None else (match in problem), problem


def _FakeStorage(numel: int):
    storage = pickle_scan.Obj(None, ("storage", pickle_scan.Global("torch.FloatStorage"), "0", "cpu", numel), 0)
    storage.type = "storage"
    return storage


# --- genuine files are within every bound ----------------------------------------------------------------

def test_genuine_internals_are_far_below_every_bound(predictors, internals_of):
    for predictor in predictors.values():
        for path in sorted(predictor.rglob("model-internals.pkl")):
            with open(path, "rb") as fh:
                check = policy.check_internals(fh)
            assert check.judgement.ok, (path, check.judgement.constructs, check.judgement.error)
            assert check.scan.objects * 100 < policy.TORCH_LIMITS.objects
            assert check.scan.calls * 50 < policy.TORCH_LIMITS.calls
            assert check.scan.executed * 100 < policy.TORCH_LIMITS.opcodes


# --- copies of one string --------------------------------------------------------------------------------

def test_one_string_encoded_again_and_again_is_refused(genuine, tmp_path):
    """Each _codecs.encode(text, 'latin1') makes new bytes: a memoized 1 MB string encoded 100 times is 100 MB."""
    encode = G("_codecs", "encode")
    big = "a" * (1 << 20)
    items = [encode + S(big) + b"q\x01" + S("latin1") + b"\x86R"] + [encode + b"h\x01" + S("latin1") + b"\x86R"] * 99
    payload = PROTO + b"](" + b"".join(items) + b"e."
    path = archive_with(genuine, tmp_path / "model-internals.pkl", payload)
    assert measured(live(path), "GREW") > 90 << 20  # live: ~100x the payload
    refused(path, "copy more than", ag_torchfix.DisallowedGlobalsError)
