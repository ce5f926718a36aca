"""Per-context scopes: the one mechanism behind ``trusted()``, ``strict()`` and the torch allowlist scope.

A scope is entered and closed per context (thread, asyncio task, ``contextvars`` context).  A manager object
(one ``trusted(...)`` or ``strict(False)``) may be shared by any number of threads and tasks: each entry is its
own ``Entry`` in the entering context's stack, and each exit closes exactly the entry its own ``with`` opened
(found by the frame that entered it, then by context, never by popping a list shared between threads).  Closing
marks the entry closed before anything else happens, so nothing that may raise afterwards can leave it open, and
never uses ``ContextVar.reset`` (which raises for a token of another context).  Not covered: an asynchronous
exception (KeyboardInterrupt, a signal handler that raises) landing inside ``__enter__`` or ``__exit__`` themselves
can leave an entry open; a process that catches such an exception and goes on should not rely on the block.

A copy of a context made inside a block (an asyncio task, ``copy_context``) sees the block's entry while the
block is open.  Once it is closed, an entry that loosens security (trust, strict mode off, a wider allowlist) is
ignored everywhere; one that tightens it (``Stack(sticky=...)``: strict mode on) keeps applying in copies that
outlive the block, so leaving a block never weakens a task it started.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable


class Entry:
    """One entry of a scope: its value, who opened it, in which frame, and whether it is still open."""

    __slots__ = ("value", "owner", "frame", "open")

    def __init__(self, value, owner, frame):
        self.value, self.owner, self.frame, self.open = value, owner, frame, True


class Stack:
    """The entries of one kind of scope in the current context, innermost last."""

    def __init__(self, name: str, *, sticky: Callable[[object], bool] = lambda value: False):
        self._var: contextvars.ContextVar[tuple[Entry, ...]] = contextvars.ContextVar(name, default=())
        self._sticky = sticky

    def active(self) -> list:
        """The values in force here, outermost first: open entries, and closed ones that are sticky."""
        return [e.value for e in self._var.get() if e.open or self._sticky(e.value)]

    def innermost(self, default=None):
        for entry in reversed(self._var.get()):
            if entry.open or self._sticky(entry.value):
                return entry.value
        return default

    def push(self, value, owner=None, frame=None) -> Entry:
        entry = Entry(value, owner, frame)
        self._var.set(self._var.get() + (entry,))
        return entry

    def close(self, entry: Entry) -> None:
        entry.open, entry.frame = False, None  # first: whatever happens next, this entry no longer counts
        entries = self._var.get()
        if any(e is entry for e in entries):
            self._var.set(tuple(e for e in entries if e is not entry))

    def own(self, owner, frame) -> Entry | None:
        """The open entry ``owner`` made in this context: the innermost one made from ``frame`` if any, else the
        innermost one (a ``with`` split over frames: ``ExitStack``)."""
        mine = [e for e in self._var.get() if e.owner is owner and e.open]
        for entry in reversed(mine):
            if entry.frame is frame:
                return entry
        return mine[-1] if mine else None


class Manager:
    """A reusable, shareable ``with`` manager over a ``Stack``: subclasses set ``_stack`` and ``_value``."""

    _stack: Stack
    _value: object

    def __init__(self):
        self._lock = threading.Lock()
        self._open: list[Entry] = []  # every open entry of this manager, in any context

    def __enter__(self) -> None:
        entry = self._stack.push(self._value, self, sys._getframe(1))
        with self._lock:
            self._open.append(entry)

    def __exit__(self, *exc_info) -> None:
        frame = sys._getframe(1)
        with self._lock:
            same_frame = [e for e in self._open if e.open and e.frame is frame]
        # the entry this very ``with`` made (its frame: also when a generator is finished in another thread); else
        # this context's innermost one (a ``with`` split over frames: ExitStack); else the newest open one
        entry = same_frame[-1] if same_frame else self._stack.own(self, frame)
        if entry is None:
            with self._lock:
                candidates = [e for e in self._open if e.open]
            entry = candidates[-1] if candidates else None
        if entry is not None:
            self._stack.close(entry)
        with self._lock:
            self._open = [e for e in self._open if e.open]
