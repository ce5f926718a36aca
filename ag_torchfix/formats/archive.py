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
        if flags & 0x1 or flags & 0x40 or method not in (0, 8):
            raise ArchiveError(f"record {name!r} is encrypted or uses compression method {method} "
                               "(torch archives store or deflate)")
        if disk_start or 0xFFFFFFFF in (csize, usize, offset):
            raise ArchiveError(f"record {name!r} needs zip64")
        entries.append(Record(name, method, flags, crc, csize, usize, offset, -1))
    if pos != cd_size:
        raise ArchiveError("the central directory holds more than its entries")
    if not entries:
        raise ArchiveError("empty archive")

    prefix = entries[0].name.split("/", 1)[0]
    records: dict[str, Record] = {}
    total = 0
    for entry in entries:
        top, _, below = entry.name.partition("/")
        if top != prefix or not below:
            raise ArchiveError(f"records in more than one top-level directory ({prefix!r} and {entry.name!r}): "
                               "torch reads only the first one's")
        key = below.encode("ascii").translate(_ASCII_LOWER).decode("ascii")
        if key in records:
            raise ArchiveError(f"two records named {records[key].name!r} and {entry.name!r} (equal up to case; torch's "
                               "reader would pick one of them)")
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
