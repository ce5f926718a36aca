"""The static scanner against the real pickle module: same globals, every protocol, bounded failure."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import io
import pickle

import pytest

from ag_torchfix.pickle_scan import CALLED, CONSTRUCTED, REFERENCED, ScanError, normalise_global, scan


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
    assert f"{__name__}.Plain" in result.built


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
def test_unreadable_streams_raise_scan_error(data, message):
    with pytest.raises(ScanError, match=message):
        scan(io.BytesIO(data))


def test_huge_strings_are_skipped_not_kept():
    big = "x" * (8 << 20)
    data = pickle.dumps([big, big + "y"], protocol=4)
    result = scan(io.BytesIO(data))
    assert result.globals == {}
