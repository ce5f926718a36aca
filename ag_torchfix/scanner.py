"""Audit files and predictor directories without loading them: ``ag-torchfix scan``.

Every pickle found (torch zip archives, torch's legacy format, plain and compressed pickles) is read
opcode by opcode with ``pickle_scan`` (nothing is unpickled), attributed to its AutoGluon model from
the predictor layout, and judged with ``policy``:
- ``model-internals.pkl`` (fastai internals) against the allowlist the secure loader enforces;
- AutoGluon's other pickles are loaded with full pickle and are not covered by ag_torchfix outside
  strict mode: they need trust, unless something in them is plainly dangerous.  With ``strict=True``
  (``scan --strict``) they are judged against the strict allowlist instead: will the directory load
  in strict mode?
Reading is bounded: records and streams are read in windows, compressed data is checked for
implausible ratios, symlinked directories are not followed.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from . import pickle_scan, policy

SCHEMA = "ag_torchfix.scan/1"

ALLOWED, NEEDS_TRUST, DANGEROUS, UNREADABLE = "allowed", "needs-trust", "dangerous", "unreadable"
# Exit codes, and which verdict wins when a run has several (a known danger outranks everything).
EXIT_CODES = {ALLOWED: 0, NEEDS_TRUST: 1, DANGEROUS: 2, UNREADABLE: 3}
_PRECEDENCE = (DANGEROUS, UNREADABLE, NEEDS_TRUST, ALLOWED)

MAX_RECORD = 8 << 30  # a data.pkl record larger than this is refused as implausible
MAX_RATIO = 1000  # compressed records inflating more than this are treated as zip bombs
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib")
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
COMPRESSED = {b"\x1f\x8b": ("gzip", gzip.open), b"BZh": ("bz2", bz2.open), b"\xfd7zXZ\x00": ("xz", lzma.open)}


@dataclass
class GlobalReport:
    name: str
    status: str  # policy.ALLOWED / UNKNOWN / DANGEROUS
    reason: str
    uses: list[str]


@dataclass
class FileReport:
    path: str
    model: str | None
    kind: str  # torch-zip, torch-legacy, pickle, gzip-pickle, ...
    role: str  # fastai-internals, autogluon-pickle, pickle
    covered: bool  # loaded by ag_torchfix's secure loader (or strict mode, with --strict)
    verdict: str
    size: int = 0
    globals: list[GlobalReport] = field(default_factory=list)
    constructs: list[str] = field(default_factory=list)
    error: str | None = None
    note: str | None = None


@dataclass
class DirectoryReport:
    path: str
    predictor: bool
    verdict: str
    loads_securely: bool
    files: int
    needs_trust: list[str]
    dangerous: list[str]
    unreadable: list[str]


@dataclass
class Report:
    files: list[FileReport]
    directories: list[DirectoryReport]
    strict: bool = False

    @property
    def verdict(self) -> str:
        return _worst(f.verdict for f in self.files) if self.files else ALLOWED

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_json(self) -> dict:
        from . import __version__

        counts = {v: sum(f.verdict == v for f in self.files) for v in EXIT_CODES}
        return {"schema": SCHEMA, "version": __version__, "strict": self.strict, "verdict": self.verdict,
                "exit_code": self.exit_code, "summary": {"files": len(self.files), **counts},
                "directories": [asdict(d) for d in self.directories], "files": [asdict(f) for f in self.files]}


def scan_paths(paths: Iterable[str], *, strict: bool = False,
               progress: Callable[[int, int, str], None] | None = None) -> Report:
    """Scan files and directories; ``progress(done, total, path)`` is called per file."""
    roots = [os.fspath(p) for p in paths]
    plan: list[tuple[str, str, str | None]] = []  # (root, file, problem found while walking)
    for root in roots:
        plan.extend((root, f, problem) for f, problem in _discover(root))
    files = []
    for done, (root, path, problem) in enumerate(plan, 1):
        if progress:
            progress(done, len(plan), path)
        files.append(_unreadable(path, problem) if problem else scan_file(path, strict=strict))
    directories = [_directory_report(root, [f for (r, _, _), f in zip(plan, files) if r == root], strict)
                   for root in roots if os.path.isdir(root) and not os.path.islink(root)]
    return Report(files, directories, strict)


def scan_file(path: str, *, strict: bool = False) -> FileReport:
    """Scan one file, whatever it is; never raises for bad input."""
    model = model_of(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(16)
            fh.seek(0)
            if not head:
                return _unreadable(path, "empty file", model=model)
            if head.startswith(b"PK\x03\x04"):
                return _scan_torch_zip(path, fh, model, size, strict)
            for magic, (kind, opener) in COMPRESSED.items():
                if head.startswith(magic):
                    with opener(fh) as inner:
                        return _scan_plain(path, inner, f"{kind}-pickle", model, size, strict)
            kind = "torch-legacy" if head.startswith(LEGACY_TORCH_MAGIC) else "pickle"
            return _scan_plain(path, fh, kind, model, size, strict)
    except OSError as exc:
        return _unreadable(path, f"cannot read: {exc.strerror or exc}", model=model)
    except (EOFError, ValueError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        return _unreadable(path, f"corrupt: {type(exc).__name__}: {exc}", model=model)


def model_of(path: str) -> str | None:
    """The AutoGluon model a file belongs to, from the predictor layout (None outside a predictor)."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        root = os.sep.join(parts[:i]) or os.sep
        if os.path.isfile(os.path.join(root, "predictor.pkl")):
            rel = parts[i:]
            if rel[:1] == ["models"] and len(rel) >= 3:
                # models/<model>/file, models/<model>/<bagged child>/file, models/<model>/utils/...
                return rel[1] if len(rel) == 3 or rel[2] == "utils" else f"{rel[1]}/{rel[2]}"
            if rel[:1] == ["models"]:
                return "(trainer)"
            if rel[:2] == ["utils", "attr"] and len(rel) >= 4:
                return rel[2]
            return "(predictor)" if len(rel) == 1 else f"({rel[0]})"
    return None


# --- kinds of files ---------------------------------------------------------------------------------

def _scan_torch_zip(path: str, fh: BinaryIO, model, size: int, strict: bool) -> FileReport:
    try:
        archive = zipfile.ZipFile(fh)
        records = [i for i in archive.infolist() if i.filename.count("/") == 1]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return _unreadable(path, f"corrupt or truncated zip archive ({exc})", model=model, kind="torch-zip")
    pickles = [i for i in records if i.filename.endswith("/data.pkl")]
    if len(pickles) != 1:
        problem = ("a TorchScript archive" if any(i.filename.endswith("/constants.pkl") for i in records)
                   else f"a zip archive with {len(pickles)} data.pkl records, not a torch.save archive")
        return _unreadable(path, f"it is {problem}", model=model, kind="zip")
    info = pickles[0]
    if info.file_size > MAX_RECORD or (info.compress_size and info.file_size > MAX_RATIO * info.compress_size
                                       and info.file_size > (1 << 20)):
        return _unreadable(path, f"implausible data.pkl record ({info.file_size} bytes from {info.compress_size}; "
                                 "zip bomb?)", model=model, kind="torch-zip")
    internals = os.path.basename(path) == "model-internals.pkl"
    role = "fastai-internals" if internals else "torch-archive"
    try:
        with archive.open(info) as data:
            result = pickle_scan.scan(data)
            while data.read(1 << 20):  # drain to the end so that the CRC is checked
                pass
    except pickle_scan.ScanError as exc:
        return _unreadable(path, f"unreadable pickle: {exc}", model=model, kind="torch-zip", role=role)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return _unreadable(path, f"corrupt zip record: {exc}", model=model, kind="torch-zip", role=role)
    if internals:
        return _judged(path, model, "torch-zip", role, size, result, policy.fastai_internals(), covered=True)
    return _judged(path, model, "torch-zip", role, size, result, policy.fastai_internals(), covered=False,
                   note="torch archive that is not fastai internals: ag_torchfix does not load it")


def _scan_plain(path: str, fh: BinaryIO, kind: str, model, size: int, strict: bool) -> FileReport:
    role = "autogluon-pickle" if model is not None else "pickle"
    try:
        result = pickle_scan.scan(fh)
        if kind == "torch-legacy":  # magic, protocol, sys_info, then the object and its storage keys
            for _ in range(4):
                extra = pickle_scan.scan(fh)
                for name, uses in extra.globals.items():
                    result.globals.setdefault(name, set()).update(uses)
                result.problems.extend(extra.problems)
    except pickle_scan.ScanError as exc:
        return _unreadable(path, f"not a readable pickle: {exc}", model=model, kind=kind, role=role)
    if kind == "torch-legacy":
        return _judged(path, model, kind, "torch-legacy", size, result, policy.fastai_internals(), covered=False,
                       note="torch's legacy (non-zip) format: the secure loader refuses it")
    if strict:
        from . import strict_mode

        return _judged(path, model, kind, role, size, result, strict_mode.profile(), covered=True,
                       note="strict mode loads this with ag_torchfix's restricted unpickler")
    return _judged(path, model, kind, role, size, result, policy.fastai_internals(), covered=False,
                   note="AutoGluon loads this with full pickle; ag_torchfix covers it only in strict mode (--strict)")


def _judged(path, model, kind, role, size, result: pickle_scan.ScanResult, profile: policy.Profile, *,
            covered: bool, note: str | None = None) -> FileReport:
    verdict = policy.judge(result, profile if covered else _untorch(profile))
    globals_ = [GlobalReport(n, s, r, sorted(result.globals[n])) for n, (s, r) in verdict.globals.items()]
    constructs = list(verdict.constructs)
    if any(p.kind == "out-of-band-buffer" for p in result.problems):
        return FileReport(path, model, kind, role, covered, UNREADABLE, size, globals_, constructs,
                          error="uses protocol 5 out-of-band buffers that are not in the file", note=note)
    if any(g.status == policy.DANGEROUS for g in globals_):
        outcome = DANGEROUS
    elif covered and verdict.ok:
        outcome = ALLOWED
    else:
        outcome = NEEDS_TRUST
    return FileReport(path, model, kind, role, covered, outcome, size, globals_, constructs, note=note)


def _untorch(profile: policy.Profile) -> policy.Profile:
    """A file torch's weights-only unpickler will not load: its opcodes are not held against it."""
    return policy.Profile(profile.name, profile.entries, profile.shims, profile.builtin, torch_opcodes_only=False)


def _unreadable(path: str, error: str, *, model=None, kind: str = "unknown", role: str = "unknown") -> FileReport:
    return FileReport(path, model if model is not None else model_of(path) if os.path.exists(path) else None,
                      kind, role, False, UNREADABLE, error=error)


# --- walking ----------------------------------------------------------------------------------------

def _discover(root: str) -> Iterator[tuple[str, str | None]]:
    """(file, problem) for every candidate under ``root``; problems are reported, not raised."""
    try:
        st = os.stat(root)
    except OSError as exc:
        yield root, _os_problem(root, exc)
        return
    if not stat.S_ISDIR(st.st_mode):
        yield root, None if stat.S_ISREG(st.st_mode) else "not a regular file"
        return
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)  # follows symlinks to files; loops and dangling links fail here
            except OSError as exc:
                yield path, _os_problem(path, exc)
                continue
            if stat.S_ISDIR(st.st_mode):
                continue  # a symlinked directory: not followed (no loops, no escaping the tree)
            if stat.S_ISREG(st.st_mode) and _is_candidate(path):
                yield path, None
    for exc in errors:
        yield exc.filename or root, _os_problem(exc.filename or root, exc)


def _is_candidate(path: str) -> bool:
    if path.endswith(PICKLE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return True  # reported when scanned
    return head[:1] == b"\x80" or any(head.startswith(m) for m in COMPRESSED) or (
        head.startswith(b"PK\x03\x04") and _zip_has_data_pkl(path))


def _zip_has_data_pkl(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _os_problem(path: str, exc: OSError) -> str:
    import errno

    if exc.errno == errno.ELOOP:
        return "cannot read: symlink loop"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return "cannot read: dangling symlink"
    return f"cannot read: {exc.strerror or exc}"


def _directory_report(root: str, files: list[FileReport], strict: bool) -> DirectoryReport:
    rel = lambda f: os.path.relpath(f.path, root)  # noqa: E731
    return DirectoryReport(
        path=root,
        predictor=os.path.isfile(os.path.join(root, "predictor.pkl")),
        verdict=_worst(f.verdict for f in files) if files else ALLOWED,
        loads_securely=bool(files) and all(f.verdict == ALLOWED for f in files),
        files=len(files),
        needs_trust=[rel(f) for f in files if f.verdict == NEEDS_TRUST],
        dangerous=[rel(f) for f in files if f.verdict == DANGEROUS],
        unreadable=[rel(f) for f in files if f.verdict == UNREADABLE],
    )


def _worst(verdicts: Iterable[str]) -> str:
    seen = set(verdicts)
    return next((v for v in _PRECEDENCE if v in seen), ALLOWED)
