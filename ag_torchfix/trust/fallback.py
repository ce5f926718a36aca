"""The one door to full pickle, shared by the secure fastai loader and strict mode.

A file a secure (or strict) load refused may be loaded the original way only if it is trusted and
the platform does not force weights-only loading.  Location trust (a ``trusted()`` block or an
AG_TORCHFIX_TRUST path) lets the original loader read the file; lock trust hands back the exact bytes
that were hashed and matched the lock, and the caller unpickles those bytes, never the file again.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ..formats import files
from . import rules as trust
from ..core.errors import (LockMismatchError, SecureLoadError, TrustedFallbackWarning, UnreadableFileError, refusal_summary)


@dataclass(frozen=True)
class Door:
    source: str  # why the file is trusted, for the warning
    data: bytes | None  # lock trust: the verified bytes to unpickle; location trust: None (read the file)


def open_door(err: SecureLoadError, path: str | None, read: Callable[[int], bytes], *, what: str,
              identity: tuple[int, int] | None = None, stacklevel: int = 3) -> Door:
    """Decide the fallback for a refused file, or re-raise.  ``read(limit)`` returns up to ``limit``
    bytes of the file from its start (called only for lock trust).  ``identity`` is the (device, inode) of the
    file that was read, which the caller must still hold open (a closed file's inode can be reused by a new file in
    the trusted directory): location trust holds only while ``path`` still names that very file."""
    if isinstance(err, UnreadableFileError) or err.forced or trust.platform_forces_weights_only():
        raise err
    # the path is resolved once: trust is judged on that real path, and that same real path must name the very
    # file that was read (resolving twice let a link flip between the two looks)
    real = trust.normalise(path) if path is not None else None
    source = trust.trust_source(real, resolved=True)
    if source is not None and identity is not None and not files.names(real, identity):
        source = None  # the path now names another file than the one read: its location proves nothing
    data = None
    if source is None:
        locked = trust.locked_file(path)
        if locked is None:
            raise err
        data = read(locked.size + 1)
        actual = hashlib.sha256(data).hexdigest()
        if len(data) != locked.size or actual != locked.sha256:
            raise LockMismatchError(locked.relative, locked.sha256, actual, path=path, model=err.model) from err
        source = f"{locked.source}, {locked.relative} matches {locked.lock_path}"
    warnings.warn(f"ag_torchfix: {path} is trusted ({source}) and failed the {what} ({refusal_summary(err)}); "
                  "loading it with full pickle.", TrustedFallbackWarning, stacklevel=stacklevel)
    return Door(source, data)
