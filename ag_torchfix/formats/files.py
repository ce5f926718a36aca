"""Opening files an attacker may have planted, shared by the loaders, trust, locks and the scanner.

A FIFO, device or directory is refused before anything blocks on it (opened non-blocking, then checked);
a missing or unreadable path raises the operating system's own error.  ``identity`` names the file an open
descriptor reads (device and inode), so that trust can be decided on the file that was read, not on whatever a
path names later.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO


class NotRegular(OSError):
    """The path names a FIFO, device, socket or directory."""


def open_regular(path: str | os.PathLike) -> BinaryIO:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(f"{os.fspath(path)} is not a regular file (a FIFO, device or directory)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_for_load(file: str | os.PathLike, /, **where) -> BinaryIO:
    """``open_regular`` for the loaders: a FIFO, device or directory is their typed UnreadableFileError (``where``:
    the error's path, model, forced); a missing or unreadable path stays the OS's own error."""
    try:
        return open_regular(file)
    except NotRegular:
        from ..core.errors import UnreadableFileError

        raise UnreadableFileError("it is not a regular file (a FIFO, device or directory)", **where) from None


def is_irregular(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists and is not a regular file (missing paths are left to the caller's own open)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_bounded(path: str | os.PathLike, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of a regular file; None when it is missing, irregular, unreadable or larger."""
    try:
        with open_regular(path) as fh:
            data = fh.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def identity(file) -> tuple[int, int] | None:
    """(device, inode) of what an open file object reads, or None (BytesIO, S3)."""
    try:
        st = os.fstat(file.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def names(path: str | os.PathLike, ident: tuple[int, int] | None) -> bool:
    """Whether ``path`` still names the file with ``ident``."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident


MAX_DEPTH = 256


def walk(root: str, *, max_depth: int = MAX_DEPTH, dirs: bool = False):
    """Everything below ``root`` as (path, entry kind, problem): iterative (a directory chain thousands deep
    cannot exhaust the stack), sorted, never following symlinked directories.  Kinds: "file", "dir-link",
    "other" (FIFOs, devices, sockets, dangling links), and with ``dirs`` "dir" for each directory entered (the
    scanner reports a directory where a file is read); deeper than ``max_depth`` is reported, not entered."""
    stack = [(root, 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield directory, "error", f"cannot read: {exc.strerror or exc}"
            continue
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                    if dirs:
                        yield entry.path, "dir", None
                elif entry.is_symlink() and os.path.isdir(entry.path):
                    yield entry.path, "dir-link", None
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, "file", None
                else:
                    yield entry.path, "other", None
            except OSError as exc:
                yield entry.path, "error", f"cannot read: {exc.strerror or exc}"
        if depth + 1 > max_depth and subdirs:
            for path in subdirs:
                yield path, "error", f"more than {max_depth} directories deep: not scanned"
            continue
        stack.extend((path, depth + 1) for path in reversed(subdirs))
