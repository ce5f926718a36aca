"""The secure loader for AutoGluon's fastai ``model-internals.pkl``.

1. Read the torch zip archive once (``policy.check_internals``: the archive's structure, its
   ``data.pkl`` opcodes, every call's arguments and every BUILD's state, every storage record) and
   refuse, naming every problem at once, before torch reads a byte.
2. Load it with ``torch.load(weights_only=True, map_location="cpu")`` under a scope holding only the
   allowlisted names this file references (per thread; torch's process-wide set is untouched).
3. Check that the result is a fastai Learner, then do what ``load_learner(cpu=True)`` does.
Only if that fails and the file is trusted (``fallback``) does the original full-pickle loader run,
with a TrustedFallbackWarning; never when TORCH_FORCE_WEIGHTS_ONLY_LOAD is set.  A missing or
unopenable path raises the operating system's own error, as AutoGluon's loader would.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import os
import pickle
import sys
import warnings
from typing import BinaryIO

from ..policy import allowlist, learner_schema, verdicts as policy, shims
from ..trust import fallback, rules as trust
from ..formats import files, records
from . import materialize, torch_scope
from ..core.errors import DisallowedGlobalsError, SecureLoadError, UnreadableFileError, UnsupportedTorchError
from ..policy.verdicts import MAX_IN_MEMORY  # read once into memory up to this (a module global: tests lower it)

_verdicts: collections.OrderedDict[bytes, frozenset[str]] = collections.OrderedDict()  # digest -> names (passed)
_VERDICTS_KEPT = 256

_DTYPE_CLASSES = tuple(e.name for e in allowlist.FASTAI_INTERNALS if e.name.startswith("numpy.dtypes."))


def load_learner(file: BinaryIO | str | os.PathLike, *, path: str | None = None, model: str | None = None):
    """Load a fastai Learner exported by AutoGluon, securely; fall back only for trusted files.

    ``file`` is an open binary file (AutoGluon passes one; a BytesIO for S3) or a path.  ``path``
    names the real file in messages and decides trust; ``model`` names the AutoGluon model.
    """
    if isinstance(file, (str, os.PathLike)):
        path = path or os.fspath(file)
        with files.open_for_load(file, path=path, model=model) as fh:
            return load_learner(fh, path=path, model=model)
    if not callable(getattr(file, "read", None)):
        raise TypeError(f"load_learner expects a path or a binary file object, not {type(file).__qualname__}")
    path = path or getattr(file, "name", None)
    ident = files.identity(file)
    entry = file.tell() if _seekable(file) else None
    try:
        stream = _in_memory(file, path, model)
    except UnreadableFileError:
        raise
    except SecureLoadError as err:  # over the in-memory limit: only trust may load it, as the README says
        return _fall_back(err, file, entry, path, ident)
    start = stream.tell()
    try:
        return _load_secure(stream, path, model)
    except SecureLoadError as err:
        return _fall_back(err, stream, start, path, ident)


def _fall_back(err: SecureLoadError, source: BinaryIO, start: int, path: str | None, ident):
    """A refused file through the one door to full pickle: the bytes lock trust verified, or (location trust) the
    file itself from ``start``; otherwise ``err`` is raised."""
    def read(limit: int) -> bytes:
        source.seek(start)
        return source.read(limit)

    door = fallback.open_door(err, path, read, what="secure load", identity=ident, stacklevel=4)
    source.seek(start)
    return _load_full_pickle(io.BytesIO(door.data) if door.data is not None else source)


def check_regular(path: str | os.PathLike, model: str | None = None) -> None:
    """Refuse a path that exists but is not a regular file (opening a FIFO would hang); missing paths are
    left to the caller's own open(), so the user sees the usual FileNotFoundError."""
    if files.is_irregular(path):
        raise UnreadableFileError("it is not a regular file (a FIFO, device or directory)", path=os.fspath(path),
                                  model=model)


def check_learner(data: bytes, *, path: str | None = None, model: str | None = None) -> None:
    """Everything the secure load decides about these bytes: the static pass, torch's weights-only load into inert
    records, the schema, the build and fastai's move to the CPU (trusted code on checked data; nothing from the file
    runs).  ``ag-torchfix scan`` gives the loader's own verdict this way.  Raises the loader's own errors."""
    _load_secure(io.BytesIO(data), path, model)


def _load_secure(stream: BinaryIO, path: str | None, model: str | None):
    where = {"path": path, "model": model, "forced": trust.platform_forces_weights_only()}
    reason = torch_scope.unsupported_reason()
    if reason is not None:
        raise UnsupportedTorchError(f"{reason}; secure loading is unavailable", **where)
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
    digest = hashlib.blake2b(stream.getbuffer()[start:], digest_size=32).digest() \
        if isinstance(stream, io.BytesIO) else None  # the bytes torch will read, from where it starts
    names = _verdicts.get(digest) if digest is not None else None
    if names is None:  # not these exact bytes before: check them
        try:
            check = policy.check_internals(stream)
        except policy.Unreadable as exc:
            raise UnreadableFileError(str(exc), **where) from None
        verdict = check.judgement
        if verdict.error is not None and not verdict.dangerous:
            raise UnreadableFileError(f"its pickle is unreadable ({verdict.error})", **where)
        if not verdict.ok:
            constructs = verdict.constructs + ([f"unreadable past a point: {verdict.error}"] if verdict.error else [])
            raise DisallowedGlobalsError(verdict.disallowed_labels(), constructs, **where)
        names = frozenset(check.scan.globals)
        if digest is not None:
            _verdicts[digest] = names
            if len(_verdicts) > _VERDICTS_KEPT:
                _verdicts.popitem(last=False)
    scope = _scope_for(names, path, model)
    stream.seek(start)
    import torch

    torch_scope.patch()
    try:
        with torch_scope.active(scope), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            records = torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DisallowedGlobalsError([], [f"torch's weights-only unpickler refused it: {_first_line(exc)}"],
                                     **where) from exc
    except Exception as exc:  # torch's reader (RuntimeError), a rebuild function or a shim refusing its input
        raise SecureLoadError(f"rebuilding it under the allowlist failed ({_first_line(exc)})", **where) from exc
    try:  # what torch returned is inert data: the schema checks it, trusted code builds the learner
        learner = materialize.materialize(records)
    except materialize.SchemaError as exc:
        raise DisallowedGlobalsError([], [f"it is not a genuine learner at {exc.where}: {exc.reason}"],
                                     **where) from None
    except Exception as exc:  # a library's own __setstate__ refusing checked data
        raise SecureLoadError(f"building the learner failed ({_first_line(exc)})", **where) from exc
    from fastai.learner import Learner

    if not isinstance(learner, Learner):
        raise DisallowedGlobalsError([], [f"the file holds a {type(learner).__qualname__}, not a fastai Learner"],
                                     **where)
    try:
        return _to_cpu(learner)
    except Exception as exc:
        raise SecureLoadError(f"the loaded learner is inconsistent ({_first_line(exc)})", **where) from exc


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


def _scope_for(names: frozenset[str], path: str | None, model: str | None) -> torch_scope.Scope:
    try:
        return _inert_scope(names)
    except LookupError as exc:
        raise SecureLoadError(
            "it references allowlisted names this environment cannot import: " + ", ".join(sorted(exc.args[0]))
            + " (was it written by another fastai/fastcore version?)", path=path, model=model,
            forced=trust.platform_forces_weights_only()) from None


@functools.lru_cache(maxsize=64)
def _scope_cached(names: frozenset[str]) -> torch_scope.Scope:
    """Exactly the allowlisted objects a file references (the same few sets recur: cached)."""
    profile = policy.fastai_internals()
    shim_objects = shims.shim_objects()
    by_name, callables, missing = {}, list(shim_objects.values()), []
    for name in names:
        own = allowlist.canonical(name)  # another writer's spelling resolves to the entry it stands for
        entry = profile.entries.get(own)
        if own in shim_objects:
            by_name[name] = shim_objects[own]
            continue
        if entry is None or entry.torch_default:
            continue  # torch resolves its own defaults
        try:
            obj = shims.resolve(own)
        except LookupError:
            missing.append(name)
            continue
        by_name[name] = obj
        if entry.use != allowlist.REFERENCE:
            callables.append(obj)
    if missing:
        raise LookupError(missing)
    for name in _DTYPE_CLASSES:  # dtype instances are BUILT with their class, which files never name
        try:
            callables.append(shims.resolve(name))
        except LookupError:
            pass
    return torch_scope.Scope(by_name, callables, shims.defaultdict_factories())


@functools.lru_cache(maxsize=64)
def _inert_scope(names: frozenset[str]) -> torch_scope.Scope:
    """The scope of a secure load: the allowlist as ``_scope_cached`` resolves it, except that every class of the
    learner schema is an inert record type and every function an inert reference (``records``)."""
    real = _scope_cached(names)
    by_name, replaced, added = dict(real.items()), set(), []
    for name in names:
        own = allowlist.canonical(name)
        if own in learner_schema.CLASSES:
            inert = records.record_type(own)
            added.append(inert)
        elif own in learner_schema.FUNCTIONS:
            inert = records.ref(own)
        elif own == "builtins.getattr":
            inert = shims.inert_getattr
            added.append(inert)
        else:
            continue
        if name in by_name:
            replaced.add(id(by_name[name]))
        by_name[name] = inert
    callables = [c for c in real.values() if id(c) not in replaced] + added
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


def _in_memory(file, path, model) -> BinaryIO:
    """The file's bytes, read once: the check and torch then read the same bytes, whatever happens to the file
    meanwhile (and the verdict can be remembered by their digest)."""
    if isinstance(file, io.BytesIO):
        return file
    if _seekable(file):
        start = file.tell()
        file.seek(0, 2)
        size = file.tell() - start
        file.seek(start)
        if size > MAX_IN_MEMORY:
            raise SecureLoadError(f"it is larger than {MAX_IN_MEMORY} bytes: the secure loader reads a file once into "
                                  "memory so that the bytes it checks are the bytes torch loads", path=path,
                                  model=model, forced=trust.platform_forces_weights_only())
    data = file.read(MAX_IN_MEMORY + 1)
    if len(data) > MAX_IN_MEMORY:
        raise UnreadableFileError(f"the stream is larger than {MAX_IN_MEMORY} bytes", path=path, model=model)
    return io.BytesIO(data)


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
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
