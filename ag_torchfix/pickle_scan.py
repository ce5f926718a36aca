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
    last_offset: int = 0  # where the scan stopped (for messages)

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
# from global ``name``.  Strings are kept as str when short (STACK_GLOBAL needs them).
_DATA = None


class _Window:
    """A sliding window over the stream: fixed-size arguments are always in ``buf`` (LOOKAHEAD bytes
    ahead of the read position, unless at EOF); long string payloads are skipped without keeping them."""

    CHUNK = 1 << 20
    LOOKAHEAD = 2 * MAX_LINE + 64

    def __init__(self, stream: BinaryIO):
        self._read = stream.read
        self.buf = b""
        self.base = 0  # stream offset of buf[0]
        self.eof = False

    def refill(self, i: int) -> tuple[bytes, int, int]:
        """Drop consumed bytes, read more; returns (buf, 0, limit) where ops starting before limit fit."""
        if not self.eof:
            more = self._read(self.CHUNK)
            if not more:
                self.eof = True
            self.base += i
            self.buf = self.buf[i:] + more
            i = 0
        limit = len(self.buf) if self.eof else len(self.buf) - self.LOOKAHEAD
        return self.buf, i, limit

    def skip(self, i: int, n: int) -> tuple[bytes, int, int]:
        """Advance past n payload bytes starting at buf[i]."""
        available = len(self.buf) - i
        if n <= available:
            i += n
            return self.buf, i, (len(self.buf) if self.eof else len(self.buf) - self.LOOKAHEAD)
        n -= available
        self.base += len(self.buf)
        self.buf = b""
        while n > 0:
            chunk = self._read(min(n, self.CHUNK))
            if not chunk:
                raise ScanError(f"truncated pickle: payload ends early at byte {self.base}")
            n -= len(chunk)
            self.base += len(chunk)
        return self.refill(0)


_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")

# Opcodes that push plain data and take a fixed-size argument: argument size by opcode, else 255.
_PUSH_FIXED = bytes({0x4A: 4, 0x4B: 1, 0x4D: 2, 0x47: 8, 0x4E: 0, 0x88: 0, 0x89: 0, 0x29: 0, 0x5D: 0, 0x7D: 0,
                     0x8F: 0}.get(c, 255) for c in range(256))
_MUTATORS = {0x62: ("BUILD", "build-on-global"), 0x73: ("SETITEM", "setitem-on-global"),
             0x75: ("SETITEMS", "setitem-on-global"), 0x61: ("APPEND", "append-on-global"),
             0x65: ("APPENDS", "append-on-global"), 0x90: ("ADDITEMS", "append-on-global")}


def scan(stream: BinaryIO) -> ScanResult:
    """Scan one pickle (up to its STOP opcode) from ``stream``.  Raises ScanError if unreadable.

    The hot loop keeps everything in fast locals; an empty stack or missing MARK surfaces as
    IndexError, an unknown memo key as KeyError, a short fixed-size argument as struct.error,
    and all three are turned into ScanError here.
    """
    win = _Window(stream)
    res = ScanResult()
    seen = bytearray(256)
    try:
        return _scan(win, res, seen)
    except IndexError:
        raise ScanError(f"truncated or malformed pickle (stack underflow, missing MARK or short argument) "
                        f"near byte {res.last_offset}") from None
    except KeyError as exc:
        raise ScanError(f"memo key {exc.args[0]} read before it was written (near byte {res.last_offset})") from None
    except struct.error:
        raise ScanError(f"truncated pickle near byte {res.last_offset}") from None
    finally:
        res.opcodes = {c for c in range(256) if seen[c]}


def _scan(win: _Window, res: ScanResult, seen: bytearray) -> ScanResult:
    buf, i, limit = win.refill(0)
    end = len(buf)
    globals_, problems = res.globals, res.problems
    stack: list = []
    metastack: list[list] = []
    memo: dict[int, object] = {}
    push = stack.append
    u4 = _U4.unpack_from
    push_fixed = _PUSH_FIXED
    mutators = _MUTATORS

    try:
        while True:
            if i >= limit:
                buf, i, limit = win.refill(i)
                end = len(buf)
                if len(stack) > MAX_STACK or len(memo) > MAX_MEMO:
                    raise ScanError("pickle exceeds the scanner's stack or memo bound")
                if i >= end:
                    raise ScanError(f"truncated pickle: no STOP opcode (ended at byte {win.base + i})")
            c = buf[i]
            i += 1
            if c == 0x72:  # LONG_BINPUT (the commonest opcodes first)
                memo[u4(buf, i)[0]] = stack[-1]
                i += 4
            elif c == 0x6A:  # LONG_BINGET
                push(memo[u4(buf, i)[0]])
                i += 4
            elif push_fixed[c] != 255:  # BININT*, BINFLOAT, NONE, bools, empty containers
                i += push_fixed[c]
                if i > end:
                    raise ScanError(f"truncated pickle at byte {win.base + i - 1}")
                push(_DATA)
            elif c == 0x8A:  # LONG1
                i += 1 + buf[i]
                push(_DATA)
            elif c == 0x71:  # BINPUT
                memo[buf[i]] = stack[-1]
                i += 1
            elif c == 0x68:  # BINGET
                push(memo[buf[i]])
                i += 1
            elif c == 0x58 or c == 0x8C:  # BINUNICODE, SHORT_BINUNICODE
                if c == 0x58:
                    n = u4(buf, i)[0]
                    i += 4
                else:
                    seen[c] = 1
                    n = buf[i]
                    i += 1
                if n <= KEEP_STR and i + n <= end:
                    push(buf[i:i + n].decode("utf-8", "surrogatepass"))
                    i += n
                else:
                    buf, i, limit = win.skip(i, n)
                    end = len(buf)
                    push(_DATA)
            elif c == 0x28:  # MARK
                metastack.append(stack)
                stack = []
                push = stack.append
            elif c == 0x52 or c == 0x81:  # REDUCE, NEWOBJ: replace (callable, args) by the result
                stack.pop()
                func = stack[-1]
                if type(func) is tuple and func[0] == "g":
                    globals_[func[1]].add(CALLED if c == 0x52 else CONSTRUCTED)
                    stack[-1] = ("o", func[1])
                else:
                    _problem(problems, "call-non-global", f"{'REDUCE' if c == 0x52 else 'NEWOBJ'} on "
                             f"{func[1] if type(func) is tuple else 'a computed object'} that was not loaded by name", win.base + i - 1)
                    stack[-1] = _DATA
            elif c in mutators:  # BUILD, SETITEM(S), APPEND(S), ADDITEMS
                seen[c] = 1
                if c == 0x62 or c == 0x61:
                    stack.pop()
                elif c == 0x73:
                    stack.pop()
                    stack.pop()
                else:
                    stack = metastack.pop()
                    push = stack.append
                target = stack[-1]
                if type(target) is tuple:
                    opname, kind = mutators[c]
                    if target[0] == "g":
                        _problem(problems, kind, f"{opname} on the class or function object {target[1]} itself", win.base + i - 1)
                    else:
                        (res.built if c == 0x62 else res.setitem_targets).add(target[1])
            elif c == 0x85:  # TUPLE1
                stack[-1] = _DATA
            elif c == 0x86:  # TUPLE2
                stack.pop()
                stack[-1] = _DATA
            elif c == 0x87:  # TUPLE3
                del stack[-2:]
                stack[-1] = _DATA
            elif c == 0x74 or c == 0x6C or c == 0x91 or c == 0x64:  # TUPLE, LIST, FROZENSET, DICT
                seen[c] = 1
                stack = metastack.pop()
                push = stack.append
                push(_DATA)
            elif c == 0x63 or c == 0x69:  # GLOBAL, INST
                seen[c] = 1
                module, i = _line(buf, i, win)
                name, i = _line(buf, i, win)
                full = normalise_global(module, name)
                globals_.setdefault(full, set()).add(REFERENCED)
                if c == 0x63:
                    push(("g", full))
                else:
                    stack = metastack.pop()
                    push = stack.append
                    globals_[full].add(CALLED)
                    push(("o", full))
            else:  # rarer opcodes, including every one torch's weights-only unpickler does not execute
                seen[c] = 1
                if c == 0x93:  # STACK_GLOBAL
                    name = stack.pop()
                    module = stack[-1]
                    if type(module) is str and type(name) is str:
                        full = f"{module}.{name}"
                        globals_.setdefault(full, set()).add(REFERENCED)
                        stack[-1] = ("g", full)
                    else:
                        _problem(problems, "stack-global", "STACK_GLOBAL with a computed module or name", win.base + i - 1)
                        stack[-1] = _DATA
                elif c == 0x51:  # BINPERSID
                    stack[-1] = _DATA
                elif c == 0x2E:  # STOP
                    stack.pop()
                    return res
                elif c == 0x80:  # PROTO
                    res.protocol = buf[i]
                    i += 1
                    if res.protocol > 5:
                        raise ScanError(f"unsupported pickle protocol {res.protocol}")
                elif c == 0x95:  # FRAME
                    i += 8
                elif c == 0x94:  # MEMOIZE
                    memo[len(memo)] = stack[-1]
                elif c == 0x92:  # NEWOBJ_EX
                    del stack[-2:]
                    func = stack[-1]
                    if type(func) is tuple and func[0] == "g":
                        globals_[func[1]].add(CONSTRUCTED)
                        stack[-1] = ("o", func[1])
                    else:
                        _problem(problems, "call-non-global", "NEWOBJ_EX on a computed object", win.base + i - 1)
                        stack[-1] = _DATA
                elif c == 0x6F:  # OBJ
                    items = stack
                    stack = metastack.pop()
                    push = stack.append
                    cls = items[0] if items else _DATA
                    if type(cls) is tuple and cls[0] == "g":
                        globals_[cls[1]].add(CALLED)
                        push(("o", cls[1]))
                    else:
                        _problem(problems, "call-non-global", "OBJ on a computed object", win.base + i - 1)
                        push(_DATA)
                elif c in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
                    i += {0x82: 1, 0x83: 2, 0x84: 4}[c]
                    _problem(problems, "extension", "copyreg extension code (EXT opcode)", win.base + i - 1)
                    push(_DATA)
                elif c == 0x30:  # POP
                    if stack:
                        stack.pop()
                    else:
                        stack = metastack.pop()
                        push = stack.append
                elif c == 0x31:  # POP_MARK
                    stack = metastack.pop()
                    push = stack.append
                elif c == 0x32:  # DUP
                    push(stack[-1])
                elif c == 0x70 or c == 0x67:  # PUT, GET (text index)
                    text, i = _line(buf, i, win)
                    try:
                        idx = int(text)
                    except ValueError:
                        raise ScanError(f"bad memo index {text[:20]!r} at byte {win.base + i - 1}") from None
                    if c == 0x70:
                        memo[idx] = stack[-1]
                    else:
                        push(memo[idx])
                elif c in (0x49, 0x4C, 0x46, 0x53, 0x50):  # INT, LONG, FLOAT, STRING, PERSID (text)
                    _, i = _line(buf, i, win)
                    push(_DATA)
                elif c == 0x56:  # UNICODE (raw-unicode-escape text)
                    text, i = _line(buf, i, win)
                    push(text.encode("utf-8", "surrogateescape").decode("raw_unicode_escape") if len(text) <= KEEP_STR
                         else _DATA)
                elif c in (0x55, 0x43, 0x54, 0x42, 0x8B, 0x8D, 0x8E, 0x96):  # length-prefixed payloads
                    if c in (0x55, 0x43):  # SHORT_BINSTRING, SHORT_BINBYTES
                        n = buf[i]
                        i += 1
                    elif c in (0x54, 0x8B):  # BINSTRING, LONG4 (signed lengths)
                        n = _I4.unpack_from(buf, i)[0]
                        i += 4
                    elif c == 0x42:  # BINBYTES
                        n = u4(buf, i)[0]
                        i += 4
                    else:  # BINUNICODE8, BINBYTES8, BYTEARRAY8
                        n = _U8.unpack_from(buf, i)[0]
                        i += 8
                    if n < 0:
                        raise ScanError(f"negative length at byte {win.base + i - 1}")
                    if c == 0x8D and n <= KEEP_STR and i + n <= end:
                        push(buf[i:i + n].decode("utf-8", "surrogatepass"))
                        i += n
                    else:
                        buf, i, limit = win.skip(i, n)
                        end = len(buf)
                        push(_DATA)
                elif c == 0x97:  # NEXT_BUFFER (protocol 5 out-of-band data)
                    _problem(problems, "out-of-band-buffer", "protocol 5 out-of-band buffer (NEXT_BUFFER)", win.base + i - 1)
                    push(_DATA)
                elif c == 0x98:  # READONLY_BUFFER
                    stack[-1]
                else:
                    raise ScanError(f"unknown opcode 0x{c:02x} at byte {win.base + i - 1}")
    except (IndexError, KeyError, struct.error):
        res.last_offset = win.base + i
        raise


def _line(buf: bytes, i: int, win: _Window) -> tuple[str, int]:
    j = buf.find(b"\n", i, i + MAX_LINE + 1)
    if j < 0:
        if len(buf) - i > MAX_LINE:
            raise ScanError(f"line argument longer than {MAX_LINE} bytes at byte {win.base + i}")
        raise ScanError(f"truncated pickle: unterminated line at byte {win.base + i}")
    return buf[i:j].decode("utf-8", "replace"), j + 1


def _problem(problems: list, kind: str, detail: str, offset: int) -> None:
    if len(problems) < 100:
        problems.append(Problem(kind, detail, offset))
