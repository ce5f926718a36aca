"""One reading of a torch zip archive, shared by the secure loader and the scanner.

``torch.load`` reads ``torch.save`` archives with its own C++ reader (miniz): it takes the archive's
name from the first record's top-level directory, looks records up by name case-insensitively,
and allocates each record's declared uncompressed size before inflating it.  Python's ``zipfile``
differs on every one of those points.  So that the bytes this package checks are the bytes torch
unpickles, an archive is accepted only when no reader could see it differently:

- it starts with a local file header (torch's own test) and ends with an end-of-central-directory
  record without a comment, on one disk, preceded (as torch writes it) by a zip64 end record and
  locator that agree with it, and a central directory that exactly fills the space before them;
  no record needs zip64 sizes;
- every record sits in one top-level directory, has a plain printable ASCII name (no ``..``, no
  backslash, no absolute path), and no two names are equal even up to case (miniz's lookup);
- every local header agrees with its central-directory entry (name, method, flags; sizes and CRC
  unless a data descriptor follows), and records do not overlap;
- records are stored or deflated (no other method, no encryption); stored records inflate to
  exactly their size, deflated ones by at most ``MAX_RATIO``; the whole archive inflates to at most
  ``MAX_RATIO`` times its size; the pickle record is at most ``MAX_PICKLE`` bytes.
Records are read with bounded buffers, their sizes and CRCs checked; every failure is an
``ArchiveError`` (with a reason for the user), never ``zlib.error`` or ``RuntimeError``.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

MAX_RATIO = 20  # deflated records (torch itself stores them uncompressed): a zip bomb needs far more
MAX_PICKLE = 256 << 20  # the object graph only; tensors are separate records
MAX_RECORDS = 100_000
MAX_NAME = 1024

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # signature, version, flags, method, time, date, crc, csize, usize, n, e
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")
_Z64_LOCATOR = struct.Struct("<4sIQI")
_Z64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_NAME = re.compile(r"[A-Za-z0-9_.\-/ ]+\Z")
_ASCII_LOWER = bytes.maketrans(bytes(range(65, 91)), bytes(range(97, 123)))


class ArchiveError(Exception):
    """Not an archive torch and this package would read the same way, or a corrupt record."""


class Record(NamedTuple):
    name: str  # as stored, prefix included
    method: int
    flags: int
    crc: int
    compressed: int
    size: int
    header: int  # offset of the local header
    data: int  # offset of the record's bytes


@dataclass(frozen=True)
class TorchArchive:
    prefix: str  # the top-level directory torch takes as the archive's name
    records: dict[str, Record]  # ASCII-lowercased name below the prefix -> record
    length: int

    def find(self, name: str) -> Record | None:
        """The record torch's reader finds for ``name`` (below the prefix), case-insensitively as miniz does."""
        return self.records.get(name.encode("ascii", "replace").translate(_ASCII_LOWER).decode("ascii"))


def is_zip(head: bytes) -> bool:
    return head[:4] == b"PK\x03\x04"


def open_archive(stream: BinaryIO) -> TorchArchive:
    """Parse and validate the archive in ``stream`` (seekable, positioned at its start)."""
    start = stream.tell()
    stream.seek(0, 2)
    length = stream.tell() - start
    if length < _EOCD.size + _LOCAL.size:
        raise ArchiveError(f"too short for a zip archive ({length} bytes)")
    stream.seek(start)
    if stream.read(4) != b"PK\x03\x04":
        raise ArchiveError("it does not start with a zip local file header")
    stream.seek(start + length - _EOCD.size)
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = _EOCD.unpack(stream.read(_EOCD.size))
    if sig != b"PK\x05\x06":
        raise ArchiveError("no end-of-central-directory record at the end (a comment or trailing data follows it)")
    if comment or disk or cd_disk or n_disk != n_total:
        raise ArchiveError("multi-disk archive or archive comment")
    # torch's writer always adds a zip64 end record and its locator; their values must agree with the end record
    cd_end = length - _EOCD.size
    if length >= _EOCD.size + _Z64_LOCATOR.size:
        stream.seek(start + cd_end - _Z64_LOCATOR.size)
        sig, z64_disk, z64_offset, disks = _Z64_LOCATOR.unpack(stream.read(_Z64_LOCATOR.size))
        if sig == b"PK\x06\x07":
            if z64_disk or disks != 1 or z64_offset + _Z64_EOCD.size != cd_end - _Z64_LOCATOR.size:
                raise ArchiveError("zip64 end record is not where its locator says")
            stream.seek(start + z64_offset)
            (sig, rest, _made, _need, disk, cd_disk, z_n_disk, z_n_total, z_cd_size,
             z_cd_offset) = _Z64_EOCD.unpack(stream.read(_Z64_EOCD.size))
            if sig != b"PK\x06\x06" or rest != _Z64_EOCD.size - 12 or disk or cd_disk or z_n_disk != z_n_total:
                raise ArchiveError("malformed zip64 end record")
            if (n_total, cd_size, cd_offset) != (z_n_total, z_cd_size, z_cd_offset):
                raise ArchiveError("the zip64 end record and the end record disagree (zip64 sizes are not expected "
                                   "for an archive of this size)")
            cd_end = z64_offset
    if n_total > MAX_RECORDS:
        raise ArchiveError(f"{n_total} records")
    if cd_offset + cd_size != cd_end:
        raise ArchiveError("the central directory does not end where the end record begins (data hidden between them, "
                           "or data prepended)")
    stream.seek(start + cd_offset)
    directory = stream.read(cd_size)
    if len(directory) != cd_size:
        raise ArchiveError("truncated central directory")

    entries: list[Record] = []
    pos = 0
    for _ in range(n_total):
        if pos + _CENTRAL.size > cd_size:
            raise ArchiveError("truncated central directory entry")
        (sig, _made, _need, flags, method, _t, _d, crc, csize, usize, n, e, c, disk_start, _ia, _ea,
         offset) = _CENTRAL.unpack_from(directory, pos)
        if sig != b"PK\x01\x02":
            raise ArchiveError("bad central directory entry")
        raw_name = directory[pos + _CENTRAL.size:pos + _CENTRAL.size + n]
        pos += _CENTRAL.size + n + e + c
        if pos > cd_size:
            raise ArchiveError("truncated central directory entry")
        name = _check_name(raw_name)
        if flags & 0x1 or flags & 0x40:
            raise ArchiveError(f"record {name!r} is marked encrypted (flag bits 0x{flags & 0x41:x}; torch archives "
                               "are never encrypted)")
        if method not in (0, 8):
            raise ArchiveError(f"record {name!r} uses compression method {method} (torch archives store or deflate)")
        if disk_start or 0xFFFFFFFF in (csize, usize, offset):
            raise ArchiveError(f"record {name!r} needs zip64")
        entries.append(Record(name, method, flags, crc, csize, usize, offset, -1))
    if pos != cd_size:
        raise ArchiveError("the central directory holds more than its entries")
    if not entries:
        raise ArchiveError("empty archive")

    at_root = next((entry.name for entry in entries if "/" not in entry.name), None)
    if at_root is not None:
        raise ArchiveError(f"a record at the zip root ({at_root!r}): torch.save puts every record in one top-level "
                           "directory, and torch reads only that directory's records")
    prefix = entries[0].name.split("/", 1)[0]
    records: dict[str, Record] = {}
    total = 0
    for entry in entries:
        top, _, below = entry.name.partition("/")
        if top != prefix:
            raise ArchiveError(f"records in more than one top-level directory ({prefix!r} and {top!r}): "
                               "torch reads only the first one's")
        key = below.encode("ascii").translate(_ASCII_LOWER).decode("ascii")
        if key in records:
            other = records[key].name
            raise ArchiveError(f"two records named {entry.name!r} (torch's reader would pick one of them)"
                               if other == entry.name else
                               f"two records named {other!r} and {entry.name!r} (equal up to case; torch's reader "
                               "would pick one of them)")
        entry = _with_local_header(stream, start, entry, cd_offset)
        if entry.method == 0 and entry.size != entry.compressed:
            raise ArchiveError(f"stored record {entry.name!r} declares {entry.size} bytes but holds {entry.compressed}")
        if entry.method == 8 and entry.size > MAX_RATIO * max(entry.compressed, 1):
            raise ArchiveError(f"record {entry.name!r} inflates {entry.compressed} bytes to {entry.size} "
                               f"(more than {MAX_RATIO}:1; zip bomb?)")
        total += entry.size
        records[key] = entry
    if total > MAX_RATIO * length:
        raise ArchiveError(f"the archive inflates {length} bytes to {total} (more than {MAX_RATIO}:1; zip bomb?)")
    spans = sorted((r.header, r.data + r.compressed, r.name) for r in records.values())
    for (_, end, name), (next_start, _, next_name) in zip(spans, spans[1:]):
        if end > next_start:
            raise ArchiveError(f"records {name!r} and {next_name!r} overlap")
    if spans[-1][1] > start + cd_offset:
        raise ArchiveError(f"record {spans[-1][2]!r} overlaps the central directory")
    return TorchArchive(prefix, records, length)


def read_record(stream: BinaryIO, archive: TorchArchive, record: Record, *, limit: int | None = None) -> bytes:
    """The record's bytes: bounded by its declared size (and ``limit``), inflated, CRC-checked."""
    if limit is not None and record.size > limit:
        raise ArchiveError(f"record {record.name!r} is {record.size} bytes, over the {limit}-byte bound")
    stream.seek(record.data)
    raw = stream.read(record.compressed)
    if len(raw) != record.compressed:
        raise ArchiveError(f"record {record.name!r} is truncated")
    if record.method == 8:
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(raw, record.size + 1)
        except zlib.error as exc:
            raise ArchiveError(f"record {record.name!r} is not a valid deflate stream ({exc})") from None
        if len(data) != record.size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise ArchiveError(f"record {record.name!r} does not inflate to its declared {record.size} bytes")
    else:
        data = raw
    if zlib.crc32(data) != record.crc:
        raise ArchiveError(f"record {record.name!r} fails its CRC check (corrupt or edited)")
    return data


def _check_name(raw: bytes) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ArchiveError(f"record name {raw[:60]!r} is not ASCII") from None
    if (not raw or len(raw) > MAX_NAME or not _NAME.match(name) or name.startswith("/") or name.endswith("/")
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise ArchiveError(f"record name {name[:80]!r} is not a plain relative path")
    return name


def _with_local_header(stream: BinaryIO, start: int, entry: Record, cd_offset: int) -> Record:
    if entry.header + _LOCAL.size > cd_offset:
        raise ArchiveError(f"record {entry.name!r} points past the records area")
    stream.seek(start + entry.header)
    header = stream.read(_LOCAL.size)
    sig, _need, flags, method, _t, _d, crc, csize, usize, n, e = _LOCAL.unpack(header)
    if sig != b"PK\x03\x04":
        raise ArchiveError(f"record {entry.name!r}: no local header where the directory says")
    if stream.read(n) != entry.name.encode("ascii") or method != entry.method or flags != entry.flags:
        raise ArchiveError(f"record {entry.name!r}: local header and central directory disagree")
    if 0xFFFFFFFF in (csize, usize):
        raise ArchiveError(f"record {entry.name!r} uses zip64 sizes (torch.save does not for records this size)")
    if not flags & 0x8 and (crc, csize, usize) != (entry.crc, entry.compressed, entry.size):
        raise ArchiveError(f"record {entry.name!r}: local header and central directory disagree on its size or CRC")
    return entry._replace(header=start + entry.header, data=start + entry.header + _LOCAL.size + n + e)


# --- reading a refused archive anyway, for its dangers -------------------------------------------------------------

MAX_SALVAGED = 4 * MAX_PICKLE  # bytes read and inflated out of one refused archive, every record together


class Salvaged(NamedTuple):
    name: str  # as the archive names it (anything at all: escape it before showing it)
    data: bytes | None  # None: the record could not be read (``problem``)
    problem: str | None = None  # why it could not be read, or was read only in part


def salvage(stream: BinaryIO) -> tuple[list[Salvaged], str | None]:
    """Every record a lenient reader gets out of a zip archive that ``open_archive`` refused (or that is not a
    torch.save archive), so that a known danger in any of them is still found: the central directory's entries,
    and the local headers walked from the start (a record the directory hides or names differently).  Nothing of
    what ``open_archive`` checks is required (names, layout, flags, CRCs, sizes agreeing); its bounds are kept:
    ``MAX_RECORDS``, ``MAX_PICKLE`` bytes per record (a longer one is read in part), ``MAX_RATIO`` for deflated
    records and for the whole archive, at most ``MAX_SALVAGED`` bytes in all.  Stored and deflated records are read
    (others are reported as unread).  Returns the records in file order and, when a bound stopped the reading
    early, why.  Raises ``OSError`` only from the stream."""
    start = stream.tell()
    stream.seek(0, 2)
    length = stream.tell() - start
    budget = min(MAX_SALVAGED, MAX_RATIO * max(length, 1) + (1 << 20))
    found: dict[int, tuple[str, int, int, int, int]] = {}  # local header offset -> name, flags, method, sizes

    def local(offset: int) -> tuple[str, int, int, int, int, int] | None:
        if offset < 0 or offset + _LOCAL.size > length:
            return None
        stream.seek(start + offset)
        header = stream.read(_LOCAL.size)
        if len(header) != _LOCAL.size or header[:4] != b"PK\x03\x04":
            return None
        _sig, _need, flags, method, _t, _d, _crc, csize, usize, n, e = _LOCAL.unpack(header)
        name = stream.read(n).decode("utf-8", "replace")
        return name, flags, method, csize, usize, offset + _LOCAL.size + n + e

    # the central directory (the last end record in the file's final 64 KiB + 22 bytes)
    tail_at = max(0, length - (_EOCD.size + 0xFFFF))
    stream.seek(start + tail_at)
    tail = stream.read(length - tail_at)
    at = tail.rfind(b"PK\x05\x06")
    stopped = None
    if at >= 0 and at + _EOCD.size <= len(tail):
        *_, n_total, cd_size, cd_offset, _comment = _EOCD.unpack_from(tail, at)
        if cd_offset + cd_size <= length:
            stream.seek(start + cd_offset)
            directory = stream.read(cd_size)
            pos = 0
            for _ in range(min(n_total, MAX_RECORDS)):
                if pos + _CENTRAL.size > len(directory):
                    break
                fields = _CENTRAL.unpack_from(directory, pos)
                if fields[0] != b"PK\x01\x02":
                    break
                n, e, c = fields[10], fields[11], fields[12]
                name = directory[pos + _CENTRAL.size:pos + _CENTRAL.size + n].decode("utf-8", "replace")
                found.setdefault(fields[16], (name, fields[3], fields[4], fields[8], fields[9]))
                pos += _CENTRAL.size + n + e + c
    # the local headers, one after the other from the start
    offset = 0
    while len(found) < MAX_RECORDS:
        header = local(offset)
        if header is None:
            break
        name, flags, method, csize, usize, data_at = header
        if offset in found and flags & 0x8:
            csize = found[offset][3]  # sizes follow the data (a data descriptor): the directory's
        found.setdefault(offset, (name, flags, method, csize, usize))
        if flags & 0x8 and not csize:
            break  # its end is unknown here
        offset = data_at + csize
        if flags & 0x8:  # skip the data descriptor (with or without its signature)
            stream.seek(start + offset)
            offset += 16 if stream.read(4) == b"PK\x07\x08" else 12
    if len(found) >= MAX_RECORDS:
        stopped = f"more than {MAX_RECORDS} records: the rest were not read"

    records: list[Salvaged] = []
    for header_at in sorted(found):
        name, _flags, method, csize, _usize = found[header_at]
        header = local(header_at)
        if header is None:
            records.append(Salvaged(name, None, "no local header where the directory says"))
            continue
        if method not in (0, 8):
            records.append(Salvaged(name, None, f"compression method {method}: not read"))
            continue
        data_at = header[5]
        csize = min(csize, max(length - data_at, 0), budget)
        stream.seek(start + data_at)
        raw = stream.read(min(csize, MAX_PICKLE + (0 if method == 0 else 1 << 16)))  # deflate: enough for the output
        problem = None
        if method == 0:
            data = raw
            if csize > MAX_PICKLE:
                problem = f"read in part: over {MAX_PICKLE} bytes"
        else:
            limit = min(MAX_PICKLE, MAX_RATIO * max(csize, 1) + (1 << 20), budget)
            inflater = zlib.decompressobj(-15)
            try:
                data = inflater.decompress(raw, limit)
            except zlib.error as exc:
                records.append(Salvaged(name, None, f"not a valid deflate stream ({exc})"))
                continue
            if inflater.unconsumed_tail:
                problem = f"read in part: it inflates to more than {limit} bytes"
        budget -= len(data) + len(raw)
        records.append(Salvaged(name, data, problem))
        if budget <= 0:
            stopped = f"the records read out of it exceed {MAX_SALVAGED} bytes (or {MAX_RATIO} times its size)"
            break
    return records, stopped
