"""Pickles inside a pickle's values: found, decoded and scanned, never run.

A pickle can carry another pickle as a bytes or str constant for something to ``pickle.loads`` later: raw bytes,
hex or base64 text (standard or urlsafe, whitespace allowed), zlib / gzip / bz2 / xz (or lzma-alone) compressed
bytes, any of these inside another (compressed, then base64 ...), and a nested pickle may hold one in turn.  The
symbolic machine (``pickle_scan``) offers every constant of at least ``Payloads.min_size`` bytes to a ``Search``;
the search decides on the first ``Payloads.HEAD`` bytes alone whether the value can hold a pickle (the encodings
are checked on the head, which is decoded and must read as the start of a pickle: its opcodes valid up to the end
of the head, or a complete pickle with a global, a known danger, or a nested candidate of its own), keeps only the
values that pass, then decodes each and scans it as a pickle, with its own search one level deeper.

A nested pickle with no globals is plain data: it is not reported.  Everything is bounded (``Bounds``): the bytes
one value may decode to, the bytes decoded per file, the decompression ratio, the levels of nesting, the encodings
around one pickle, the values decoded per file and the time spent.  When a bound stops the search before every
value that looked like a pickle was read, ``Findings.incomplete`` says which; a known danger found before that
still counts (the scanner decides).  Genuine AutoGluon pickles hold large numpy byte strings: those are rejected
on their first bytes, without a copy.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import lzma
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from . import pickle_scan

HEAD = pickle_scan.Payloads.HEAD
MIN_PICKLE = 8  # the shortest pickle that calls a global: c m \n n \n ) R .


@dataclass(frozen=True)
class Bounds:
    value: int = 8 << 20  # bytes one value decodes to (a nested pickle longer than this is not read in full)
    total: int = 32 << 20  # bytes kept and decoded per file, every value and stage together
    ratio: int = 100  # a compressed value inflating more than this is a bomb
    depth: int = 4  # pickles inside pickles inside the file's own
    encodings: int = 3  # encodings around one pickle (zlib in base64 in hex)
    candidates: int = 64  # values per file that look like a pickle, decoded and scanned in full
    probed: int = 8 << 20  # bytes of value heads read as pickles to tell whether a value can hold one
    seconds: float = 10.0  # a safety net: far above what the other bounds allow on this machine


DEFAULT_BOUNDS = Bounds()


@dataclass
class Found:
    """A nested pickle: where it is (e.g. ``base64 text at byte 58``; levels joined by ``→``), its scan, and
    whether its stream was read to its end (not cut at ``Bounds.value``)."""

    where: str
    result: pickle_scan.ScanResult
    complete: bool


@dataclass
class Findings:
    pickles: list[Found] = field(default_factory=list)  # nested pickles with a global, a problem or a danger
    incomplete: str | None = None  # the first bound that left a value that looked like a pickle unread
    candidates: int = 0  # values decoded and scanned


# Opcodes a pickle can start with: the ones that need nothing on the stack, in the memo or from the caller.
_OPCODES = frozenset(b"(N\x88\x89IJKML\x8a\x8bSTUBC\x8e\x96V\x8cX\x8dFG])}\x8fcP\x82\x83\x84\x80\x95")
_WHITESPACE = b" \t\r\n\x0b\x0c"
_HEX = b"0123456789abcdefABCDEF"
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64_STD, _B64_URL = _B64 + b"+/=", _B64 + b"-_="
_TEXT = _B64 + b"+/=-_" + _WHITESPACE  # every character of every text encoding
_COMPRESSION_START = frozenset(b"\x08\x18\x28\x38\x48\x58\x68\x78\x1fB\xfd\x5d")
_REJECTED: dict[tuple[bool, bytes], None] = {}
_REMEMBER = 1 << 14  # entries
_REMEMBERED = 256  # bytes: only short values (names) are remembered

_NAMES = {"zlib": "zlib data", "gzip": "gzip data", "bz2": "bz2 data", "lzma": "xz/lzma data", "hex": "hex text",
          "base64": "base64 text", "base64url": "urlsafe base64 text"}


def _compression(head: bytes) -> str | None:
    if len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and not head[1] & 0x20 \
            and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and len(head) > 3:
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00" or head[:3] == b"\x5d\x00\x00":
        return "lzma"
    return None


def _decompressor(kind: str):
    if kind == "zlib":
        return zlib.decompressobj()
    if kind == "gzip":
        return zlib.decompressobj(31)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor()


def _decompress(kind: str, data: bytes, whole: bool, limit: int) -> tuple[bytes, bool, bool]:
    """At most ``limit`` bytes inflated from ``data``: (output, is it all of the value, did it stop at the limit).
    Raises ``ValueError`` for a corrupt stream."""
    d = _decompressor(kind)
    try:
        out = d.decompress(data, limit)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    more = bool(getattr(d, "unconsumed_tail", b"")) or (not d.eof and not getattr(d, "needs_input", True))
    return out, whole and d.eof, len(out) >= limit and more


def _decode_text(kind: str, data: bytes, whole: bool) -> bytes:
    """Hex or base64 text decoded as ``bytes.fromhex`` / ``base64.b64decode`` would (whitespace dropped); a prefix
    of a longer value is decoded up to its last whole group.  Raises ``ValueError``."""
    text = data.translate(None, _WHITESPACE)
    try:
        if kind == "hex":
            return binascii.a2b_hex(text if whole else text[:len(text) & ~1])
        if not whole:
            text = text[:len(text) & ~3]
        if kind == "base64url":
            text = text.translate(bytes.maketrans(b"-_", b"+/"))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None


def _text_kinds(head: bytes, whole: bool) -> list[str]:
    """The text encodings ``head`` can be in: its characters are all in the alphabet (and a whole value's length
    fits: ``bytes.fromhex`` and ``b64decode`` refuse the rest)."""
    if head.translate(None, _TEXT):
        return []
    text = head.translate(None, _WHITESPACE)
    if len(text) < 8:
        return []
    kinds = []
    if not text.translate(None, _HEX) and not (whole and len(text) & 1):
        kinds.append("hex")
    if whole and len(text) & 3:
        return kinds
    if not text.translate(None, _B64_STD):
        kinds.append("base64")
    elif not text.translate(None, _B64_URL):
        kinds.append("base64url")
    return kinds


class Search:
    """The nested pickles of one file.  Give ``payloads`` to ``pickle_scan.scan`` / ``scan_all``, then call
    ``finish``.  ``dangerous(name)`` tells a known danger (the catalogue lives above this layer)."""

    def __init__(self, dangerous: Callable[[str], object], bounds: Bounds = DEFAULT_BOUNDS, *, remember: bool = False):
        self.dangerous = dangerous
        self.bounds = bounds
        # short values found to hold no pickle, shared by the searches that ``remember`` (the same ``dangerous`` and
        # bounds: the scanner's): a predictor's files repeat the same attribute names hundreds of times
        self.rejected = _REJECTED if remember else None
        self.findings = Findings()
        self.spent = 0  # bytes kept and decoded
        self.probed = 0  # bytes of heads read as pickles
        self.deadline = time.monotonic() + bounds.seconds
        self.pending: list[tuple[_Level, tuple[str, ...], bool, bytes, int, int]] = []
        self.payloads = _Level(self, 1, "")

    def stop(self, why: str) -> None:
        if self.findings.incomplete is None:
            self.findings.incomplete = why

    def finish(self) -> Findings:
        """Decode and scan every value kept, and the values those pickles keep in turn (breadth first)."""
        while self.pending:
            level, chain, text, data, size, offset = self.pending.pop(0)
            if time.monotonic() > self.deadline:
                self.stop(f"looking for nested pickles took longer than {self.bounds.seconds:g} s: the rest of the "
                          "values that could hold one were not read")
                break
            self._read(level, chain, text, data, size, offset)
        self.pending.clear()
        return self.findings

    # --- a value that passed the head check: decode it in full and scan it ------------------------------

    def _read(self, level: _Level, chain, text: bool, data: bytes, size: int, offset: int) -> None:
        whole = len(data) >= size
        cut = None
        steps, done = list(chain[:-1]), []
        while steps:
            step = steps.pop(0)
            done.append(step)
            try:
                if step in ("hex", "base64", "base64url"):
                    data = _decode_text(step, data, whole)
                else:
                    limit = min(self.bounds.value + 1, max(len(data), 1) * self.bounds.ratio + (1 << 20))
                    data, whole, capped = _decompress(step, data, whole, limit)
                    if capped and limit <= self.bounds.value:
                        cut = (f"a nested value ({level.where}{_describe((*done, '?'), text, offset)}) inflates more "
                               f"than {self.bounds.ratio} times its size (a decompression bomb?)")
            except ValueError:
                return  # not what the head promised: the application's decoder fails as well
            self.spent += len(data)
            if self.spent > self.bounds.total:
                self.stop(f"nested values decode to more than {self.bounds.total} bytes in all: the rest were not read")
                return
            if not steps and chain[-1] == "?":  # undecided on the head (a bz2 block): decided on what it inflated to
                rest = level._chain(data[:HEAD], False, whole and len(data) <= HEAD, len(done),
                                    len(data) if whole else None)
                if rest is None or rest[-1] == "?":
                    return
                steps, chain = list(rest[:-1]), (*done, *rest)
        where = level.where + _describe(chain, text, offset)
        if len(data) > self.bounds.value:
            data, whole = data[:self.bounds.value], False
        child = _Level(self, level.depth + 1, where + " → ")
        result = pickle_scan.scan(data, payloads=child)
        truncated = result.error is not None and result.error.startswith("truncated") and not whole
        if truncated:
            self.stop(cut or f"a nested pickle ({where}) is longer than the {self.bounds.value} bytes the scan "
                      "decodes of one value: it was not read to its end")
        dangers = any(self.dangerous(n) for n in result.globals)
        if dangers or (result.error is None or truncated) and (result.globals or _unnamed(result)):
            self.findings.pickles.append(Found(where, result, not truncated))


class _Level(pickle_scan.Payloads):
    """What one pickle (the file's, or a nested one at ``depth``) offers: values that can hold a pickle are kept."""

    min_size = MIN_PICKLE

    def __init__(self, search: Search, depth: int, where: str, probe: bool = False):
        self.search = search
        self.depth = depth
        self.where = where
        self.probe = probe  # only tell whether a value here could hold a pickle (``hit``); keep nothing
        self.hit = False

    def offer(self, text: bool, head: bytes, size: int, offset: int) -> int:
        if text or head[0] not in _OPCODES and head[0] not in _COMPRESSION_START:
            # the common case, decided cheaply: not a pickle's start, and not text in an encoding (a whole value must
            # have the length its encoding needs: hex even, base64 a multiple of 4)
            if size < 8:
                return 0
            if len(head) == size:
                stripped = head.translate(None, _WHITESPACE)
                if len(stripped) & 3 and (len(stripped) & 1 or stripped.translate(None, _HEX)) \
                        or stripped.translate(None, _TEXT):
                    return 0
            elif head[:256].translate(None, _TEXT):
                return 0
        search = self.search
        if self.probe and self.depth > search.bounds.depth:
            self.hit = True  # past the depth bound a value is not opened: it may hold a pickle
            return 0
        rejected = search.rejected if self.depth == 1 and len(head) == size <= _REMEMBERED else None
        if rejected is not None:
            if (text, head) in rejected:
                return 0
            stopped = search.findings.incomplete
        chain = self._chain(head, text, len(head) >= size, 0, size)
        if chain is None:
            if rejected is not None and search.findings.incomplete is stopped:
                if len(rejected) >= _REMEMBER:
                    rejected.clear()
                rejected[(text, bytes(head))] = None
            return 0
        if self.probe:
            self.hit = True
            return 0
        bounds = search.bounds
        if self.depth > bounds.depth:
            search.stop(f"nested pickles deeper than {bounds.depth} levels ({self.where}{_describe(chain, text, offset)}"
                        "): the deeper ones were not read")
            return 0
        if search.findings.candidates >= bounds.candidates:
            search.stop(f"more than {bounds.candidates} values that could hold a nested pickle: the rest were not read")
            return 0
        search.findings.candidates += 1
        # text decodes to half (hex) or 3/4 (base64) of its size; raw or compressed input needs at most the output
        want = min(size, 2 * bounds.value + 8 if chain[0] in ("hex", "base64", "base64url") else bounds.value)
        search.spent += want
        if search.spent > bounds.total:
            search.stop(f"nested values decode to more than {bounds.total} bytes in all: the rest were not read")
            return 0
        if len(head) >= size:
            search.pending.append((self, chain, text, bytes(head), size, offset))
            return 0
        self._offered = chain
        return want

    def keep(self, text: bool, data: bytes, size: int, offset: int) -> None:
        self.search.pending.append((self, self._offered, text, data, size, offset))

    def _chain(self, head: bytes, text: bool, whole: bool, stage: int, size: int | None) -> tuple[str, ...] | None:
        """How ``head`` (the first bytes of a value of ``size`` bytes, None: unknown; all of it when ``whole``)
        decodes to the start of a pickle: the steps, ending with ``"pickle"``; None when it does not."""
        if not text:
            if head[:1] and head[0] in _OPCODES and self._pickle_start(head, whole, size):
                return ("pickle",)
            kind = _compression(head)
            if kind is not None and stage < self.search.bounds.encodings:
                try:
                    out, out_whole, _ = _decompress(kind, head, whole, HEAD)
                except ValueError:
                    out = b""
                if len(out) >= MIN_PICKLE:
                    rest = self._chain(out, False, out_whole, stage + 1, len(out) if out_whole else None)
                    if rest is not None:
                        return (kind, *rest)
                elif not out and not whole and kind == "bz2" and head[4:10] == b"1AY&SY":
                    return (kind, "?")  # bz2 gives nothing before its first block ends: decided once inflated
        if stage < self.search.bounds.encodings:
            for kind in _text_kinds(head, whole):
                try:
                    out = _decode_text(kind, head, whole)
                except ValueError:
                    continue
                if len(out) >= MIN_PICKLE:
                    decoded = None if size is None else size // 2 if kind == "hex" else size * 3 // 4
                    rest = self._chain(out, False, whole, stage + 1, decoded)
                    if rest is not None:
                        return (kind, *rest)
        return None

    def _pickle_start(self, head: bytes, whole: bool, size: int | None) -> bool:
        """Whether ``head`` reads as the start of a pickle that matters: opcodes valid to the end of a longer value's
        head (no count past the value's end), or a complete pickle with a global, a known danger (before any bad
        point: the unpickler runs what comes before), or a value of its own that could hold a pickle."""
        search = self.search
        if search.probed > search.bounds.probed or time.monotonic() > search.deadline:
            search.stop(f"more than {search.bounds.probed} bytes of values read to tell whether they hold a pickle "
                        f"(or {search.bounds.seconds:g} s): the rest were not read")
            return False
        probe = _Level(search, self.depth + 1, self.where, probe=True)  # does a value in it hold a pickle in turn?
        result = pickle_scan.scan(_Head(head, None if whole else size), payloads=probe)
        search.probed += result.end + 1  # what was read (random bytes fail within a few)
        if any(search.dangerous(n) for n in result.globals):
            return True
        if result.error is None:
            return bool(result.globals or _unnamed(result) or probe.hit)
        return not whole and result.error.startswith("truncated")


def _unnamed(result: pickle_scan.ScanResult) -> bool:
    """A global the scan could not name (computed STACK_GLOBAL, an EXT code): not plain data either."""
    return any(p.kind in ("stack-global", "extension") for p in result.problems)


class _Head(pickle_scan.Reader):
    """The head of a value, read as a pickle: a payload whose count runs past the value's end (``size``) is
    malformed, not truncated (random bytes often start with a large count)."""

    def __init__(self, head: bytes, size: int | None):
        super().__init__(head)
        self.size = size

    def skip(self, i: int, n: int):
        if self.size is not None and self.base + i + n > self.size:
            raise pickle_scan.ScanError(f"a payload of {n} bytes runs past the value's end")
        return super().skip(i, n)


def _describe(chain: tuple[str, ...], text: bool, offset: int) -> str:
    steps = [_NAMES[s] for s in reversed(chain[:-1])]
    container = "a str" if text else "bytes"
    if not steps:
        return f"{container} at byte {offset}"
    inside = " in ".join(steps)
    return f"{inside} at byte {offset}" if text and chain[0] in ("hex", "base64", "base64url") else (
        f"{inside} in {container} at byte {offset}")
