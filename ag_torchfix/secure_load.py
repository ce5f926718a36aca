"""The secure loader for AutoGluon's fastai ``model-internals.pkl``.

1. Read the torch zip archive's ``data.pkl`` opcodes statically (nothing runs) and refuse, naming
   every problem at once, if it references anything outside the allowlist or uses a construct the
   loader refuses.
2. Load it with ``torch.load(weights_only=True, map_location="cpu")`` under a scope holding only the
   allowlisted names this file references (per thread; torch's process-wide set is untouched).
3. Check that the result is a fastai Learner, then do what ``load_learner(cpu=True)`` does.
Only if that fails and the file is trusted (see ``trust``) does the original full-pickle loader run,
with a TrustedFallbackWarning; never when TORCH_FORCE_WEIGHTS_ONLY_LOAD is set.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import warnings
import zipfile
from typing import BinaryIO

from . import allowlist, pickle_scan, policy, shims, torch_scope, trust
from .errors import (
    DisallowedGlobalsError,
    SecureLoadError,
    TrustedFallbackWarning,
    UnreadableFileError,
    UnsupportedTorchError,
    refusal_summary,
)

_ENTRIES = {e.name: e for e in allowlist.FASTAI_INTERNALS}
MAX_PICKLE_RECORD = 256 << 20  # data.pkl holds the object graph only; tensor bytes are separate records
_DTYPE_CLASSES = tuple(e.name for e in allowlist.FASTAI_INTERNALS if e.name.startswith("numpy.dtypes."))


def load_learner(file: BinaryIO | str | os.PathLike, *, path: str | None = None, model: str | None = None):
    """Load a fastai Learner exported by AutoGluon, securely; fall back only for trusted files.

    ``file`` is an open binary file (AutoGluon passes one; a BytesIO for S3) or a path.  ``path``
    names the real file in messages and decides trust; ``model`` names the AutoGluon model.
    """
    if isinstance(file, (str, os.PathLike)):
        path = path or os.fspath(file)
        with open(file, "rb") as fh:
            return load_learner(fh, path=path, model=model)
    if not callable(getattr(file, "read", None)):
        raise TypeError(f"load_learner expects a path or a binary file object, not {type(file).__qualname__}")
    path = path or getattr(file, "name", None)
    stream = file if _seekable(file) else io.BytesIO(file.read())
    start = stream.tell()
    try:
        return _load_secure(stream, start, path, model)
    except UnreadableFileError:
        raise  # empty, corrupt or not AutoGluon's format: full pickle would not help, never fall back
    except SecureLoadError as err:
        source = trust.trust_source(path)
        if source is None or err.forced:
            raise
        warnings.warn(
            f"ag_torchfix: {path} is trusted ({source}) and failed the secure load ({refusal_summary(err)}); "
            "loading it with full pickle.",
            TrustedFallbackWarning,
            stacklevel=2,
        )
        stream.seek(start)
        return _load_full_pickle(stream)


def _load_secure(stream: BinaryIO, start: int, path: str | None, model: str | None):
    where = {"path": path, "model": model, "forced": trust.platform_forces_weights_only()}
    reason = torch_scope.unsupported_reason()
    if reason is not None:
        raise UnsupportedTorchError(f"{reason}; secure loading is unavailable", **where)
    scan = _scan_archive(stream, where)
    scope = _scope_for(scan, where)
    stream.seek(start)
    import torch

    torch_scope.patch()
    try:
        with torch_scope.active(scope), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            learner = torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DisallowedGlobalsError([], [f"torch's weights-only unpickler refused it: {_first_line(exc)}"],
                                     **where) from exc
    except RuntimeError as exc:
        if any(s in str(exc) for s in ("PytorchStreamReader", "zip archive", "CRC")):
            raise UnreadableFileError(f"torch could not read the archive ({_first_line(exc)})", **where) from exc
        raise SecureLoadError(f"rebuilding it under the allowlist failed ({_first_line(exc)})", **where) from exc
    except Exception as exc:
        raise SecureLoadError(f"rebuilding it under the allowlist failed ({_first_line(exc)})", **where) from exc
    from fastai.learner import Learner

    if not isinstance(learner, Learner):
        raise DisallowedGlobalsError([], [f"the file holds a {type(learner).__qualname__}, not a fastai Learner"],
                                     **where)
    return _to_cpu(learner)


def _to_cpu(learner):
    """What fastai's load_learner(cpu=True) does after unpickling."""
    learner.dls.cpu()
    if hasattr(learner, "channels_last"):
        learner = learner.to_contiguous(to_fp32=True)
    elif hasattr(learner, "mixed_precision"):
        learner = learner.to_fp32()
    elif hasattr(learner, "non_native_mixed_precision"):
        learner = learner.to_non_native_fp32()
    return learner


def _scan_archive(stream: BinaryIO, where: dict) -> pickle_scan.ScanResult:
    start = stream.tell()
    head = stream.read(4)
    stream.seek(start)
    if not head:
        raise UnreadableFileError("the file is empty", **where)
    if head[:1] == b"\x80":
        raise UnreadableFileError(
            "it is in torch's legacy (non-zip) format or is a plain pickle; the secure loader reads only "
            "torch zip archives (torch.save's format since torch 1.6, which AutoGluon writes)", **where)
    if head != b"PK\x03\x04":
        raise UnreadableFileError(f"it is not a torch zip archive (starts with {head!r})", **where)
    try:
        archive = zipfile.ZipFile(stream)
        records = [i for i in archive.infolist() if i.filename.count("/") == 1]
        pickles = [i for i in records if i.filename.endswith("/data.pkl")]
        if any(i.filename.endswith("/constants.pkl") for i in records):
            raise UnreadableFileError("it is a TorchScript archive, not a torch.save archive", **where)
        if len(pickles) != 1:
            raise UnreadableFileError(f"it is not a torch.save archive ({len(pickles)} data.pkl records)", **where)
        if pickles[0].file_size > MAX_PICKLE_RECORD:
            raise UnreadableFileError(f"its pickle record is {pickles[0].file_size} bytes, over the "
                                      f"{MAX_PICKLE_RECORD}-byte bound for fastai internals", **where)
        record = archive.read(pickles[0])  # checks the CRC; tensors live in other records
        return pickle_scan.scan(io.BytesIO(record))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise UnreadableFileError(f"it is a corrupt or truncated zip archive ({_first_line(exc)})", **where) from exc
    except pickle_scan.ScanError as exc:
        raise UnreadableFileError(f"its pickle is unreadable ({exc})", **where) from exc


def _scope_for(scan: pickle_scan.ScanResult, where: dict) -> torch_scope.Scope:
    """Refuse unless every global is allowed; then resolve exactly the allowlisted names the file uses."""
    profile = policy.fastai_internals()
    verdict = policy.judge(scan, profile)
    if not verdict.ok:
        raise DisallowedGlobalsError(verdict.disallowed_labels(), verdict.constructs, **where)

    shim_objects = shims.shim_objects()
    by_name, callables, missing = {}, list(shim_objects.values()), []
    for name in scan.globals:
        if name in profile.builtin:
            continue
        if name in shim_objects:
            by_name[name] = shim_objects[name]
            continue
        try:
            obj = shims.resolve(name)
        except LookupError:
            missing.append(name)
            continue
        by_name[name] = obj
        if _ENTRIES[name].use != allowlist.REFERENCE:
            callables.append(obj)
    if missing:
        raise SecureLoadError(
            "it references allowlisted names this environment cannot import: " + ", ".join(sorted(missing))
            + " (was it written by another fastai/fastcore version?)", **where)
    for name in _DTYPE_CLASSES:  # dtype instances are BUILT with their class, which files never name
        try:
            callables.append(shims.resolve(name))
        except LookupError:
            pass
    return torch_scope.Scope(by_name, callables, shims.defaultdict_factories())


def _load_full_pickle(stream: BinaryIO):
    """The original loader, as AutoGluon calls it (with its Windows-path workaround)."""
    import pathlib

    from fastai.learner import load_learner as fastai_load_learner

    if sys.platform == "win32":
        return fastai_load_learner(stream)
    windows_path = pathlib.WindowsPath
    pathlib.WindowsPath = pathlib.PosixPath
    try:
        return fastai_load_learner(stream)
    finally:
        pathlib.WindowsPath = windows_path


def _seekable(file) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _first_line(exc: BaseException) -> str:
    """The unpickler's own complaint: torch re-raises it wrapped in advice (``from None``)."""
    if "Weights only load failed" in str(exc) and isinstance(exc.__context__, Exception):
        exc = exc.__context__
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
