"""Transparent patches: a replacement keeps the original's identity, so nobody can tell it is there.

``functools.wraps`` gives it the original's ``__module__``, ``__qualname__``, ``__name__``, ``__doc__`` and
``__wrapped__`` (so ``inspect.signature`` reports the original's signature, and pickling by reference finds
the replacement under the original's name); the package marks its replacements with an attribute of its own
instead of changing any of those.  ``replace_classmethod`` / ``restore_classmethod`` do the same for the
classmethods of AutoGluon's model classes, and only put back what is still theirs.
"""

from __future__ import annotations

import functools

MARK = "__ag_torchfix_patch__"


def wrap(original, replacement):
    """``replacement`` dressed as ``original`` and marked as the package's."""
    functools.wraps(original)(replacement)
    setattr(replacement, MARK, True)
    return replacement


def is_patched(obj) -> bool:
    return bool(getattr(getattr(obj, "__func__", obj), MARK, False))


def replace_classmethod(cls: type, name: str, make, originals: dict) -> bool:
    """Replace ``cls.<name>`` (a classmethod) by ``classmethod(make(original function))``, once; the original
    descriptor is kept in ``originals[cls]``.  Returns whether it replaced anything."""
    current = cls.__dict__.get(name)
    original = getattr(current, "__func__", None)
    if original is None or is_patched(current):
        return False
    originals[cls] = current
    setattr(cls, name, classmethod(wrap(original, make(original))))
    return True


def restore_classmethod(name: str, originals: dict) -> None:
    for cls, original in list(originals.items()):
        if is_patched(cls.__dict__.get(name)):
            setattr(cls, name, original)
        del originals[cls]
