"""Audit files and predictor directories: ``ag-torchfix scan``.

Every pickle found (torch zip archives, torch's legacy format, plain and gzip/bz2/xz pickles) is
read opcode by opcode with ``pickle_scan`` (nothing is unpickled), attributed to its AutoGluon model
from the predictor layout, and judged with ``policy``:
- ``model-internals.pkl`` by role, not content: AutoGluon hands that file to the secure loader whatever it
  holds, so it gets exactly the loader's verdict (its size limit, the torch zip format, then
  ``policy.check_internals``); a plain, gzip or legacy pickle there is unreadable to the loader (its
  dangers are still reported);
- any other torch file: would torch's own ``torch.load(weights_only=True)`` load it, and which
  globals would it need allowlisted (only this answer imports torch);
- AutoGluon's other pickles are loaded with full pickle outside strict mode: they need trust, unless
  they hold no globals at all (plain data) or something in them is plainly dangerous.  With
  ``strict=True`` (``scan --strict``) the files strict mode loads are put through strict mode's own
  restricted load and its checks of what AutoGluon later calls (nothing in them runs: that is what
  strict mode guarantees), and files AutoGluon reads by other means need trust.
Every pickle in a file is read (torch's legacy format holds several; data after the last STOP is
reported and scanned when it parses as a pickle), and so is every pickle nested in a value (``formats.nested``:
raw, hex, base64, compressed; its findings are the file's).  Findings made before a file turns out to be
malformed are kept: a known danger wins, also in a zip archive refused as a whole (every record that can be read
is scanned: ``archive.salvage``).  Reading is bounded: pickles in windows, decompression by
ratio, symlinked directories not followed but reported (AutoGluon would read through them), non-regular
files never opened but reported, as are directories where AutoGluon reads a file.  A failure on one
file never aborts the run.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from ..formats import archive, files, nested, pickle_scan, text
from ..policy import verdicts as policy
from ..core.layout import model_of, predictor_root

SCHEMA = "ag_torchfix.scan/2"

ALLOWED, NEEDS_TRUST, DANGEROUS, UNREADABLE = "allowed", "needs-trust", "dangerous", "unreadable"
# Exit codes, and which verdict wins when a run has several (a known danger outranks everything).
EXIT_CODES = {ALLOWED: 0, NEEDS_TRUST: 1, DANGEROUS: 2, UNREADABLE: 3}
_PRECEDENCE = (DANGEROUS, UNREADABLE, NEEDS_TRUST, ALLOWED)

MAX_DECOMPRESSION_RATIO = 100  # gzip/bz2/xz pickles inflating more than this are treated as bombs
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib")
OTHER_READ = (".ubj", "version.txt", "metadata.json")  # files AutoGluon or XGBoost read besides pickles
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
LEGACY_PICKLES = 5  # magic number, protocol version, sys info, the object, its storage keys; raw storages follow
COMPRESSED = {b"\x1f\x8b": ("gzip", gzip.GzipFile), b"BZh": ("bz2", bz2.BZ2File), b"\xfd7zXZ\x00": ("xz", lzma.LZMAFile)}
# Files strict mode loads through AutoGluon's load_pkl.load (relative to the predictor root).
STRICT_LOADED = ("predictor.pkl", "learner.pkl", "models/trainer.pkl")
INTERNALS = "model-internals.pkl"  # the file AutoGluon hands to the secure loader (NNFastAiTabularModel.load)
NPY_MAGIC = b"\x93NUMPY"  # numpy's .npy format: a header, then the array's bytes (a pickle for an object dtype)
NPY_MAX_HEADER = 1 << 16
SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
TORCHSCRIPT_OWN = "torch.jit._pickle."  # list and type-tag builders every TorchScript archive's pickles name
NOT_REGULAR = "not a regular file (a FIFO, device, socket or directory): not opened"


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
    role: str  # fastai-internals, autogluon-pickle, torch-archive, pickle, ...
    covered: bool  # loaded by ag_torchfix's secure loader (or strict mode, with --strict)
    verdict: str
    size: int = 0
    globals: list[GlobalReport] = field(default_factory=list)
    constructs: list[str] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    pickles: int = 1  # pickles read in the file
    trailing: int | None = None  # offset of bytes after the last pickle that are not a pickle


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
        from ..core.versions import PACKAGE_VERSION as __version__

        counts = {v: sum(f.verdict == v for f in self.files) for v in EXIT_CODES}
        return {"schema": SCHEMA, "version": __version__, "strict": self.strict, "verdict": self.verdict,
                "exit_code": self.exit_code, "summary": {"files": len(self.files), **counts},
                "stack_tables": {"stack": stack_key(), "measured": has_stack_tables()},
                "directories": [asdict(d) for d in self.directories], "files": [asdict(f) for f in self.files]}


def stack_key() -> str:
    from ..policy import stack_tables

    return stack_tables.stack_key()


def has_stack_tables() -> bool:
    """Whether this stack's facts about fastai's and torch's classes ship with the package (``stack_tables``): then
    the scan imports neither fastai nor torch; otherwise it imports them to ask (slower, same verdicts)."""
    from ..policy import stack_tables

    return stack_tables.stack() is not None


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
    directories = [_directory_report(root, [f for (r, _, _), f in zip(plan, files) if r == root])
                   for root in roots if os.path.isdir(root) and not os.path.islink(root)]
    return Report(files, directories, strict)


def scan_file(path: str, *, strict: bool = False) -> FileReport:
    """Scan one file, whatever it is; never raises for bad input."""
    model = model_of(path)
    try:
        with files.open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if path.endswith(OTHER_READ):
                return _scan_other(path, fh, model, size, strict)
            if os.path.basename(path) == INTERNALS:
                return _scan_internals(path, fh, model, size, strict)
            return _scan_content(path, fh, model, size, strict)
    except files.NotRegular:
        return _unreadable(path, NOT_REGULAR, model=model,
                           role="fastai-internals" if os.path.basename(path) == INTERNALS else "unknown")
    except OSError as exc:
        return _unreadable(path, _os_problem(path, exc), model=model)
    except Exception as exc:  # one bad file never aborts the run
        from ..core.errors import SecureLoadError

        reason = exc.reason if isinstance(exc, SecureLoadError) else f"{type(exc).__name__}: {str(exc)[:200]}"
        return _unreadable(path, f"cannot be read: {reason}", model=model)


def _scan_content(path: str, fh: BinaryIO, model, size: int, strict: bool) -> FileReport:
    """Route by content: torch zip, gzip/bz2/xz pickle, torch legacy, plain pickle."""
    head = fh.read(16)
    fh.seek(0)
    if not head:
        return _unreadable(path, "empty file", model=model)
    if archive.is_zip(head):
        return _scan_torch_zip(path, fh, model, size, strict)
    if head.startswith(NPY_MAGIC):
        return _scan_npy(path, fh, model, size, strict)
    if head.startswith(SEVEN_ZIP_MAGIC):
        return _unreadable(path, "it is a 7z archive: the scanner has no 7z reader, so the files in it were not "
                           "scanned", model=model, kind="7z")
    for magic, (kind, opener) in COMPRESSED.items():
        if head.startswith(magic):
            with opener(fileobj=fh) as inner:
                return _scan_plain(path, _Inflated(inner, size), f"{kind}-pickle", model, size, strict)
    kind = "torch-legacy" if head.startswith(LEGACY_TORCH_MAGIC) else "pickle"
    return _scan_plain(path, fh, kind, model, size, strict)


def _scan_internals(path: str, fh: BinaryIO, model, size: int, strict: bool) -> FileReport:
    """A ``model-internals.pkl``: the secure loader's verdict, in the loader's order (``secure_load``): a file over
    its in-memory limit is refused (only trust loads it, with full pickle), an empty file or anything but a torch
    zip archive is unreadable, and a zip archive gets ``policy.check_internals``.  Whatever the content, what the
    scan finds dangerous in it is reported as such."""
    MAX_IN_MEMORY = policy.MAX_IN_MEMORY  # the secure loader's limit  # noqa: N806

    head = fh.read(16)
    fh.seek(0)
    if not head:
        return _unreadable(path, "empty file", model=model, role="fastai-internals")
    if head[:4] == b"PK\x03\x04":
        report = _scan_torch_zip(path, fh, model, size, strict)
    else:
        report = _scan_content(path, fh, model, size, strict)
        report.role, report.covered = "fastai-internals", True
        if report.verdict != DANGEROUS:
            report.verdict = UNREADABLE
            report.note = None
            report.error = (
                "the secure loader refuses it: it is in torch's legacy (non-zip) format or is a plain pickle; "
                "the secure loader reads only torch zip archives (torch.save's format since torch 1.6)"
                if head[:1] == b"\x80" else
                f"the secure loader refuses it: it is not a torch zip archive (starts with {head[:4]!r})")
    if size > MAX_IN_MEMORY:
        report.role, report.covered = "fastai-internals", True
        if report.verdict != DANGEROUS:
            report.verdict = NEEDS_TRUST
        report.error = (f"it is larger than {MAX_IN_MEMORY} bytes: the secure loader refuses it (it reads a file once "
                        "into memory); only a trusted file is loaded, with full pickle")
        report.note = None
    return report


def _check_learner(report: FileReport, fh: BinaryIO, check=None) -> None:
    """The rest of the loader's verdict on internals the static pass accepts: the weights-only read into inert
    records and the learner schema.  On a stack with measured tables (``stack_tables``) the records are read
    without importing torch, numpy or pandas (``record_reader``); otherwise, or when the file names something that
    reader has no stand-in for, by the secure load itself (``secure_load.check_learner``: imports torch and fastai).
    Nothing from the file runs either way."""
    if report.size > policy.MAX_IN_MEMORY:
        return  # judged by size in _scan_internals
    fh.seek(0)
    if check is not None and _check_learner_offline(report, fh, check):
        return
    from ..load import secure_load
    from ..core.errors import SecureLoadError, UnreadableFileError

    fh.seek(0)
    try:
        secure_load.check_learner(fh.read(), path=report.path, model=report.model)
    except UnreadableFileError as exc:
        report.verdict, report.error = UNREADABLE, exc.reason
    except SecureLoadError as exc:
        report.verdict = NEEDS_TRUST
        report.constructs.extend(getattr(exc, "constructs", None) or [exc.reason])


def _check_learner_offline(report: FileReport, fh: BinaryIO, check) -> bool:
    """``_check_learner`` without torch: True when it decided (the report updated as the loader would judge it)."""
    from ..load import materialize, record_reader
    from ..policy import allowlist, stack_tables

    importable = stack_tables.importable()
    if importable is None:
        return False  # no measured table for this stack: the libraries themselves decide (imported)
    profile = policy.fastai_internals()
    missing = sorted(name for name in check.scan.globals
                     if (own := allowlist.canonical(name)) not in importable and own not in profile.shims
                     and own in profile.entries and not profile.entries[own].torch_default)
    if missing:  # what the secure load's scope refuses before torch reads anything
        report.verdict = NEEDS_TRUST
        report.constructs.append("it references allowlisted names this environment cannot import: "
                                 + ", ".join(missing) + " (was it written by another fastai/fastcore version?)")
        return True
    try:
        materialize.check(record_reader.read(check.data, check.archive), record_reader.OFFLINE)
    except record_reader.Undecided:
        return False
    except record_reader.Unbuildable as exc:
        report.verdict = NEEDS_TRUST
        report.constructs.append(f"rebuilding it under the allowlist failed ({exc})")
    except materialize.SchemaError as exc:
        report.verdict = NEEDS_TRUST
        report.constructs.append(f"it is not a genuine learner at {exc.where}: {exc.reason}")
    return True


# --- kinds of files ---------------------------------------------------------------------------------

def _scan_torch_zip(path: str, fh: BinaryIO, model, size: int, strict: bool) -> FileReport:
    internals = os.path.basename(path) == "model-internals.pkl"
    role = "fastai-internals" if internals else "torch-archive"
    if internals:
        search = _nested_search()
        try:
            check = policy.check_internals(fh, payloads=search.payloads)  # one pass: the check and the nested search
        except policy.Unreadable as exc:
            return _danger_first(_unreadable(path, str(exc), model=model, kind="torch-zip", role=role), fh)
        report = _report(path, model, "torch-zip", role, size, check.scan, check.judgement, covered=True)
        if report.verdict == ALLOWED:
            _check_learner(report, fh, check)
        return _with_nested(report, search)
    try:
        arch = archive.open_archive(fh)
        record = arch.find("data.pkl")
        if record is None or arch.find("constants.pkl") is not None:
            what = "a TorchScript archive" if record is not None else "a zip archive without data.pkl"
            return _refused_zip(path, fh, model, size, f"it is {what}, not a torch.save archive", "zip",
                                torchscript=record is not None)
        data = archive.read_record(fh, arch, record, limit=archive.MAX_PICKLE)
    except archive.ArchiveError as exc:
        return _refused_zip(path, fh, model, size, f"it is not an archive torch would read the same way: {exc}",
                            "torch-zip")
    search = _nested_search()
    result = pickle_scan.scan(data, payloads=search.payloads)
    return _with_nested(_torch_default_report(path, model, "torch-zip", size, [result]), search)


def _torch_default_report(path, model, kind, size, results) -> FileReport:
    """Would ``torch.load(weights_only=True)`` load this (torch's own defaults), and what would it need?"""
    merged = _merge(results)
    verdict = policy.judge(merged, torch_default_profile())
    report = _report(path, model, kind, "torch-archive", size, merged, verdict, covered=False, pickles=len(results))
    if report.verdict == NEEDS_TRUST and verdict.ok:
        report.verdict = ALLOWED  # what torch's own default takes (ag_torchfix does not load it: covered stays False)
    if report.verdict == NEEDS_TRUST and not verdict.constructs:
        needed = verdict.names(policy.UNKNOWN)
        report.note = ("torch.load(weights_only=True) would need these globals allowlisted "
                       "(torch.serialization.add_safe_globals): " + ", ".join(needed))
    elif report.verdict == NEEDS_TRUST:
        report.note = "torch.load(weights_only=True) would refuse it: " + "; ".join(verdict.constructs[:3])
    elif report.verdict == ALLOWED:
        report.note = "loads with torch's weights-only default (torch.load(weights_only=True))"
    return report


def _scan_plain(path: str, fh: BinaryIO, kind: str, model, size: int, strict: bool) -> FileReport:
    search = _nested_search()
    return _with_nested(_scan_pickles(path, fh, kind, model, size, strict, search.payloads), search)


def _scan_pickles(path: str, fh: BinaryIO, kind: str, model, size: int, strict: bool, payloads) -> FileReport:
    role = "autogluon-pickle" if model is not None else "pickle"
    reader = pickle_scan.Reader(fh)
    if kind == "torch-legacy":
        results = pickle_scan.scan_all(reader, max_pickles=LEGACY_PICKLES, payloads=payloads)
        if os.path.basename(path) == "model-internals.pkl":
            merged = _merge(results)
            verdict = policy.judge(merged, policy.fastai_internals())
            report = _report(path, model, kind, "fastai-internals", size, merged, verdict, covered=True,
                             pickles=len(results))
            if report.verdict != DANGEROUS:
                report.verdict = UNREADABLE
                report.error = report.error or ("torch's legacy (non-zip) format: the secure loader reads only the "
                                                "zip archives torch.save writes since torch 1.6")
            return report
        return _torch_default_report(path, model, kind, size, results)
    results = pickle_scan.scan_all(reader, payloads=payloads)
    trailing = None
    if len(results) > 1 and results[-1].error is not None:
        # bytes after the last pickle that are not a pickle: keep only known dangers found in them
        tail = results.pop()
        trailing = tail.start
        for name in [n for n in tail.globals if policy.denylist.danger(n)]:
            results[-1].globals.setdefault(name, set()).update(tail.globals[name])
    merged = _merge(results)
    if strict and _strict_loaded(path):
        return _strict_report(path, fh, kind, model, size, merged, len(results), trailing)
    verdict = policy.judge(merged, policy.strict())  # names classified; nothing here is covered
    report = _report(path, model, kind, role, size, merged, verdict, covered=False, pickles=len(results),
                     trailing=trailing, plain_data_ok=not merged.globals and not strict)
    if strict and report.verdict == NEEDS_TRUST:
        report.note = "AutoGluon does not read this file through load_pkl.load: strict mode does not cover it"
    elif report.verdict == NEEDS_TRUST:
        report.note = "AutoGluon loads this with full pickle; ag_torchfix covers it only in strict mode (--strict)"
    return report


def _scan_other(path: str, fh: BinaryIO, model, size: int, strict: bool) -> FileReport:
    """XGBoost's model file and AutoGluon's version.txt / metadata.json: not pickles, but read when loading.  XGBoost's
    file needs trust outside strict mode whatever it holds: only ``--strict`` runs strict mode's structural check
    (numpy, imported for it)."""
    if path.endswith(".ubj"):
        if not strict:
            return FileReport(path, model, "xgboost-ubj", "xgboost-model", False, NEEDS_TRUST, size,
                              note="XGBoost parses this without checks outside strict mode (--strict checks it)")
        from ..load import native

        data = fh.read(archive.MAX_PICKLE + 1)
        try:
            native.check_xgboost_model(data)
        except native.NativeStateError as exc:
            return FileReport(path, model, "xgboost-ubj", "xgboost-model", strict, NEEDS_TRUST, size,
                              constructs=[f"XGBoost's model file fails its structural check: {exc}"],
                              note="XGBoost's own parser trusts this file (strict mode refuses it)")
        return FileReport(path, model, "xgboost-ubj", "xgboost-model", True, ALLOWED, size,
                          note="strict mode checks XGBoost's model file before XGBoost parses it")
    try:
        text.parse_text(fh.read(text.MAX_TEXT + 1), path, as_json=path.endswith(".json"))
    except text.TextProblem as exc:
        return _unreadable(path, str(exc), model=model, kind="text", role="autogluon-text")
    return FileReport(path, model, "text", "autogluon-text", True, ALLOWED, size,
                      note="plain text AutoGluon reads (no code)")


def _strict_loaded(path: str) -> bool:
    """Whether strict mode loads this file (AutoGluon reads it through load_pkl.load)."""
    root, rel = predictor_root(path)
    if root is None:
        return False
    rel_path = "/".join(rel)
    return (rel_path in STRICT_LOADED or (rel[:1] == ["models"] and rel[-1] in ("model.pkl", "model_template.pkl",
                                                                                "oof.pkl", "dataset_train.pkl",
                                                                                "dataset_val.pkl"))
            or (rel[:1] == ["utils"] and rel[-1].endswith(".pkl")))


def _expected_class(path: str) -> type | None:
    """The class whose ``load`` AutoGluon calls for a model file, as the strict load sees it in the calling frame:
    a model graph node's ``type`` (models/<name>/model.pkl), a bag's ``_child_type`` (its children and template).
    Read from the trainer and the bag, strictly loaded (a file that does not load has its own verdict)."""
    root, rel = predictor_root(path)
    if root is None or len(rel) < 3 or rel[0] != "models":
        return None
    if len(rel) == 3 and rel[2] == "model.pkl":
        trainer = _strict_object(os.path.join(root, "models", "trainer.pkl"))
        nodes = getattr(getattr(trainer, "model_graph", None), "_node", None)
        if isinstance(nodes, dict):
            for node in dict.values(nodes):
                path = node.get("path") if isinstance(node, dict) else None
                if (isinstance(path, (list, tuple)) and path and all(isinstance(p, str) for p in path)
                        and os.path.normpath(os.path.join(*path)) == rel[1] and isinstance(node.get("type"), type)):
                    return node["type"]  # AutoGluon joins the node's path: os.path.join(trainer.path, *path)
        return None
    if len(rel) == 4 and (rel[3] == "model.pkl" or rel[2:] == ["utils", "model_template.pkl"]):
        child_type = getattr(_strict_object(os.path.join(root, "models", rel[1], "model.pkl")), "_child_type", None)
        return child_type if isinstance(child_type, type) else None
    return None


def _strict_object(path: str):
    """A predictor file strictly loaded (cached by path, size and modification time), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _strict_object_cached(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _strict_object_cached(path: str, size: int, mtime: int):
    from ..load import strict_mode
    from ..core.errors import SecureLoadError

    raw = files.read_bounded(path, _MAX_EXPECTATION_FILE)
    if raw is None:
        return None
    try:
        return strict_mode.load_pickle(raw, path=path)
    except (SecureLoadError, ImportError):
        return None


_MAX_EXPECTATION_FILE = 1 << 30  # a trainer or bag read for the classes it names


def _strict_report(path, fh, kind, model, size, merged, pickles, trailing) -> FileReport:
    """Put the file through strict mode's own load (restricted unpickler, native checks, AutoGluon's
    expectations): the verdict strict mode would reach.  Nothing from the file runs."""
    from ..core.errors import SecureLoadError, UnreadableFileError

    verdict = policy.judge(merged, policy.strict())
    report = _report(path, model, kind, "autogluon-pickle", size, merged, verdict, covered=True, pickles=pickles,
                     trailing=trailing)
    if report.verdict != ALLOWED:
        return report
    try:
        from ..load import strict_mode

        raw = _raw_bytes(path)
        opener = None
        if kind != "pickle":
            opener = {"gzip-pickle": gzip.GzipFile, "bz2-pickle": bz2.BZ2File, "xz-pickle": lzma.LZMAFile}[kind]
            raw_opener = opener
            opener = lambda stream: raw_opener(fileobj=stream)  # noqa: E731
        strict_mode.load_pickle(raw, path=path, model=model, opener=opener, expected=_expected_class(path))
    except UnreadableFileError as exc:
        report.verdict, report.error = UNREADABLE, exc.reason
    except SecureLoadError as exc:
        report.verdict = NEEDS_TRUST
        report.constructs.extend(getattr(exc, "globals", []) + getattr(exc, "constructs", []) or [exc.reason])
    except ImportError as exc:
        report.note = f"checked statically only: strict mode's load needs AutoGluon here ({exc})"
    else:
        report.note = "strict mode loads and validates this (restricted unpickler; nothing from it runs)"
    return report


def _raw_bytes(path: str) -> bytes:
    with files.open_regular(path) as fh:
        return fh.read()


def _merge(results: list[pickle_scan.ScanResult]) -> pickle_scan.ScanResult:
    if len(results) == 1:
        return results[0]
    merged = pickle_scan.ScanResult(protocol=results[0].protocol, start=results[0].start, end=results[-1].end)
    for result in results:
        for name, uses in result.globals.items():
            merged.globals.setdefault(name, set()).update(uses)
        merged.problems.extend(result.problems)
        merged.opcodes |= result.opcodes
        merged.error = merged.error or result.error
    return merged


@functools.lru_cache(maxsize=1)
def torch_default_profile() -> policy.Profile:
    """torch's own weights-only defaults: from this stack's measured table (``stack_tables``, nothing imported), else
    from torch itself, with the safe globals registered in this process (imports torch)."""
    from ..policy import allowlist, stack_tables

    names = stack_tables.torch_defaults()
    if names is None:
        try:
            from torch import _weights_only_unpickler as wou

            names = set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
        except Exception:  # no torch here: nothing is known to load
            names = set()
    entries = {n: allowlist.Entry(n, allowlist.CONSTRUCT, "allowed by torch's weights-only unpickler") for n in names}
    return policy.Profile("torch-default", entries, {}, check_calls=False)


def _report(path, model, kind, role, size, result: pickle_scan.ScanResult, verdict: policy.Judgement, *,
            covered: bool, pickles: int = 1, trailing: int | None = None, plain_data_ok: bool = False) -> FileReport:
    globals_ = [GlobalReport(n, s, r, sorted(result.globals[n])) for n, (s, r) in verdict.globals.items()]
    constructs = list(verdict.constructs)
    error = f"not a readable pickle: {verdict.error}" if verdict.error else None
    report = FileReport(path, model, kind, role, covered, NEEDS_TRUST, size, globals_, constructs,
                        error=error, pickles=pickles, trailing=trailing)
    if trailing is not None:
        report.constructs.append(f"{size - trailing if size else '?'} bytes after the last pickle (at byte {trailing}) "
                                 "are not a pickle: the loader ignores them; genuine files have none")
    if verdict.dangerous:
        report.verdict = DANGEROUS
    elif verdict.error is not None:
        report.verdict = UNREADABLE
    elif any(p.kind == "out-of-band-buffer" for p in result.problems):
        report.verdict, report.error = UNREADABLE, "uses protocol 5 out-of-band buffers that are not in the file"
    elif any(p.kind == "frame" for p in result.problems):
        report.verdict, report.error = UNREADABLE, ("its FRAMEs and its opcodes disagree: Python's unpickler and "
                                                    "the C one can read it differently")
    elif any(p.kind in ("proto", "expansion") for p in result.problems):
        report.verdict, report.error = UNREADABLE, ("it has a structure no pickler writes (a second PROTO, or one "
                                                    "object expanded by DUPs or by holding itself): not vouched for")
    elif (covered and verdict.ok or plain_data_ok and not verdict.constructs) and trailing is None:
        report.verdict = ALLOWED
        if plain_data_ok and not covered:
            report.note = "plain data: no globals, so no unpickler can run anything from it"
    return report


def _refused_zip(path: str, fh: BinaryIO, model, size: int, reason: str, kind: str, *,
                 torchscript: bool = False) -> FileReport:
    """A zip archive that is not a torch.save archive torch reads as this package does: a numpy .npz (every record a
    .npy file) is judged by its arrays; anything else is unreadable, unless a record holds a known danger."""
    report = _unreadable(path, reason, model=model, kind=kind, role="fastai-internals" if os.path.basename(
        path) == INTERNALS else "torch-archive")
    try:
        fh.seek(0)
        records, stopped = archive.salvage(fh)
    except (OSError, ValueError):
        return report
    if (report.role != "fastai-internals" and stopped is None and records
            and all(r.data is not None and r.problem is None and r.name.endswith(".npy")
                    and r.data.startswith(NPY_MAGIC) for r in records)):
        return _npz_report(path, model, size, records) or _danger_first(report, fh, (records, stopped))
    return _danger_first(report, fh, (records, stopped), torchscript=torchscript)


def _danger_first(report: FileReport, fh: BinaryIO, salvaged=None, *, torchscript: bool = False) -> FileReport:
    """An archive refused as a whole: every record that can be read is scanned anyway (``archive.salvage``, bounded
    like the archive reader) with the pickles nested in it, and a known danger in any makes the report dangerous,
    the refusal kept as its error.  Without one the report is left as it was.  In a TorchScript archive the
    builders of torch.jit's own unpickler (``torch.jit._pickle``, which torch.jit.load resolves itself) are not
    counted: every TorchScript file names them."""
    try:
        if salvaged is None:
            fh.seek(0)
            salvaged = archive.salvage(fh)
    except (OSError, ValueError):
        return report
    records, _stopped = salvaged
    # judged as the file's role would judge it (the fastai internals allow narrow shims, getattr among them)
    profile = policy.fastai_internals() if report.role == "fastai-internals" else policy.strict()
    dangers: dict[str, GlobalReport] = {}
    for record in records:
        if record.data is None:
            continue
        where = f"record {ascii(record.name)[1:-1]!r}"  # the archive's own name for it, escaped
        data = record.data
        if data.startswith(NPY_MAGIC):
            try:
                data = data[_npy_header(data)[1]:]
            except ValueError:
                continue
        search = _nested_search()
        results = pickle_scan.scan_all(data, payloads=search.payloads)
        found = search.finish()
        sources = [(r, where, profile) for r in results] + [
            (n.result, f"{where}, in a nested pickle: {n.where}", policy.strict()) for n in found.pickles]
        for result, label, judged_by in sources:
            for name, (status, danger) in policy.judge(result, judged_by).globals.items():
                if status != policy.DANGEROUS or torchscript and name.startswith(TORCHSCRIPT_OWN):
                    continue
                uses = result.globals[name]
                g = dangers.get(name)
                if g is None:
                    dangers[name] = GlobalReport(name, policy.DANGEROUS, f"{danger}; in {label}", sorted(uses))
                elif label not in g.reason:
                    g.reason += f"; also in {label}"
                    g.uses = sorted(set(g.uses) | uses)
    if dangers:
        report.globals.extend(dangers.values())
        report.verdict = DANGEROUS
        report.note = "a record in it holds a known danger, although the archive as a whole is refused"
    return report


def _npy_header(data: bytes) -> tuple[bool, int]:
    """(does the array hold Python objects, where its data starts) from a .npy file's first bytes (numpy's format:
    magic, version, header length, a dict literal with 'descr').  Raises ``ValueError``."""
    import ast

    if len(data) < 10 or not data.startswith(NPY_MAGIC):
        raise ValueError("truncated header")
    major = data[6]
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise ValueError(f"unknown format version {major}")
    if length > NPY_MAX_HEADER or start + length > len(data):
        raise ValueError(f"its header of {length} bytes is truncated or longer than {NPY_MAX_HEADER}")
    try:
        header = ast.literal_eval(data[start:start + length].decode("utf-8" if major == 3 else "latin-1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(f"its header is not a literal ({type(exc).__name__})") from None
    if not isinstance(header, dict) or "descr" not in header:
        raise ValueError("its header has no 'descr'")
    return _npy_objects(header["descr"], 0), start + length


def _npy_objects(descr, depth: int) -> bool:
    """Whether a .npy 'descr' makes an object dtype (numpy then pickles the data): 'O' in any byte order or size,
    anywhere in a structured dtype (a field's name excluded)."""
    if depth > 32:
        return True  # not what numpy writes: read it as a pickle (it fails there if it is not one)
    if isinstance(descr, str):
        return descr.lstrip("|<>=").startswith("O") or descr in ("object", "object_")
    if isinstance(descr, (list, tuple)):
        items = descr[1:] if isinstance(descr, tuple) and len(descr) in (2, 3) and depth else descr
        return any(_npy_objects(item, depth + 1) for item in items if isinstance(item, (str, list, tuple)))
    return False


def _scan_npy(path: str, fh: BinaryIO, model, size: int, strict: bool) -> FileReport:
    """A numpy .npy file: plain numbers need no unpickling; an object array's data is a pickle (numpy.load with
    allow_pickle=True unpickles it with full pickle)."""
    try:
        objects, start = _npy_header(fh.read(NPY_MAX_HEADER + 16))
    except ValueError as exc:
        return _unreadable(path, f"a numpy .npy file whose header cannot be read: {exc}", model=model, kind="npy")
    if not objects:
        return FileReport(path, model, "npy", "numpy-array", False, ALLOWED, size,
                          note="a numpy array without objects: numpy reads it without unpickling anything")
    fh.seek(start)
    report = _scan_plain(path, fh, "npy-pickle", model, size, strict)
    report.role = "numpy-array"
    if report.verdict == NEEDS_TRUST and not report.constructs:
        report.note = "an object array: numpy.load(allow_pickle=True) unpickles it with full pickle"
    return report


def _npz_report(path: str, model, size: int, records) -> FileReport | None:
    """A numpy .npz archive (a zip of .npy files): judged by its arrays, as ``_scan_npy`` judges one; None when one
    of them cannot be read (the archive is then judged as a refused zip)."""
    results, search = [], _nested_search()
    for record in records:
        try:
            objects, start = _npy_header(record.data)
        except ValueError:
            return None
        if objects:
            results.extend(pickle_scan.scan_all(record.data[start:], payloads=search.payloads))
    if not results:
        search.finish()
        return FileReport(path, model, "npz", "numpy-array", False, ALLOWED, size, pickles=0,
                          note="numpy arrays without objects: numpy reads them without unpickling anything")
    merged = _merge(results)
    verdict = policy.judge(merged, policy.strict())
    report = _report(path, model, "npz", "numpy-array", size, merged, verdict, covered=False, pickles=len(results),
                     plain_data_ok=not merged.globals)
    if report.verdict == NEEDS_TRUST and not report.constructs:
        report.note = "object arrays: numpy.load(allow_pickle=True) unpickles them with full pickle"
    return _with_nested(report, search)


def _nested_search() -> nested.Search:
    return nested.Search(policy.denylist.danger, remember=True)


def _with_nested(report: FileReport, search: nested.Search) -> FileReport:
    """Attribute the pickles found inside the file's values (``formats.nested``) to the file: their globals join the
    file's (the reason says where), a known danger in one makes the file dangerous, a pickle with globals makes plain
    data need trust (a covered file keeps the loader's verdict: the loader never unpickles a value), and a bound
    that left a value that looked like a pickle unread makes it unreadable."""
    found = search.finish()
    if not found.pickles and found.incomplete is None:
        return report
    by_name = {g.name: g for g in report.globals}
    lines, dangerous, named = [], False, False
    for nest in found.pickles:
        judgement = policy.judge(nest.result, policy.strict())
        label = f"in a nested pickle: {nest.where}"
        clean = nest.result.error is None or not nest.complete
        names = []
        for name, (status, reason) in judgement.globals.items():
            if status != policy.DANGEROUS and not clean:
                continue  # a value that is not a whole pickle: only what the unpickler would run first counts
            names.append(name)
            dangerous |= status == policy.DANGEROUS
            g = by_name.get(name)
            if g is None:
                g = by_name[name] = GlobalReport(name, status, f"{reason}; {label}", sorted(nest.result.globals[name]))
                report.globals.append(g)
                continue
            if status == policy.DANGEROUS and g.status != policy.DANGEROUS:
                g.status, g.reason = status, f"{reason}; {label}"
            else:
                g.reason += f"; also {label}"
            g.uses = sorted(set(g.uses) | nest.result.globals[name])
        named |= bool(names)
        if names:
            lines.append(f"a nested pickle ({nest.where}) references {', '.join(names)}: nothing here unpickles it, "
                         "but pickle.loads on that value would")
        if clean:
            lines.extend(f"in a nested pickle ({nest.where}): {p}" for p in nest.result.problems)
    if dangerous:
        report.verdict = DANGEROUS
    elif found.incomplete is not None:
        report.verdict = UNREADABLE
    elif named and report.verdict == ALLOWED and not report.covered:
        report.verdict = NEEDS_TRUST
        report.note = "a value in it is a pickle with globals: whatever unpickles that value runs them"
    if found.incomplete is not None:
        if report.error is None and report.verdict == UNREADABLE:
            report.error = found.incomplete
        else:
            lines.append(found.incomplete)
    if report.covered and report.verdict == ALLOWED:
        report.note = "; ".join([report.note] * bool(report.note) + lines + ["the loader never unpickles a value"])
    else:
        report.constructs.extend(lines)
    return report


def _unreadable(path: str, error: str, *, model=None, kind: str = "unknown", role: str = "unknown") -> FileReport:
    if role == "unknown" and os.path.basename(path) == INTERNALS:
        role = "fastai-internals"
    return FileReport(path, model if model is not None else model_of(path) if os.path.lexists(path) else None,
                      kind, role, role == "fastai-internals", UNREADABLE, error=error)


class _Inflated:
    """A decompressed stream that may not inflate more than MAX_DECOMPRESSION_RATIO times the file's size."""

    def __init__(self, inner: BinaryIO, size: int):
        self._inner = inner
        self.limit = max(size, 1) * MAX_DECOMPRESSION_RATIO + (1 << 20)
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(self.limit + 1 - self.total if n < 0 else n)
        self.total += len(data)
        if self.total > self.limit:
            raise pickle_scan.ScanError(f"it inflates to more than {MAX_DECOMPRESSION_RATIO} times its size "
                                        "(a decompression bomb?)")
        return data


# --- walking ----------------------------------------------------------------------------------------

def _discover(root: str) -> Iterator[tuple[str, str | None]]:
    """(file, problem) for every candidate under ``root``; problems are reported, not raised."""
    try:
        st = os.stat(root)
    except OSError as exc:
        yield root, _os_problem(root, exc)
        return
    if not stat.S_ISDIR(st.st_mode):
        yield root, None if stat.S_ISREG(st.st_mode) else NOT_REGULAR
        return
    if os.path.basename(os.path.normpath(root)) == INTERNALS:
        yield root, _DIRECTORY_AS_FILE
        return
    for path, kind, problem in files.walk(root, dirs=True):
        if problem is not None:
            yield path, problem
            continue
        if kind == "dir":
            if path.endswith(PICKLE_SUFFIXES + OTHER_READ):
                yield path, _DIRECTORY_AS_FILE  # AutoGluon would open it: the loaders refuse it
            continue
        if kind == "dir-link":
            # not followed (no loops, no escaping the tree), but AutoGluon would read through it: reported
            yield path, ("a symlinked directory: not followed, so its files are not scanned (AutoGluon would read "
                         "through it)")
            continue
        try:
            st = os.stat(path)  # follows symlinks to files; loops and dangling links fail here
        except OSError as exc:
            yield path, _os_problem(path, exc)
            continue
        if not stat.S_ISREG(st.st_mode):
            yield path, NOT_REGULAR  # never skipped: AutoGluon (or the loader) would block on it or refuse it
            continue
        if _is_candidate(path):
            yield path, None


_DIRECTORY_AS_FILE = "a directory where AutoGluon reads a file: not a regular file (the loaders refuse it)"


def _is_candidate(path: str) -> bool:
    if path.endswith(PICKLE_SUFFIXES + OTHER_READ):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return True  # reported when scanned
    return head[:1] == b"\x80" or head.startswith(NPY_MAGIC) or any(head.startswith(m) for m in COMPRESSED) or (
        archive.is_zip(head) and _zip_has_data_pkl(path))


def _zip_has_data_pkl(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return archive.open_archive(fh).find("data.pkl") is not None
    except (archive.ArchiveError, OSError):
        return True  # a broken zip where a pickle could be: reported when scanned


def _os_problem(path: str, exc: OSError) -> str:
    import errno

    if exc.errno == errno.ELOOP:
        return "cannot read: symlink loop"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return "cannot read: dangling symlink"
    return f"cannot read: {exc.strerror or exc}"


def _directory_report(root: str, files: list[FileReport]) -> DirectoryReport:
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
