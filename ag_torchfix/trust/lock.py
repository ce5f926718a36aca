"""Content-bound trust: ``ag-torchfix lock`` / ``ag-torchfix verify``.

A lock is ``DIR/ag_torchfix.lock``: JSON (schema ``ag_torchfix.lock/1``) listing every regular file of
the predictor directory with its size and SHA-256, written canonically (sorted keys, fixed
separators) so that its own SHA-256 (the *lock digest*, printed as ``sha256:<hex>``) names exactly
those bytes.  Trusting the digest (AG_TORCHFIX_TRUST=sha256:<hex>, ``trusted(lock=...)``) trusts
exactly the listed files, and only while the bytes being loaded hash to the listed values
(``trust.locked_file`` + ``fallback``).  Symlinks and non-regular files are never locked: a lock
describes bytes, not where a link points.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field

from ..formats import files
from .rules import LOCK_NAME, LOCK_SCHEMA, MAX_LOCK_BYTES, parse_lock

CHUNK = 1 << 20


class LockError(Exception):
    """The directory cannot be locked as it is (the reason is for the user)."""


@dataclass
class Verification:
    ok: bool
    lock: str  # the lock file
    digest: str | None  # "sha256:<hex>" of the lock, when readable
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # (file, expected sha256, actual sha256)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    not_regular: list[str] = field(default_factory=list)  # symlinks, FIFOs ... where the lock expects a file
    error: str | None = None  # no readable lock
    expected: str | None = None  # the digest the caller trusts (``verify --expect``), when given

    @property
    def unexpected(self) -> bool:
        """The lock is not the one the caller trusts (``expect``)."""
        return self.expected is not None and self.digest != self.expected

    @property
    def exit_code(self) -> int:
        return 3 if self.error else 0 if self.ok else 2

    def to_json(self) -> dict:
        from ..core.versions import PACKAGE_VERSION as __version__

        return {"schema": "ag_torchfix.verify/1", "version": __version__, "lock": self.lock, "digest": self.digest,
                "ok": self.ok, "exit_code": self.exit_code, "error": self.error, "expected": self.expected,
                "changed": [{"path": p, "expected": f"sha256:{e}", "actual": f"sha256:{a}" if a[:1] != "(" else a}
                            for p, e, a in self.changed],
                "added": self.added, "removed": self.removed, "not_regular": self.not_regular}


def file_digest(path: str, expected_size: int | None = None) -> tuple[int, str | None]:
    """(size, SHA-256) of a regular file.  With ``expected_size``, a file of another size is not hashed (None): a
    sparse file of terabytes listed in place of a small one is a mismatch at once, not hours of hashing."""
    digest, size = hashlib.sha256(), 0
    with files.open_regular(path) as fh:
        if expected_size is not None:
            actual = os.fstat(fh.fileno()).st_size
            if actual != expected_size:
                return actual, None
        limit = expected_size + 1 if expected_size is not None else None
        while chunk := fh.read(CHUNK if limit is None else min(CHUNK, limit - size)):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _walk(directory: str) -> tuple[list[str], list[str]]:
    """(regular files, everything else) below ``directory``, relative with '/', the lock itself excluded."""
    regular, other = [], []
    for full, kind, problem in files.walk(directory):
        rel = os.path.relpath(full, directory).replace(os.sep, "/")
        if rel == LOCK_NAME:
            continue
        if kind == "file" and problem is None:
            regular.append(rel)
        else:
            other.append(rel)
    return sorted(regular), sorted(other)


def build(directory: str) -> dict:
    """The lock document for ``directory``."""
    if not os.path.isdir(directory):
        raise LockError(f"{directory} is not a directory")
    regular, other = _walk(directory)
    if other:
        raise LockError("only regular files can be locked; these are symlinks or special files: " + ", ".join(other[:10]))
    if not regular:
        raise LockError(f"{directory} holds no files")
    files = {}
    for rel in regular:
        size, sha = file_digest(os.path.join(directory, *rel.split("/")))
        files[rel] = {"size": size, "sha256": sha}
    from ..core.versions import PACKAGE_VERSION as __version__

    return {"schema": LOCK_SCHEMA, "tool": f"ag_torchfix {__version__}", "files": files}


def encode(doc: dict) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=1, separators=(",", ": ")) + "\n").encode()


def write(directory: str) -> tuple[str, str, dict]:
    """Write ``DIR/ag_torchfix.lock``; returns (its path, its digest "sha256:<hex>", the document)."""
    doc = build(directory)
    data = encode(doc)
    if len(data) > MAX_LOCK_BYTES:
        raise LockError(f"the lock would be {len(data)} bytes, over {MAX_LOCK_BYTES}")
    path = os.path.join(directory, LOCK_NAME)
    # a fresh temporary file (O_EXCL, never following a link planted under a fixed name), then an atomic rename
    fd, tmp = tempfile.mkstemp(prefix=LOCK_NAME + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), 0o644)  # the descriptor, never the name (a link planted under it)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path, "sha256:" + hashlib.sha256(data).hexdigest(), doc


def verify(directory: str, expect: str | None = None) -> Verification:
    """Check ``directory`` against its lock.  The lock is read once, through the regular-file opener (a FIFO or
    device is an error, never a hang), and the digest reported is of exactly the bytes whose list is checked.  With
    ``expect`` ("sha256:<hex>", the digest the user trusts) a lock with another digest does not match."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        with files.open_regular(path) as fh:
            raw = fh.read(MAX_LOCK_BYTES + 1)
    except OSError as exc:
        return Verification(False, path, None, error=f"no readable lock: {exc.strerror or exc}")
    if len(raw) > MAX_LOCK_BYTES:
        return Verification(False, path, None, error=f"the lock is larger than {MAX_LOCK_BYTES} bytes")
    files_listed = parse_lock(raw).get("files")
    if not isinstance(files_listed, dict) or not all(isinstance(v, dict) for v in files_listed.values()):
        return Verification(False, path, None, error="the lock is not an ag_torchfix.lock/1 document")
    result = Verification(True, path, "sha256:" + hashlib.sha256(raw).hexdigest(), expected=expect)
    regular, other = _walk(directory)
    present = set(regular)
    for rel, entry in sorted(files_listed.items()):
        full = os.path.join(directory, *rel.split("/"))
        if rel in other:
            result.not_regular.append(rel)
        elif rel not in present:
            result.removed.append(rel)
        else:
            expected_size = entry.get("size")
            try:
                size, sha = file_digest(full, expected_size if type(expected_size) is int else None)
            except files.NotRegular:  # replaced by a FIFO or device since the walk
                result.not_regular.append(rel)
                continue
            except OSError:  # removed since the walk
                result.removed.append(rel)
                continue
            if size != entry.get("size") or sha != entry.get("sha256"):
                result.changed.append((rel, str(entry.get("sha256")), sha or f"(not hashed: {size} bytes, not "
                                                                           f"{entry.get('size')})"))
    result.added = sorted(present - set(files_listed))
    result.not_regular += sorted(set(other) - set(files_listed))
    result.ok = not (result.changed or result.added or result.removed or result.not_regular or result.unexpected)
    return result
