"""Scope an allowlist to one ``torch.load(weights_only=True)`` call, per thread and async task.

torch's ``safe_globals`` context mutates one process-wide set: it races with other threads, and on
exit it removes entries the user had registered before.  Instead, the package wraps the one lookup
torch's weights-only unpickler makes, ``_weights_only_unpickler._get_user_allowed_globals()``: inside
a secure load (a context variable, so per thread and per async task) it answers with the curated
scope; everywhere else it answers exactly what torch would.  torch's process-wide set is never
touched by a load.

The scope also enforces how names may be used: its ``values()``, which torch consults before REDUCE,
NEWOBJ and BUILD, holds only CONSTRUCT and CALL entries and the shims, so a REFERENCE entry (a
logger, a metric function) can be loaded as a value but not called.  On torch >= 2.10, whose
unpickler refuses SETITEMS on anything but dict/OrderedDict/Counter, the scope also admits
defaultdicts made by the defaultdict shim.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping

from ..core import scopes

_active = scopes.Stack("ag_torchfix_scope")  # a wider allowlist: closed entries count nowhere, copies included
_lock = threading.Lock()
_originals: dict[str, object] = {}


class _IdentitySet:
    """Membership by identity: the fastest exact test, and immune to objects with odd __eq__."""

    __slots__ = ("_ids", "_objects")

    def __init__(self, objects: Iterable[object]):
        self._objects = tuple(objects)  # keeps the ids valid
        self._ids = frozenset(id(o) for o in self._objects)

    def __contains__(self, obj: object) -> bool:
        return id(obj) in self._ids

    def __iter__(self):
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)


class Scope(Mapping):
    """What torch's unpickler sees as the user's allowed globals during one secure load."""

    def __init__(self, by_name: dict[str, object], callables: Iterable[object], factories: Iterable[object]):
        self._by_name = dict(by_name)
        self._callables = _IdentitySet(callables)
        self._factories = _IdentitySet(factories)

    def __getitem__(self, name: str) -> object:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def values(self):  # type: ignore[override]
        return self._callables

    def allows_setitem_on(self, target: object) -> bool:
        return type(target) is collections.defaultdict and target.default_factory in self._factories


@contextlib.contextmanager
def active(scope: Scope) -> Iterator[None]:
    """Make ``scope`` the allowlist of weights-only loads in this context for the block."""
    entry = _active.push(scope)
    try:
        yield
    finally:
        _active.close(entry)


class Adding(dict):
    """Torch's own user allowlist plus a few names, for this context only (fastai's checkpoint reloads)."""


@contextlib.contextmanager
def adding(objects: dict[str, object]) -> Iterator[None]:
    """Inside the block, weights-only loads in this context also accept ``objects`` (name -> object), on
    top of whatever the user registered; other threads and the process-wide set are unaffected."""
    patch()
    entry = _active.push(Adding(objects))
    try:
        yield
    finally:
        _active.close(entry)


def unsupported_reason() -> str | None:
    """Why this torch cannot host a scoped secure load, or None if it can."""
    try:
        import torch
        from torch import _weights_only_unpickler as wou
    except ImportError as exc:  # pragma: no cover - torch is a dependency of everything here
        return f"torch cannot be imported ({exc})"
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if version < (2, 6):
        return f"torch {torch.__version__} is older than 2.6, the oldest torch ag_torchfix supports"
    if not callable(getattr(wou, "_get_user_allowed_globals", None)) or not hasattr(wou, "Unpickler"):
        return f"torch {torch.__version__}'s weights-only unpickler has no per-load allowlist hook"
    return None


def patch() -> None:
    """Install the scope-aware lookups into torch (idempotent)."""
    from torch import _weights_only_unpickler as wou

    with _lock:
        if _originals:
            return
        original_lookup = wou._get_user_allowed_globals

        def _get_user_allowed_globals():
            scope = _active.innermost()
            if scope is None:
                return original_lookup()
            if type(scope) is Adding:
                return {**original_lookup(), **scope}
            return scope

        _get_user_allowed_globals.__wrapped__ = original_lookup
        _originals["_get_user_allowed_globals"] = original_lookup
        wou._get_user_allowed_globals = _get_user_allowed_globals

        original_check = wou.Unpickler.__dict__.get("_check_set_item_target")
        if original_check is not None:  # torch >= 2.10 restricts SETITEM(S) targets

            def _check_set_item_target(self, opcode):
                scope = _active.innermost()
                if type(scope) is Scope and self.stack and scope.allows_setitem_on(self.stack[-1]):
                    return
                return original_check(self, opcode)

            _check_set_item_target.__wrapped__ = original_check
            _originals["_check_set_item_target"] = original_check
            wou.Unpickler._check_set_item_target = _check_set_item_target


def unpatch() -> None:
    """Restore torch's own lookups, if they are still ours."""
    import sys

    wou = sys.modules.get("torch._weights_only_unpickler")
    with _lock:
        if wou is None or not _originals:
            _originals.clear()
            return
        lookup = _originals.pop("_get_user_allowed_globals", None)
        if lookup is not None and getattr(wou._get_user_allowed_globals, "__wrapped__", None) is lookup:
            wou._get_user_allowed_globals = lookup
        check = _originals.pop("_check_set_item_target", None)
        if check is not None and getattr(wou.Unpickler.__dict__.get("_check_set_item_target"), "__wrapped__", None) is check:
            wou.Unpickler._check_set_item_target = check


def is_patched() -> bool:
    return bool(_originals)
