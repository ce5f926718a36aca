"""Read a pickle's opcodes without executing anything: what it references and how.

The loader runs this before ``torch.load`` so that a refusal names *every* disallowed global at
once (torch stops at the first) and so that nothing from a refused file runs.  It is a small
symbolic pickle machine: it tracks, for each stack slot, whether it holds a global, an object
made by calling one, or plain data, which is enough to tell how each global is used (called,
constructed, or only referenced) and to spot constructs that turn harmless names into gadgets
(BUILD or SETITEM on a class object, calling something that was not loaded as a global).

Memory is bounded: string payloads are skipped, not kept; memo, stack and line lengths are capped.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

# How a global is used in the stream.
CALLED = "called"  # REDUCE target: func(*args)
CONSTRUCTED = "constructed"  # NEWOBJ / NEWOBJ_EX target: cls.__new__(cls, *args)
REFERENCED = "referenced"  # pushed and stored or passed along, never invoked by the unpickler

MAX_LINE = 1 << 16
MAX_MEMO = 1 << 22
MAX_STACK = 1 << 20
KEEP_STR = 1024  # strings longer than this are skipped, not kept (only STACK_GLOBAL needs them)

# Opcodes torch's weights-only unpickler executes; anything else makes it raise.
TORCH_WEIGHTS_ONLY_OPCODES = frozenset(
    getattr(pickle, name)[0]
    for name in (
        "GLOBAL NEWOBJ REDUCE BUILD APPEND APPENDS SETITEM SETITEMS MARK TUPLE TUPLE1 TUPLE2 TUPLE3 NONE "
        "NEWFALSE NEWTRUE EMPTY_TUPLE EMPTY_LIST EMPTY_DICT EMPTY_SET BININT BININT1 BININT2 BINFLOAT "
        "BINUNICODE SHORT_BINSTRING BINPERSID BINGET LONG_BINGET BINPUT LONG_BINPUT LONG1 PROTO STOP"
    ).split()
)


class ScanError(Exception):
    """The stream is not a readable pickle (truncated, unknown opcode, over a bound)."""


@dataclass(frozen=True)
class Problem:
    """A construct the secure loaders refuse whatever the names involved."""

    kind: str  # "opcode", "build-on-global", "setitem-on-global", "call-non-global", ...
    detail: str
    offset: int

    def __str__(self) -> str:
        return f"{self.detail} (at byte {self.offset})"


@dataclass
class ScanResult:
    protocol: int = 0
    globals: dict[str, set[str]] = field(default_factory=dict)  # normalised dotted name -> uses
    problems: list[Problem] = field(default_factory=list)
    opcodes: set[int] = field(default_factory=set)
    # types whose instances receive BUILD / SETITEM(S): name of the global that made them
    built: set[str] = field(default_factory=set)
    setitem_targets: set[str] = field(default_factory=set)

    def unsupported_by_torch(self) -> list[str]:
        import pickletools

        return sorted(
            pickletools.code2op[chr(c)].name for c in self.opcodes if c not in TORCH_WEIGHTS_ONLY_OPCODES
        )


def normalise_global(module: str, name: str) -> str:
    """Map Python-2 names the way torch's weights-only unpickler and ``pickle`` (fix_imports) do."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


# Stack symbols: _DATA for plain data, ("g", name) for a global, ("o", name) for an object made
# from global ``name``, _MARK for a mark.  Strings are kept as str when short (STACK_GLOBAL).
_DATA = None


class _Mark:
    pass


_MARK = _Mark()


class _Reader:
    def __init__(self, stream: BinaryIO):
        self._read = stream.read
        self.offset = 0

    def read(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise ScanError(f"truncated pickle: wanted {n} bytes at byte {self.offset}, got {len(data)}")
        self.offset += n
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            chunk = min(n, 1 << 20)
            self.read(chunk)
            n -= chunk

    def line(self) -> bytes:
        buf = bytearray()
        while True:
            c = self._read(1)
            if not c:
                raise ScanError(f"truncated pickle: unterminated line at byte {self.offset}")
            self.offset += 1
            if c == b"\n":
                return bytes(buf)
            buf += c
            if len(buf) > MAX_LINE:
                raise ScanError(f"line argument longer than {MAX_LINE} bytes at byte {self.offset}")

    def text(self, n: int):
        if n > KEEP_STR:
            self.skip(n)
            return _DATA
        return self.read(n).decode("utf-8", "surrogatepass")


_U1 = struct.Struct("<B")
_U2 = struct.Struct("<H")
_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")


def scan(stream: BinaryIO) -> ScanResult:
    """Scan one pickle (up to its STOP opcode) from ``stream``.  Raises ScanError if unreadable."""
    r = _Reader(stream)
    res = ScanResult()
    stack: list = []
    metastack: list[list] = []
    memo: dict[int, object] = {}

    def use(sym, how: str) -> None:
        if type(sym) is tuple and sym[0] == "g":
            res.globals[sym[1]].add(how)

    def global_ref(name: str) -> tuple:
        res.globals.setdefault(name, set()).add(REFERENCED)
        return ("g", name)

    def pop_mark() -> list:
        nonlocal stack
        if not metastack:
            raise ScanError(f"MARK expected before byte {op_offset}")
        items = stack
        stack = metastack.pop()
        return items

    def pop():
        if not stack:
            raise ScanError(f"stack underflow at byte {op_offset}")
        return stack.pop()

    def top():
        if not stack:
            raise ScanError(f"stack underflow at byte {op_offset}")
        return stack[-1]

    def problem(kind: str, detail: str) -> None:
        if len(res.problems) < 100:
            res.problems.append(Problem(kind, detail, op_offset))

    def describe(sym) -> str:
        return sym[1] if type(sym) is tuple else "a computed object"

    def call(func, how: str) -> None:
        """REDUCE / NEWOBJ: record the use, and push the symbolic result."""
        if type(func) is tuple and func[0] == "g":
            use(func, how)
            stack.append(("o", func[1]))
        else:
            problem("call-non-global", f"{'REDUCE' if how == CALLED else 'NEWOBJ'} on {describe(func)} "
                    "that was not loaded by name")
            stack.append(_DATA)

    def mutate(target, opname: str, kind: str, sink: set[str]) -> None:
        if type(target) is tuple and target[0] == "g":
            problem(kind, f"{opname} on the class or function object {target[1]} itself")
        elif type(target) is tuple:
            sink.add(target[1])

    while True:
        op_offset = r.offset
        key = r._read(1)
        if not key:
            raise ScanError(f"truncated pickle: no STOP opcode (ended at byte {r.offset})")
        r.offset += 1
        c = key[0]
        res.opcodes.add(c)
        if len(stack) > MAX_STACK or len(memo) > MAX_MEMO:
            raise ScanError("pickle exceeds the scanner's stack or memo bound")

        if c == 0x80:  # PROTO
            res.protocol = r.read(1)[0]
            if res.protocol > 5:
                raise ScanError(f"unsupported pickle protocol {res.protocol}")
        elif c == 0x95:  # FRAME
            r.read(8)
        elif c == 0x2E:  # STOP
            pop()
            return res
        # --- globals -------------------------------------------------------------------------
        elif c == 0x63:  # GLOBAL
            module = r.line().decode("utf-8", "replace")
            name = r.line().decode("utf-8", "replace")
            stack.append(global_ref(normalise_global(module, name)))
        elif c == 0x93:  # STACK_GLOBAL
            name, module = pop(), pop()
            if type(module) is str and type(name) is str:
                stack.append(global_ref(f"{module}.{name}"))
            else:
                problem("stack-global", "STACK_GLOBAL with a computed module or name")
                stack.append(_DATA)
        elif c in (0x69, 0x6F):  # INST, OBJ
            if c == 0x69:
                module = r.line().decode("utf-8", "replace")
                name = r.line().decode("utf-8", "replace")
                cls = global_ref(normalise_global(module, name))
                pop_mark()
            else:
                items = pop_mark()
                cls = items[0] if items else _DATA
            call(cls, CALLED)
        elif c in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
            r.read({0x82: 1, 0x83: 2, 0x84: 4}[c])
            problem("extension", "copyreg extension code (EXT opcode)")
            stack.append(_DATA)
        # --- calls and mutation ----------------------------------------------------------------
        elif c == 0x52:  # REDUCE
            pop()
            call(pop(), CALLED)
        elif c == 0x81:  # NEWOBJ
            pop()
            call(pop(), CONSTRUCTED)
        elif c == 0x92:  # NEWOBJ_EX
            pop()
            pop()
            call(pop(), CONSTRUCTED)
        elif c == 0x62:  # BUILD
            pop()
            mutate(top(), "BUILD", "build-on-global", res.built)
        elif c == 0x73:  # SETITEM
            pop()
            pop()
            mutate(top(), "SETITEM", "setitem-on-global", res.setitem_targets)
        elif c == 0x75:  # SETITEMS
            pop_mark()
            mutate(top(), "SETITEMS", "setitem-on-global", res.setitem_targets)
        elif c == 0x61:  # APPEND
            pop()
            mutate(top(), "APPEND", "append-on-global", res.setitem_targets)
        elif c in (0x65, 0x90):  # APPENDS, ADDITEMS
            pop_mark()
            mutate(top(), "APPENDS" if c == 0x65 else "ADDITEMS", "append-on-global", res.setitem_targets)
        elif c == 0x50:  # PERSID
            r.line()
            stack.append(_DATA)
        elif c == 0x51:  # BINPERSID
            pop()
            stack.append(_DATA)
        # --- stack and memo --------------------------------------------------------------------
        elif c == 0x28:  # MARK
            metastack.append(stack)
            stack = []
        elif c == 0x30:  # POP
            if stack:
                stack.pop()
            else:
                pop_mark()
        elif c == 0x31:  # POP_MARK
            pop_mark()
        elif c == 0x32:  # DUP
            stack.append(top())
        elif c in (0x74, 0x6C, 0x91):  # TUPLE, LIST, FROZENSET
            pop_mark()
            stack.append(_DATA)
        elif c == 0x85:  # TUPLE1
            pop()
            stack.append(_DATA)
        elif c == 0x86:  # TUPLE2
            pop()
            pop()
            stack.append(_DATA)
        elif c == 0x87:  # TUPLE3
            pop()
            pop()
            pop()
            stack.append(_DATA)
        elif c == 0x64:  # DICT
            pop_mark()
            stack.append(_DATA)
        elif c in (0x70, 0x67):  # PUT, GET (text index)
            line = r.line()
            try:
                idx = int(line)
            except ValueError:
                raise ScanError(f"bad memo index {line[:20]!r} at byte {op_offset}") from None
            if c == 0x70:
                memo[idx] = top()
            else:
                stack.append(_memo_get(memo, idx, op_offset))
        elif c in (0x71, 0x72):  # BINPUT, LONG_BINPUT
            idx = r.read(1)[0] if c == 0x71 else _U4.unpack(r.read(4))[0]
            memo[idx] = top()
        elif c == 0x94:  # MEMOIZE
            memo[len(memo)] = top()
        elif c in (0x68, 0x6A):  # BINGET, LONG_BINGET
            idx = r.read(1)[0] if c == 0x68 else _U4.unpack(r.read(4))[0]
            stack.append(_memo_get(memo, idx, op_offset))
        # --- plain data -----------------------------------------------------------------------
        elif c in (0x29, 0x5D, 0x7D, 0x8F, 0x4E, 0x88, 0x89):  # empty containers, None, bools
            stack.append(_DATA)
        elif c == 0x4B:  # BININT1
            r.read(1)
            stack.append(_DATA)
        elif c == 0x4D:  # BININT2
            r.read(2)
            stack.append(_DATA)
        elif c == 0x4A:  # BININT
            r.read(4)
            stack.append(_DATA)
        elif c == 0x47:  # BINFLOAT
            r.read(8)
            stack.append(_DATA)
        elif c == 0x8A:  # LONG1
            r.skip(r.read(1)[0])
            stack.append(_DATA)
        elif c == 0x8B:  # LONG4
            n = _I4.unpack(r.read(4))[0]
            if n < 0:
                raise ScanError(f"negative LONG4 length at byte {op_offset}")
            r.skip(n)
            stack.append(_DATA)
        elif c in (0x49, 0x4C, 0x46, 0x53, 0x56):  # INT, LONG, FLOAT, STRING, UNICODE (text)
            line = r.line()
            stack.append(line.decode("raw_unicode_escape")[:KEEP_STR] if c == 0x56 and len(line) <= KEEP_STR
                         else _DATA)
        elif c in (0x55, 0x43, 0x8C):  # SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE
            n = r.read(1)[0]
            stack.append(r.text(n) if c == 0x8C else (r.skip(n) or _DATA))
        elif c in (0x54, 0x42, 0x58):  # BINSTRING, BINBYTES, BINUNICODE
            n = _U4.unpack(r.read(4))[0] if c != 0x54 else _I4.unpack(r.read(4))[0]
            if n < 0:
                raise ScanError(f"negative length at byte {op_offset}")
            stack.append(r.text(n) if c == 0x58 else (r.skip(n) or _DATA))
        elif c in (0x8D, 0x8E, 0x96):  # BINUNICODE8, BINBYTES8, BYTEARRAY8
            n = _U8.unpack(r.read(8))[0]
            stack.append(r.text(n) if c == 0x8D else (r.skip(n) or _DATA))
        elif c == 0x97:  # NEXT_BUFFER (protocol 5 out-of-band data)
            problem("out-of-band-buffer", "protocol 5 out-of-band buffer (NEXT_BUFFER)")
            stack.append(_DATA)
        elif c == 0x98:  # READONLY_BUFFER
            top()
        else:
            raise ScanError(f"unknown opcode 0x{c:02x} at byte {op_offset}")


def _memo_get(memo: dict, idx: int, offset: int):
    try:
        return memo[idx]
    except KeyError:
        raise ScanError(f"memo key {idx} read before it was written (byte {offset})") from None
