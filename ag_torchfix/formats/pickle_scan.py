"""Read a pickle's opcodes without executing anything: a symbolic pickle machine.

It mirrors what ``pickle`` and torch's weights-only unpickler do opcode by opcode, but every value
is a symbol: plain data stays data (short strings, ints and bytes keep their values, tuples, lists
and dicts keep their items), a global becomes a ``Global``, and whatever calling one would make
becomes an ``Obj`` that remembers its maker and arguments.  That is enough to name every global
and how it is used (called, constructed, or only referenced), to spot constructs that turn
harmless names into gadgets (BUILD or SETITEM on a class object, calling something that was not
loaded by name), and to let a profile (``policy``) check each call's arguments and each BUILD's
state before the real unpickler ever sees the file.

Bounded by construction: opcodes executed (every push counts, NONE and BINGET included), objects
made, memo entries, MARK depth, container nesting and calls are capped (``Limits``); string and
byte payloads longer than ``Limits.keep`` are skipped, not kept; the input is read in windows.  The
machine never recurses and never hashes a value the file chose: a pickled dict is a real dict only
for plain ``str`` keys (hashed with Python's randomised string hash); every other key is wrapped in
a ``Key`` of its own (hashed by identity), so distinct keys are never merged (``1``, ``1.0`` and
``True``, two floats the scan cannot tell apart) and no file-chosen hash collides.  With a profile
(``rules``), each key is judged (``rules.key_problem``) and a container is frozen once a call or a
BUILD was checked with it: changing it afterwards is a problem.  A malformed stream never raises:
the result carries ``error`` and keeps every finding made before the bad point (a known danger
still counts).  A FRAME that ends inside an opcode (or begins inside another) is a problem: Python's unpickler and
the C one read such a file differently.  A list or dict used as a dict key (or set item) ends the scan, as it ends
the real unpickler.  Str and bytes constants can be offered to a ``Payloads`` (``nested`` looks for pickles in them).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import itertools
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

# How a global is used in the stream.
CALLED = "called"  # REDUCE / INST / OBJ target: func(*args)
CONSTRUCTED = "constructed"  # NEWOBJ / NEWOBJ_EX target: cls.__new__(cls, *args)
REFERENCED = "referenced"  # pushed and stored or passed along, never invoked by the unpickler

MAX_LINE = 1 << 16  # text arguments (GLOBAL, INT, ...) longer than this are refused

# Opcodes torch's weights-only unpickler executes (torch/_weights_only_unpickler.py); anything else
# makes it raise, so a file that needs one is not a weights-only file.
TORCH_WEIGHTS_ONLY_OPCODES = frozenset(
    b"c\x81Rbaeus(t\x85\x86\x87N\x89\x88)]}\x8fJKMGXUQhjqr\x8a\x80."
)
OPCODE_NAMES = {
    0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT",
    0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE", 0x50: "PERSID",
    0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING",
    0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT",
    0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET",
    0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT",
    0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO",
    0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3",
    0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4", 0x42: "BINBYTES", 0x43: "SHORT_BINBYTES",
    0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
    0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME",
    0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
}


@dataclass(frozen=True)
class Limits:
    """What one pickle may make.  Each bound keeps the scanner (and the unpickler after it) far below
    512 MiB for any input of 10 MB; genuine AutoGluon and fastai pickles use a tiny fraction."""

    objects: int = 3_000_000  # containers, strings and objects made (each ~50-100 bytes here)
    memo: int = 1_000_000
    depth: int = 10_000  # MARK nesting
    calls: int = 1_000_000  # REDUCE / NEWOBJ / BUILD
    keep: int = 256  # strings and bytes up to this length keep their value
    # Every opcode executed: each pushes at most one item (NONE, NEWTRUE, BININT, BINGET, DUP, MEMOIZE's
    # memo entry ...), so this bounds the stack, every container's entries and the memo together.  AutoGluon's
    # own pickles (strict mode, the scanner) are far below; 10M pushes cost this machine at most ~80 MB of
    # pointers (a pickle of 185M NONE opcodes, deflated 19:1 into 9.8 MB, used 1.6 GiB before this bound).
    opcodes: int = 10_000_000
    # Containers (tuples, lists, dicts, sets) nested in containers: CPython hashes a tuple key recursively in C
    # (a tuple 400k deep used as a dict key crashes the interpreter), and code walking the result recurses.
    nesting: int = 1_000


DEFAULT_LIMITS = Limits()


class ScanError(Exception):
    """The stream is not a readable pickle (truncated, unknown opcode, over a bound)."""


class _Stop(Exception):
    pass


@dataclass(frozen=True)
class Problem:
    """A construct a secure loader refuses whatever the names involved."""

    kind: str  # "build-on-global", "setitem-on-global", "call-non-global", "dunder-state", ...
    detail: str
    offset: int

    def __str__(self) -> str:
        return f"{self.detail} (at byte {self.offset})"


# --- symbols ----------------------------------------------------------------------------------------
# Plain data is itself: None, bool, int, short str/bytes, tuple, list, dict (keys and values are
# symbols), set (``SSet``).  Longer payloads, floats and huge ints collapse to the sentinels below.

class _Opaque:
    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"<{self.kind}>"


class LongStr(_Opaque):
    """A str payload the scan did not keep (longer than ``Limits.keep``, or across a read window): its size only
    (in bytes as pickled), so that a profile can bound what copies of it cost."""

    __slots__ = ("size",)

    def __init__(self, size: int, kind: str = "long str"):
        super().__init__(kind)
        self.size = size


class LongBytes(LongStr):
    """A bytes payload the scan did not keep: its size only."""

    __slots__ = ()

    def __init__(self, size: int):
        super().__init__(size, "long bytes")


NUMBER, BUFFER = _Opaque("number"), _Opaque("buffer")
LONGSTR, LONGBYTES = LongStr(-1), LongBytes(-1)  # of unknown size (the scan pushes its own, sized, instances)


class Global:
    """A global pushed by GLOBAL / STACK_GLOBAL / INST (one instance per name and scan)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<global {self.name}>"


class Obj:
    """What a call would make: ``made_by`` (a global's name, or None when the callable was computed),
    its ``args``, the runtime ``type`` if a profile could tell it, and what BUILD / SETITEM(S) did."""

    __slots__ = ("made_by", "args", "type", "items", "built", "offset", "passed", "state")

    def __init__(self, made_by: str | None, args, offset: int):
        self.made_by = made_by
        self.args = args
        self.type: str | None = None
        self.items: dict | None = None  # SETITEM(S) on it (dict-like objects)
        self.built = 0  # how many BUILDs it received
        self.offset = offset
        self.passed = False  # given to a call as an argument (a profile may refuse changing it afterwards)
        self.state = None  # what its first BUILD gave it

    def __repr__(self) -> str:
        return f"<object from {self.made_by}>"


class SSet(list):
    """A pickled set or frozenset (EMPTY_SET, FROZENSET): its items, in order."""

    __slots__ = ()


class Key:
    """A dict key that is not a plain ``str``, as the scan keeps it: hashed by identity (never by a value the
    file chose) and distinct from every other key, even an equal one (the real unpickler merges ``1``, ``1.0``
    and ``True``; the scan keeps every value, so it checks every value the real dict could hold)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return f"<key {self.value!r}>"


def unkey(key):
    """A dict key as the file wrote it (a ``Key``'s value; ``str`` keys are themselves)."""
    return key.value if type(key) is Key else key


def is_dunder(key) -> bool:
    return type(key) is str and len(key) > 4 and key[:2] == "__" and key[-2:] == "__"


@dataclass
class ScanResult:
    protocol: int = 0
    globals: dict[str, set[str]] = field(default_factory=dict)  # normalised dotted name -> uses
    problems: list[Problem] = field(default_factory=list)
    opcodes: set[int] = field(default_factory=set)
    error: str | None = None  # why the stream is unreadable (findings before it are kept)
    start: int = 0  # stream offset where this pickle starts
    end: int = 0  # offset just after STOP (or where reading stopped)
    value: object = None  # the symbol STOP returned
    objects: int = 0
    calls: int = 0
    executed: int = 0  # opcodes run

    def problem(self, kind: str, detail: str, offset: int) -> None:
        if len(self.problems) < 100:
            self.problems.append(Problem(kind, detail, offset))

    def unsupported_by_torch(self) -> list[str]:
        return sorted(OPCODE_NAMES.get(c, f"0x{c:02x}") for c in self.opcodes if c not in TORCH_WEIGHTS_ONLY_OPCODES)


def normalise_global(module: str, name: str) -> str:
    """Map Python-2 names the way torch's weights-only unpickler and ``pickle`` (fix_imports) do."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


# --- input --------------------------------------------------------------------------------------------

class Reader:
    """Exact-position windows over a binary stream.  Consecutive pickles (torch's legacy format, data
    appended after STOP) are scanned from the same Reader: each scan ends exactly after its STOP."""

    CHUNK = 1 << 20
    STEP = 1 << 16
    LOOKAHEAD = 2 * MAX_LINE + 64  # fixed-size arguments and text lines always fit in the window

    def __init__(self, stream: BinaryIO | bytes):
        if isinstance(stream, (bytes, bytearray, memoryview)):
            self._read = None
            self.buf = bytes(stream)
            self.eof = True
        else:
            self._read = stream.read
            self.buf = b""
            self.eof = False
        self.base = 0  # stream offset of buf[0]
        self.pos = 0  # index into buf of the next unread byte

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def at_end(self) -> bool:
        if self.pos < len(self.buf):
            return False
        self.fill(self.pos)
        return self.pos >= len(self.buf)

    def fill(self, i: int) -> tuple[bytes, int, int]:
        """Drop consumed bytes and read more when needed; returns (buf, i, limit): opcodes starting
        before limit fit in buf.  limit is at most STEP ahead, so that the caller checks its bounds
        at least every STEP bytes."""
        if not self.eof and len(self.buf) - i < self.CHUNK:
            more = self._read_more(self.CHUNK)
            if not more:
                self.eof = True
            self.base += i
            self.buf = self.buf[i:] + more
            i = 0
        hard = len(self.buf) if self.eof else len(self.buf) - self.LOOKAHEAD
        return self.buf, i, min(hard, i + self.STEP)

    def _read_more(self, n: int) -> bytes:
        try:
            return self._read(n)
        except ScanError:
            raise
        except Exception as exc:  # a decompressor or file that fails mid-stream (zlib, lzma, EOFError, OSError)
            raise ScanError(f"the stream cannot be read past byte {self.base + len(self.buf)} "
                            f"({type(exc).__name__}: {str(exc)[:120]})") from None

    def peek(self, i: int, n: int) -> bytes:
        """Up to ``n`` bytes from buf[i] without consuming them, reading more of the stream into the window when
        needed (the caller bounds ``n``): a payload kept for ``Payloads``."""
        while len(self.buf) - i < n and self._read is not None and not self.eof:
            more = self._read_more(max(self.CHUNK, n - (len(self.buf) - i)))
            if not more:
                self.eof = True
                break
            self.buf += more
        return self.buf[i:i + n]

    def skip(self, i: int, n: int) -> tuple[bytes, int, int]:
        """Advance past n payload bytes starting at buf[i] without keeping them."""
        available = len(self.buf) - i
        if n <= available:
            return self.fill(i + n)
        if self._read is None:
            raise ScanError(f"truncated pickle: payload of {n} bytes ends early at byte {self.base + len(self.buf)}")
        n -= available
        self.base += len(self.buf)
        self.buf = b""
        while n > 0:
            chunk = self._read_more(min(n, self.CHUNK))
            if not chunk:
                self.eof = True
                raise ScanError(f"truncated pickle: payload ends early at byte {self.base}")
            n -= len(chunk)
            self.base += len(chunk)
        return self.fill(0)


_I4 = struct.Struct("<i")
_U2 = struct.Struct("<H")
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
_EXT_SIZE = {0x82: 1, 0x83: 2, 0x84: 4}
_CONTAINERS = frozenset((tuple, list, dict, SSet))
_MUTATOR_NAMES = {0x62: "BUILD", 0x73: "SETITEM", 0x75: "SETITEMS", 0x61: "APPEND", 0x65: "APPENDS", 0x90: "ADDITEMS"}


MAX_DUPS = 64  # DUP opcodes in one pickle before it counts as an expansion pattern (picklers write none)
MAX_SELF_HELD = 1  # times a container may be put into itself (a list holding itself once is legal Python)


def scan(source: BinaryIO | bytes | Reader, *, rules=None, limits: Limits = DEFAULT_LIMITS,
         payloads: Payloads | None = None) -> ScanResult:
    """Scan one pickle, up to and including its STOP opcode.  Never raises for bad input: the result's
    ``error`` says why the stream is unreadable, and everything found before that point is kept.

    ``rules`` (see ``policy``) is told about every call, BUILD and persistent id as it happens; it may
    type objects and record problems.  Without it only the profile-free checks run.  ``payloads`` is offered
    every str and bytes constant of at least ``payloads.min_size`` bytes (what the stack holds does not change).
    """
    reader = source if isinstance(source, Reader) else Reader(source)
    res = ScanResult(start=reader.offset)
    seen = bytearray(256)  # the opcodes torch's weights-only unpickler lacks, as met (``unsupported_by_torch``)
    try:
        _run(reader, res, seen, rules, limits, payloads)
    except _Stop:
        pass
    except ScanError as exc:
        res.error = str(exc)
    except IndexError:
        res.error = f"malformed pickle: stack underflow or missing MARK near byte {reader.offset}"
    except KeyError as exc:
        res.error = f"memo key {exc.args[0]!r} read before it was written (near byte {reader.offset})"
    except struct.error:
        res.error = f"truncated pickle near byte {reader.offset}"
    except (TypeError, ValueError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as exc:
        res.error = f"malformed pickle near byte {reader.offset} ({type(exc).__name__}: {str(exc)[:120]})"
    res.end = reader.offset
    res.opcodes = set(itertools.compress(range(256), seen))
    return res


def _run(reader: Reader, res: ScanResult, seen: bytearray, rules, limits: Limits, payloads) -> None:
    buf, i, limit = reader.fill(reader.pos)
    end = len(buf)
    globals_ = res.globals
    interned: dict[str, Global] = {}
    stack: list = []
    metastack: list[list] = []
    memo: dict[int, object] = {}
    push = stack.append
    u4 = _U4.unpack_from
    keep = limits.keep
    max_objects, max_memo, max_depth, max_calls = limits.objects, limits.memo, limits.depth, limits.calls
    max_ops, max_nesting = limits.opcodes, limits.nesting
    objects = calls = ops = dups = 0
    self_held = [0]  # containers put into themselves
    pmin = payloads.min_size if payloads is not None else 0
    offer = payloads.offer if payloads is not None else None
    # The stream offset where the current FRAME ends (None: outside one).  ``limit`` never passes it, so the window
    # check below sees every frame end: an opcode may end exactly there, not past it (Python's unpickler refuses an
    # opcode that runs past its frame, the C one reads on: two readings of one file; pickle never writes one).
    frame_end = None
    # Nesting of containers that hold containers (id -> depth; ``held`` keeps them alive, so no id is reused).
    # A container's depth is taken when items go into it: one pass per item, never a walk of the graph.  A list or
    # dict filled after it went into another container does not deepen that one's count; what CPython hashes
    # recursively are tuples, which never change after they are made, and a checked container is frozen.
    # Objects (``Obj``) are not containers here: their arguments and states are, each bounded on its own.
    deep: dict[int, int] = {}
    held: list = []
    # With a profile: containers a call or a BUILD was checked with (id -> the container, kept alive).
    frozen: dict[int, object] | None = {} if rules is not None else None

    def nested(container, items) -> None:
        d = 1
        for x in items:
            t = type(x)
            if t is tuple or t is list or t is dict or t is SSet:
                if x is container:
                    self_held[0] += 1
                    if self_held[0] == MAX_SELF_HELD + 1:
                        res.problem("expansion", "containers put into themselves more than once (each walk of one "
                                    "visits it again; no genuine file has one)", reader.base + i - 1)
                dx = deep.get(id(x), 1) + 1
                if dx > d:
                    d = dx
        if d > 1 and d > deep.get(id(container), 1):
            if d > max_nesting:
                raise ScanError(f"containers nested deeper than {max_nesting} (tuples, lists, dicts, sets)")
            if id(container) not in deep:
                held.append(container)
            deep[id(container)] = d

    def freeze(value) -> None:
        """Mark every container reachable from a checked value (through containers) as checked."""
        if type(value) is tuple:  # the commonest: an argument tuple of plain values (nothing to freeze)
            for x in value:
                if type(x) in _CONTAINERS:
                    break
            else:
                return
        todo = [value]
        while todo:
            v = todo.pop()
            t = type(v)
            if t is tuple or t is list or t is SSet or t is dict:
                if id(v) in frozen:
                    continue
                frozen[id(v)] = v
                if t is dict:
                    for k, x in v.items():
                        todo.append(k.value if type(k) is Key else k)
                        todo.append(x)
                else:
                    todo.extend(v)

    def mutable(target, c: int, offset: int) -> bool:
        """Whether the file may still change ``target`` (it was not checked yet)."""
        if frozen is not None and id(target) in frozen:
            res.problem("mutated-after-check", f"{_MUTATOR_NAMES.get(c, OPCODE_NAMES.get(c, '?'))} on "
                        f"{_describe(target)} after a call or a BUILD was checked with it (the check is past)", offset)
            return False
        return True

    def setitems(target, items, offset: int, c: int) -> None:
        if type(target) is dict:
            if not mutable(target, c, offset):
                return
            nested(target, items)
            dest = target
        elif type(target) is Obj:
            if target.items is None:
                target.items = {}
            dest = target.items
        else:
            _mutator_problem(res, target, c, offset)
            return
        for k in range(0, len(items), 2):
            key = items[k]
            if type(key) is not str:
                if dest is target and (type(key) is list or type(key) is dict):
                    raise ScanError(f"{_describe(key)} used as a dict key at byte {offset}: it is unhashable, so the "
                                    "unpickler fails there")
                if rules is not None:
                    problem = rules.key_problem(key)
                    if problem:
                        res.problem("dict-key", f"{_MUTATOR_NAMES.get(c, OPCODE_NAMES.get(c, '?'))} with the key "
                                    f"{_describe(key)}: {problem}", offset)
                key = Key(key)
            dest[key] = items[k + 1]

    def glob(full: str) -> Global:
        g = interned.get(full)
        if g is None:
            g = interned[full] = Global(full)
            globals_.setdefault(full, set()).add(REFERENCED)
        return g

    def call(func, args, use: str, opname: str, offset: int) -> Obj:
        if type(func) is Global:
            globals_[func.name].add(use)
            obj = Obj(func.name, args, offset)
        else:
            res.problem("call-non-global", f"{opname} on {_describe(func)} that was not loaded by name", offset)
            obj = Obj(None, args, offset)
        if rules is not None:
            rules.call(opname, func, args, obj, offset)
            freeze(args)
        return obj

    try:
        while True:
            if i >= limit:
                reader.pos = i
                buf, i, limit = reader.fill(i)
                end = len(buf)
                if frame_end is not None:
                    if reader.base + i > frame_end:
                        res.problem("frame", "a FRAME ends inside an opcode (pickle never writes that; Python's "
                                    "unpickler and the C one can read it differently)", frame_end)
                        frame_end = None
                    elif reader.base + i == frame_end:
                        frame_end = None
                    elif frame_end - reader.base < limit:
                        limit = frame_end - reader.base
                if objects > max_objects or len(memo) > max_memo or calls > max_calls:
                    raise ScanError(f"pickle makes more objects, memo entries or calls than the bound "
                                    f"({max_objects} / {max_memo} / {max_calls}); refused near byte {reader.base + i}")
                if ops > max_ops:
                    raise ScanError(f"pickle executes more than {max_ops} opcodes (every push counts); refused near "
                                    f"byte {reader.base + i}")
                if i >= end:
                    raise ScanError(f"truncated pickle: no STOP opcode (ended at byte {reader.base + i})")
            c = buf[i]
            i += 1
            ops += 1
            if c == 0x72:  # LONG_BINPUT (the commonest opcodes first)
                memo[u4(buf, i)[0]] = stack[-1]
                i += 4
            elif c == 0x6A:  # LONG_BINGET
                push(memo[u4(buf, i)[0]])
                i += 4
            elif c == 0x52:  # REDUCE
                calls += 1
                args = stack.pop()
                func = stack[-1]
                if type(func) is Global:
                    globals_[func.name].add(CALLED)
                    obj = stack[-1] = Obj(func.name, args, reader.base + i - 1)
                    if rules is not None:
                        rules.call("REDUCE", func, args, obj, reader.base + i - 1)
                        if args:
                            freeze(args)
                else:
                    stack[-1] = call(func, args, CALLED, "REDUCE", reader.base + i - 1)
            elif c == 0x4A:  # BININT
                push(_I4.unpack_from(buf, i)[0])
                i += 4
            elif c == 0x4B:  # BININT1
                push(buf[i])
                i += 1
            elif c == 0x8A:  # LONG1 (ints past 32 bits: values no rule needs)
                i += 1 + buf[i]
                push(NUMBER)
                if i > end:
                    raise ScanError(f"truncated pickle at byte {reader.base + i}")
            elif c == 0x29:  # EMPTY_TUPLE
                push(())
            elif c == 0x71:  # BINPUT
                memo[buf[i]] = stack[-1]
                i += 1
            elif c == 0x68:  # BINGET
                push(memo[buf[i]])
                i += 1
            elif c == 0x58 or c == 0x8C or c == 0x8D:  # BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                if c == 0x58:
                    n = u4(buf, i)[0]
                    i += 4
                elif c == 0x8C:
                    seen[c] = 1
                    n = buf[i]
                    i += 1
                else:
                    seen[c] = 1
                    n = _U8.unpack_from(buf, i)[0]
                    i += 8
                objects += 1
                if n <= keep and i + n <= end:
                    if offer is not None and n >= pmin:
                        offer(True, buf[i:i + n], n, reader.base + i - 1 - _COUNT_SIZE[c])
                    push(buf[i:i + n].decode("utf-8", "surrogatepass"))
                    i += n
                else:
                    if offer is not None and n >= pmin:
                        _offer(payloads, reader, buf, i, n, True, c)
                    reader.pos = i
                    buf, i, limit = reader.skip(i, n)
                    if frame_end is not None and frame_end - reader.base < limit:
                        limit = max(frame_end - reader.base, 0)
                    end = len(buf)
                    push(LongStr(n))
            elif c == 0x28:  # MARK
                metastack.append(stack)
                if len(metastack) > max_depth:
                    raise ScanError(f"MARK nesting deeper than {max_depth} (at byte {reader.base + i - 1})")
                stack = []
                push = stack.append
                objects += 1
            elif c == 0x7D:  # EMPTY_DICT
                push({})
                objects += 1
            elif c == 0x75 or c == 0x73:  # SETITEMS, SETITEM
                if c == 0x75:
                    items = stack
                    stack = metastack.pop()
                    push = stack.append
                else:
                    items = stack[-2:]
                    if len(items) != 2:
                        raise IndexError
                    del stack[-2:]
                if len(items) % 2:
                    raise ScanError(f"odd number of items for SETITEMS at byte {reader.base + i - 1}")
                if rules is not None and type(stack[-1]) is Obj:
                    rules.setitems(stack[-1], reader.base + i - 1)
                setitems(stack[-1], items, reader.base + i - 1, c)
            elif c == 0x62:  # BUILD
                calls += 1
                state = stack.pop()
                inst = stack[-1]
                if type(inst) is Global:
                    res.problem("build-on-global", f"BUILD on the class or function object {inst.name} itself", reader.base + i - 1)
                elif type(inst) is Obj:
                    inst.built += 1
                    if inst.built == 1:
                        inst.state = state
                    if rules is not None:
                        rules.build(inst, state, reader.base + i - 1)
                        freeze(state)
                else:
                    res.problem("build-on-data", f"BUILD on {_describe(inst)}", reader.base + i - 1)
            elif c == 0x88 or c == 0x89 or c == 0x4E:  # NEWTRUE, NEWFALSE, NONE
                push(True if c == 0x88 else False if c == 0x89 else None)
            elif c == 0x85 or c == 0x86 or c == 0x87:  # TUPLE1, TUPLE2, TUPLE3
                n = c - 0x84
                if len(stack) < n:
                    raise IndexError
                t = tuple(stack[-n:])
                del stack[-n:]
                push(t)
                for x in t:
                    if type(x) in _CONTAINERS:
                        nested(t, t)
                        break
                objects += 1
            elif c == 0x74:  # TUPLE
                items = stack
                stack = metastack.pop()
                push = stack.append
                t = tuple(items)
                push(t)
                nested(t, t)
            elif c == 0x81 or c == 0x92:  # NEWOBJ, NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
                calls += 1
                if c == 0x92:
                    seen[c] = 1
                    kwargs = stack.pop()
                    args = stack.pop()
                    if kwargs:
                        args = (args, kwargs)
                else:
                    args = stack.pop()
                stack[-1] = call(stack[-1], args, CONSTRUCTED, "NEWOBJ" if c == 0x81 else "NEWOBJ_EX",
                                 reader.base + i - 1)
                objects += 1
            elif c == 0x63 or c == 0x69:  # GLOBAL, INST
                module, i = _line(buf, i, reader, "utf-8" if c == 0x63 else "ascii")
                name, i = _line(buf, i, reader, "utf-8" if c == 0x63 else "ascii")
                g = glob(normalise_global(module, name))
                if c == 0x63:
                    push(g)
                else:
                    seen[c] = 1
                    calls += 1
                    args = tuple(stack)
                    stack = metastack.pop()
                    push = stack.append
                    push(call(g, args, CALLED, "INST", reader.base + i - 1))
                    objects += 1
            elif c == 0x5D:  # EMPTY_LIST
                push([])
                objects += 1
            elif c == 0x65 or c == 0x61:  # APPENDS, APPEND
                if c == 0x65:
                    items = stack
                    stack = metastack.pop()
                    push = stack.append
                else:
                    items = [stack.pop()]
                target = stack[-1]
                if type(target) is list:
                    if mutable(target, c, reader.base + i - 1):
                        nested(target, items)
                        target.extend(items)
                else:
                    _mutator_problem(res, target, c, reader.base + i - 1)
            elif c == 0x4D:  # BININT2
                push(_U2.unpack_from(buf, i)[0])
                i += 2
            elif c == 0x47:  # BINFLOAT
                push(NUMBER)
                i += 8
            elif c == 0x51:  # BINPERSID
                seen[c] = 1
                pid = stack[-1]
                stack[-1] = (Obj("persistent id", pid, reader.base + i - 1) if rules is None
                             else rules.persistent(pid, reader.base + i - 1))
            elif c == 0x80:  # PROTO
                seen[c] = 1
                if ops != 1:  # picklers write it first, once: a second one is a structure no writer makes
                    res.problem("proto", "a PROTO opcode after the first opcode of the pickle (no pickler writes one)",
                                reader.base + i - 1)
                res.protocol = buf[i]
                i += 1
                if res.protocol > 5:
                    raise ScanError(f"unsupported pickle protocol {res.protocol}")
            elif c == 0x2E:  # STOP
                res.value = stack.pop()
                raise _Stop
            elif c == 0x93:  # STACK_GLOBAL
                seen[c] = 1
                name = stack.pop()
                module = stack[-1]
                if type(module) is str and type(name) is str:
                    stack[-1] = glob(f"{module}.{name}")
                else:
                    res.problem("stack-global", "STACK_GLOBAL with a computed or over-long module or name", reader.base + i - 1)
                    stack[-1] = Global("?")
            elif c == 0x94:  # MEMOIZE
                seen[c] = 1
                memo[len(memo)] = stack[-1]
            elif c == 0x95:  # FRAME (only buffering)
                seen[c] = 1
                if frame_end is not None:
                    res.problem("frame", "a FRAME begins inside the previous one (Python's unpickler refuses that)",
                                reader.base + i - 1)
                frame_end = reader.base + i + 8 + _U8.unpack_from(buf, i)[0]
                i += 8
                if frame_end - reader.base < limit:
                    limit = frame_end - reader.base
            elif c == 0x30:  # POP
                seen[c] = 1
                if stack:
                    stack.pop()
                else:
                    stack = metastack.pop()
                    push = stack.append
            elif c == 0x31:  # POP_MARK
                seen[c] = 1
                stack = metastack.pop()
                push = stack.append
            elif c == 0x32:  # DUP
                seen[c] = 1
                push(stack[-1])
                dups += 1
                if dups == MAX_DUPS + 1:  # CPython's picklers never write DUP: many copies of one object expand it
                    res.problem("expansion", f"more than {MAX_DUPS} DUP opcodes (one object referenced again and "
                                "again; no pickler writes DUP)", reader.base + i - 1)
            elif c == 0x64 or c == 0x6C:  # DICT, LIST
                items = stack
                stack = metastack.pop()
                push = stack.append
                seen[c] = 1
                if c == 0x6C:
                    push(items)
                    nested(items, items)
                else:
                    d = {}
                    if len(items) % 2:
                        raise ScanError(f"odd number of items for DICT at byte {reader.base + i - 1}")
                    setitems(d, items, reader.base + i - 1, c)
                    push(d)
            elif c == 0x8F:  # EMPTY_SET
                seen[c] = 1
                push(SSet())
                objects += 1
            elif c == 0x90:  # ADDITEMS
                seen[c] = 1
                items = stack
                stack = metastack.pop()
                push = stack.append
                target = stack[-1]
                if type(target) is SSet:
                    for x in items:
                        if x is target or type(x) is list or type(x) is dict:
                            what = "a set added to itself" if x is target else f"{_describe(x)} added to a set"
                            raise ScanError(f"{what} at byte {reader.base + i - 1}: it is unhashable, so the "
                                            "unpickler fails there")
                    if mutable(target, c, reader.base + i - 1):
                        nested(target, items)
                        target.extend(items)
                else:
                    _mutator_problem(res, target, c, reader.base + i - 1)
            elif c == 0x91:  # FROZENSET
                seen[c] = 1
                items = stack
                stack = metastack.pop()
                push = stack.append
                t = SSet(items)
                push(t)
                nested(t, t)
            elif c == 0x6F:  # OBJ: cls(*args) with cls the first item after MARK
                seen[c] = 1
                calls += 1
                items = stack
                stack = metastack.pop()
                push = stack.append
                if not items:
                    raise IndexError
                push(call(items[0], tuple(items[1:]), CALLED, "OBJ", reader.base + i - 1))
                objects += 1
            elif c == 0x55 or c == 0x54 or c == 0x53:  # SHORT_BINSTRING, BINSTRING, STRING
                seen[c] = 1
                if c == 0x53:
                    text, i = _line(buf, i, reader, None)
                    if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b'"', b"'"):
                        raise ScanError(f"the STRING opcode argument must be quoted (at byte {reader.base + i - 1})")
                    value = codecs.escape_decode(text[1:-1])[0]
                    if offer is not None and len(value) >= pmin:
                        offer(False, value, len(value), reader.base + i - len(text) - 2)
                    push(_pickle_str(value, keep))
                    objects += 1
                    continue
                if c == 0x55:
                    n = buf[i]
                    i += 1
                else:
                    n = _I4.unpack_from(buf, i)[0]
                    i += 4
                    if n < 0:
                        raise ScanError(f"BINSTRING with a negative byte count at byte {reader.base + i - 1}")
                objects += 1
                if n <= keep and i + n <= end:
                    if offer is not None and n >= pmin:
                        offer(False, buf[i:i + n], n, reader.base + i - 1 - _COUNT_SIZE[c])
                    push(_pickle_str(buf[i:i + n], keep))
                    i += n
                else:
                    if offer is not None and n >= pmin:
                        _offer(payloads, reader, buf, i, n, False, c)
                    reader.pos = i
                    buf, i, limit = reader.skip(i, n)
                    if frame_end is not None and frame_end - reader.base < limit:
                        limit = max(frame_end - reader.base, 0)
                    end = len(buf)
                    push(LongStr(n))
            elif c == 0x43 or c == 0x42 or c == 0x8E or c == 0x96:  # SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                seen[c] = 1
                if c == 0x43:
                    n = buf[i]
                    i += 1
                elif c == 0x42:
                    n = u4(buf, i)[0]
                    i += 4
                else:
                    n = _U8.unpack_from(buf, i)[0]
                    i += 8
                objects += 1
                if n <= keep and i + n <= end and c != 0x96:
                    if offer is not None and n >= pmin:
                        offer(False, buf[i:i + n], n, reader.base + i - 1 - _COUNT_SIZE[c])
                    push(bytes(buf[i:i + n]))
                    i += n
                else:
                    if offer is not None and n >= pmin:
                        _offer(payloads, reader, buf, i, n, False, c)
                    reader.pos = i
                    buf, i, limit = reader.skip(i, n)
                    if frame_end is not None and frame_end - reader.base < limit:
                        limit = max(frame_end - reader.base, 0)
                    end = len(buf)
                    push(LongBytes(n))
            elif c == 0x8B:  # LONG4
                seen[c] = 1
                n = _I4.unpack_from(buf, i)[0]
                i += 4
                if n < 0:
                    raise ScanError(f"LONG4 with a negative byte count at byte {reader.base + i - 1}")
                reader.pos = i
                buf, i, limit = reader.skip(i, n)
                if frame_end is not None and frame_end - reader.base < limit:
                    limit = max(frame_end - reader.base, 0)
                end = len(buf)
                push(NUMBER)
            elif c == 0x49 or c == 0x4C:  # INT, LONG (text)
                seen[c] = 1
                text, i = _line(buf, i, reader, None)
                if c == 0x49 and text in (b"00", b"01"):
                    push(text == b"01")
                else:
                    digits = text[:-1] if c == 0x4C and text[-1:] == b"L" else text
                    push(int(digits, 0) if len(digits) <= 40 else NUMBER)
            elif c == 0x46:  # FLOAT (text)
                seen[c] = 1
                text, i = _line(buf, i, reader, None)
                float(text)
                push(NUMBER)
            elif c == 0x56:  # UNICODE (raw-unicode-escape text)
                seen[c] = 1
                text, i = _line(buf, i, reader, None)
                objects += 1
                if offer is not None and len(text) >= pmin:
                    offer(True, text, len(text), reader.base + i - len(text) - 2)
                push(str(text, "raw-unicode-escape") if len(text) <= keep else LongStr(len(text)))
            elif c == 0x70 or c == 0x67:  # PUT, GET (text index)
                seen[c] = 1
                text, i = _line(buf, i, reader, None)
                idx = int(text)
                if not 0 <= idx < 1 << 32:  # memo keys below 2**32 have distinct hashes (and pickle writes no more)
                    raise ScanError(f"memo index {text[:20]!r} out of range at byte {reader.base + i - 1}")
                if c == 0x70:
                    memo[idx] = stack[-1]
                else:
                    push(memo[idx])
            elif c == 0x50:  # PERSID (text)
                seen[c] = 1
                text, i = _line(buf, i, reader, "ascii")
                push(Obj("persistent id", text, reader.base + i - 1) if rules is None
                     else rules.persistent(text, reader.base + i - 1))
            elif c in _EXT_SIZE:  # EXT1, EXT2, EXT4: copyreg's extension registry
                seen[c] = 1
                i += _EXT_SIZE[c]
                res.problem("extension", "copyreg extension code (EXT opcode): a global named by number", reader.base + i - 1)
                push(Global("?"))
            elif c == 0x97:  # NEXT_BUFFER
                seen[c] = 1
                res.problem("out-of-band-buffer", "protocol 5 out-of-band buffer (NEXT_BUFFER)", reader.base + i - 1)
                push(BUFFER)
            elif c == 0x98:  # READONLY_BUFFER
                seen[c] = 1
                stack[-1]
            else:
                raise ScanError(f"unknown opcode 0x{c:02x} at byte {reader.base + i - 1}")
    finally:
        reader.pos = min(i, len(reader.buf))
        res.objects, res.calls, res.executed = objects, calls, ops


def _mutator_problem(res: ScanResult, target, c: int, offset: int) -> None:
    opname = _MUTATOR_NAMES.get(c, OPCODE_NAMES.get(c, "?"))
    if type(target) is Global:
        kind = "setitem-on-global" if c in (0x73, 0x75, 0x64) else "append-on-global"
        res.problem(kind, f"{opname} on the class or function object {target.name} itself", offset)
    elif type(target) is Obj:
        res.problem("append-on-object" if c not in (0x73, 0x75) else "setitem-on-object",
                    f"{opname} on an object made by {target.made_by} (calls its own append/extend/add)", offset)
    else:
        res.problem("mutate-data", f"{opname} on {_describe(target)}", offset)


# Bytes of argument before a counted payload (the count), per opcode: where the opcode starts.
_COUNT_SIZE = {0x58: 4, 0x8C: 1, 0x8D: 8, 0x55: 1, 0x54: 4, 0x43: 1, 0x42: 4, 0x8E: 8, 0x96: 8}


class Payloads:
    """What ``scan`` offers str and bytes constants to (``formats.nested`` looks for pickles in them).
    ``offer(text, head, size, offset)`` gets the payload (or its first ``HEAD`` bytes when it is longer; ``text``:
    a str constant, as UTF-8 or raw-unicode-escape bytes) and the opcode's stream offset.  When ``head`` is the
    whole payload the offer keeps what it wants itself and returns 0; otherwise it returns how many of the
    payload's first bytes it wants (0: none), and ``keep(text, data, size, offset)`` receives them.  Bounding what
    it keeps is the offer's business."""

    HEAD = 4096
    min_size = 6

    def offer(self, text: bool, head: bytes, size: int, offset: int) -> int:  # pragma: no cover - interface
        return 0

    def keep(self, text: bool, data: bytes, size: int, offset: int) -> None:  # pragma: no cover - interface
        pass


def _offer(payloads: Payloads, reader: Reader, buf: bytes, i: int, n: int, text: bool, c: int) -> None:
    """Offer the counted payload at buf[i:i + n] (opcode ``c``) to ``payloads``."""
    offset = reader.base + i - 1 - _COUNT_SIZE[c]
    want = payloads.offer(text, buf[i:i + min(n, Payloads.HEAD)], n, offset)
    if want:
        payloads.keep(text, reader.peek(i, min(want, n)), n, offset)


def _pickle_str(data: bytes, keep: int):
    """STRING/BINSTRING/SHORT_BINSTRING as pickle decodes them by default (ASCII; latin-1 also covers
    encoding='latin1' readers such as numpy's).  torch decodes them as UTF-8; names are ASCII either way."""
    if len(data) > keep:
        return LongStr(len(data))
    return data.decode("latin-1")


def _describe(value) -> str:
    if type(value) is Global:
        return f"the global {value.name}"
    if type(value) is Obj:
        return f"an object made by {value.made_by}" if value.made_by else "a computed object"
    if type(value) is Key:
        return _describe(value.value)
    return {list: "a list", dict: "a dict", SSet: "a set", tuple: "a tuple", str: "a string", int: "an int",
            bool: "a bool", type(None): "None", bytes: "bytes"}.get(type(value), "plain data" if type(value) is not _Opaque
                                                                     else f"a {value.kind}")


def _line(buf: bytes, i: int, reader: Reader, encoding: str | None):
    j = buf.find(b"\n", i, i + MAX_LINE + 1)
    if j < 0:
        if len(buf) - i > MAX_LINE:
            raise ScanError(f"line argument longer than {MAX_LINE} bytes at byte {reader.base + i}")
        raise ScanError(f"truncated pickle: unterminated line at byte {reader.base + i}")
    raw = buf[i:j]
    if encoding is None:
        return raw, j + 1
    return raw.decode(encoding), j + 1


def scan_all(source: BinaryIO | bytes | Reader, *, rules=None, limits: Limits = DEFAULT_LIMITS,
             max_pickles: int = 64, payloads: Payloads | None = None) -> list[ScanResult]:
    """Every pickle in a stream, one after the other (torch's legacy format, or data appended after
    STOP), until the end of the stream or the first part that is not a readable pickle (its result,
    with ``error`` set, is the last one)."""
    reader = source if isinstance(source, Reader) else Reader(source)
    results = [scan(reader, rules=rules, limits=limits, payloads=payloads)]
    while results[-1].error is None and len(results) < max_pickles and not reader.at_end():
        results.append(scan(reader, rules=rules, limits=limits, payloads=payloads))
    return results
