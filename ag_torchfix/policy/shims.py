"""Narrow stand-ins for the few things genuine exports need that torch's unpickler can't do safely.

Each shim is served under the real name only inside a secure load, and each accepts exactly what
the allowlist's tables (GETATTR_PAIRS, DEFAULTDICT_FACTORIES) name; anything else is refused with
``pickle.UnpicklingError`` before it does anything.
"""

from __future__ import annotations

import collections
import functools
import importlib
import pickle
import sys

from . import allowlist


def resolve(name: str):
    """Import the object an allowlisted dotted name refers to (longest importable module prefix)."""
    for candidate in _spellings(allowlist.canonical(name)):
        parts = candidate.split(".")
        for i in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:i])
            try:
                obj = importlib.import_module(module_name)
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except (AttributeError, ImportError):  # fastcore 1.8+ raises ImportError for moved names
                break
            return obj
    raise LookupError(name)


def _spellings(name: str) -> list[str]:
    """numpy 2 renamed numpy.core to numpy._core; files from either era name either one."""
    for old, new in (("numpy.core.", "numpy._core."), ("numpy._core.", "numpy.core.")):
        if name.startswith(old):
            other = new + name[len(old):]
            numpy = sys.modules.get("numpy")
            numpy2 = numpy is not None and int(numpy.__version__.split(".")[0]) >= 2
            preferred = "numpy._core." if numpy2 else "numpy.core."
            return [name, other] if name.startswith(preferred) else [other, name]
    return [name]


def resolve_installed(names) -> tuple[object, ...]:
    """The objects behind ``names`` that exist here (older AutoGluon lacks some); files needing the rest are refused."""
    found = []
    for name in names:
        try:
            found.append(resolve(name))
        except LookupError:
            pass
    return tuple(found)


@functools.lru_cache(maxsize=1)
def _getattr_pairs() -> frozenset[tuple[type, str]]:
    pairs = set()
    for (cls_name, attr) in allowlist.GETATTR_PAIRS:
        try:
            pairs.add((resolve(cls_name), attr))
        except LookupError:
            pass  # not installed here: files needing it are refused
    return frozenset(pairs)


@functools.lru_cache(maxsize=1)
def defaultdict_factories() -> tuple[object, ...]:
    return resolve_installed(allowlist.DEFAULTDICT_FACTORIES)


@functools.lru_cache(maxsize=1)
def _enum_classes() -> dict[int, tuple[type, frozenset[str]]]:
    """id(enum class) -> (the class, its allowlisted member names), for the classes installed here."""
    found = {}
    for cls_name, (members, _reason) in allowlist.ENUM_MEMBERS.items():
        try:
            cls = resolve(cls_name)
        except LookupError:
            continue
        found[id(cls)] = (cls, frozenset(members))
    return found


def enum_member(cls, name):
    """``getattr(EnumClass, 'NAME')`` as CPython 3.11.0-3.11.4 pickle enum members: only an allowlisted class and
    one of its real member names, taken from the member map (a method or dunder is never reached); else None."""
    known = _enum_classes().get(id(cls))
    if known is None or known[0] is not cls or type(name) is not str or name not in known[1]:
        return None
    return cls._member_map_.get(name)


def pickled_getattr(obj, name, *default):
    """``builtins.getattr`` as bound methods and (CPython 3.11.0-3.11.4) enum members are pickled: only
    allowlisted (exact class, name) pairs, and members of the allowlisted enums."""
    if not default:
        member = enum_member(obj, name)
        if member is not None:
            return member
    if default or type(name) is not str or (type(obj), name) not in _getattr_pairs():
        owner = obj if isinstance(obj, type) else type(obj)
        raise pickle.UnpicklingError(
            f"getattr(<{owner.__module__}.{owner.__qualname__}>, {name!r}) is not an allowlisted attribute"
        )
    return getattr(obj, name)


def inert_getattr(obj, name, *default):
    """``builtins.getattr`` in a secure load, where fastai's classes are inert records: an allowlisted enum member,
    or a reference to a record's bound method (``allowlist.GETATTR_PAIRS``) that the materializer binds."""
    from ..formats import records

    if not default:
        member = enum_member(obj, name)
        if member is not None:
            return member
        if isinstance(obj, records.Record) and type(name) is str and (obj.name, name) in allowlist.GETATTR_PAIRS:
            return records.BoundRef(obj, name)
    shown = obj.name if isinstance(obj, records.Record) else f"{type(obj).__module__}.{type(obj).__qualname__}"
    raise pickle.UnpicklingError(f"getattr(<{shown}>, {name!r}) is not an allowlisted attribute")


def pickled_defaultdict(*args):
    """``collections.defaultdict`` with one allowlisted factory and nothing else."""
    if len(args) != 1 or not any(args[0] is f for f in defaultdict_factories()):
        raise pickle.UnpicklingError(f"defaultdict with factory {args[0] if args else None!r} is not allowlisted")
    return collections.defaultdict(args[0])


def pickled_new_index(cls, d):
    """pandas' ``_new_Index(cls, d)`` restricted to pandas Index subclasses and a dict of arguments."""
    import pandas

    if not (isinstance(cls, type) and issubclass(cls, pandas.Index) and type(d) is dict):
        raise pickle.UnpicklingError(f"_new_Index only rebuilds pandas indexes, not {cls!r}")
    from pandas.core.indexes.base import _new_Index

    return _new_Index(cls, d)


def shim_objects() -> dict[str, object]:
    """Name -> stand-in object, for every name in ``allowlist.SHIMS``."""
    import pathlib

    objects = {
        "builtins.getattr": pickled_getattr,
        "collections.defaultdict": pickled_defaultdict,
        "pandas.core.indexes.base._new_Index": pickled_new_index,
        # AutoGluon swaps pathlib.WindowsPath for PosixPath process-wide while loading; this does
        # the same for this one load only.
        "pathlib.WindowsPath": pathlib.PosixPath if sys.platform != "win32" else pathlib.WindowsPath,
    }
    assert objects.keys() == allowlist.SHIMS.keys()
    return objects
