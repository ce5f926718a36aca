"""The static scanner against the real pickle module: same globals, every protocol, bounded failure."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import io
import pickle

import pytest

from ag_torchfix.formats import pickle_scan
from ag_torchfix.formats.pickle_scan import CALLED, CONSTRUCTED, REFERENCED, Limits, normalise_global, scan, scan_all


class Plain:
    def __init__(self):
        self.a, self.b = [1, 2.5, "x" * 300], {"k": (None, True, b"bytes" * 100)}


class Slotted:
    __slots__ = ("x",)

    def __init__(self):
        self.x = 3


SAMPLES = [
    {"ints": [0, 1, 255, 256, 65536, -1, 2**40, 2**200], "floats": [0.5, float("inf")], "s": "é" * 500},
    collections.OrderedDict(a=1, b=[1, 2]),
    collections.defaultdict(int, {"x": 1}),
    {1, 2, 3},
    frozenset({"a"}),
    bytearray(b"abc" * 100),
    (datetime.datetime(2020, 1, 2, 3, 4), datetime.timedelta(days=3), decimal.Decimal("1.5"), fractions.Fraction(1, 3)),
    Plain(),
    [Slotted(), Slotted()],
    [list, dict, len, print, collections.Counter],
]


def recorded_globals(data: bytes) -> set[str]:
    """What the real unpickler looks up, normalised the same way."""
    seen = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return {normalise_global(*g.rsplit(".", 1)) for g in seen}


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("sample", range(len(SAMPLES)))
def test_same_globals_as_the_real_unpickler(protocol, sample):
    if protocol < 2 and sample == 8:
        pytest.skip("__slots__ objects need protocol 2")
    data = pickle.dumps(SAMPLES[sample], protocol=protocol)
    result = scan(io.BytesIO(data))
    assert set(result.globals) == recorded_globals(data)
    assert result.problems == []


def test_uses_are_classified():
    data = pickle.dumps([collections.OrderedDict(a=1), Plain(), print], protocol=2)
    result = scan(io.BytesIO(data))
    assert CALLED in result.globals["collections.OrderedDict"]
    assert CONSTRUCTED in result.globals[f"{__name__}.Plain"]
    assert result.globals["builtins.print"] == {REFERENCED}
    built = [v for v in result.value if type(v) is pickle_scan.Obj]
    assert [b.made_by for b in built if b.built] == [f"{__name__}.Plain"]


def test_build_and_setitem_on_a_class_object_are_flagged():
    build = b"\x80\x02cfastai.tabular.core\nCategorify\nN}X\x07\x00\x00\x00encodescbuiltins\nprint\ns\x86b."
    setitem = b"\x80\x02ccollections\nOrderedDict\nX\x01\x00\x00\x00aK\x01s."
    assert [p.kind for p in scan(io.BytesIO(build)).problems] == ["build-on-global"]
    assert [p.kind for p in scan(io.BytesIO(setitem)).problems] == ["setitem-on-global"]


def test_calling_a_computed_object_is_flagged():
    # getattr(x, 'y')() : REDUCE whose callable was not loaded by name
    data = b"\x80\x02cbuiltins\ngetattr\nK\x01X\x04\x00\x00\x00real\x86R)R."
    assert [p.kind for p in scan(io.BytesIO(data)).problems] == ["call-non-global"]


def test_protocol_5_out_of_band_buffers_are_flagged():
    import pickle as p

    data = p.dumps(p.PickleBuffer(b"abc"), protocol=5, buffer_callback=lambda b: False)
    assert any(x.kind == "out-of-band-buffer" for x in scan(io.BytesIO(data)).problems)


@pytest.mark.parametrize("data, message", [
    (b"", "no STOP"),
    (b"\x80\x02}q\x00(X\x01\x00", "truncated"),
    (b"\x80\x02\xff.", "unknown opcode 0xff"),
    (b"\x80\x07N.", "unsupported pickle protocol 7"),
    (b"\x80\x02h\x05.", "memo key 5 read before it was written"),
    (b"\x80\x02c" + b"a" * 70000 + b"\nb\n.", "line argument longer"),
    (b"\x80\x02s.", "stack underflow"),
])
def test_unreadable_streams_report_an_error_and_never_raise(data, message):
    result = scan(io.BytesIO(data))
    assert result.error is not None and message in result.error


def test_findings_before_a_malformed_point_are_kept():
    """os.system is called at byte 45; a bad memo reference comes only after it."""
    data = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R" + b"h\x07."
    result = scan(data)
    assert "memo key 7" in result.error and CALLED in result.globals["posix.system"]


def test_huge_strings_are_skipped_not_kept():
    big = "x" * (8 << 20)
    data = pickle.dumps([big, big + "y"], protocol=4)
    result = scan(io.BytesIO(data))
    assert result.globals == {} and result.error is None


@pytest.mark.parametrize("spell", [lambda t: b"U" + bytes([len(t)]) + t,
                                   lambda t: b"T" + len(t).to_bytes(4, "little") + t,
                                   lambda t: b"S'" + t + b"'\n"], ids=["SHORT_BINSTRING", "BINSTRING", "STRING"])
def test_stack_global_names_in_byte_strings_decode_as_pickle_decodes_them(spell):
    """pickle decodes these opcodes' bytes (ASCII by default) and STACK_GLOBAL resolves the result: shown with the
    harmless builtins.len, then the scan must name posix.system spelled the same way."""
    def payload(module: bytes, name: bytes) -> bytes:
        return b"\x80\x04" + spell(module) + spell(name) + b"\x93X\x02\x00\x00\x00id\x85R."

    assert pickle.loads(payload(b"builtins", b"len")) == 2
    assert CALLED in scan(payload(b"posix", b"system")).globals["posix.system"]


def test_torch_legacy_format_is_read_pickle_by_pickle(tmp_path):
    import torch

    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(3.0)}, path, _use_new_zipfile_serialization=False)
    results = scan_all(pickle_scan.Reader(path.open("rb")), max_pickles=5)
    assert len(results) == 5 and not any(r.error for r in results)
    assert "torch._utils._rebuild_tensor_v2" in results[3].globals and results[4].value == [
        v for v in results[4].value]


def test_a_second_pickle_after_stop_is_scanned():
    data = pickle.dumps({"genuine": 1}, protocol=2) + b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."
    assert pickle.loads(data) == {"genuine": 1}  # pickle never reads it
    results = scan_all(data)
    assert len(results) == 2 and "posix.system" in results[1].globals


@pytest.mark.parametrize("data, message", [
    (b"\x80\x02" + b"(" * 20_000 + b".", "MARK nesting deeper"),
    (b"\x80\x04" + b"}\x94" * 200_000 + b".", "more objects, memo entries or calls than the bound"),
])
def test_stack_metastack_and_memo_are_bounded(data, message):
    result = scan(data, limits=Limits(objects=100_000, memo=100_000, depth=10_000, calls=100_000))
    assert result.error is not None and message in result.error
