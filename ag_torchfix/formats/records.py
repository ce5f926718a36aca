"""Inert stand-ins for the classes and functions a fastai internals file names (issue 17: rebuild, don't trust).

Inside a secure load, torch's weights-only unpickler gets a ``Record`` type for every fastai, fastcore,
fasttransform, AutoGluon and torch.nn class the allowlist admits, and a ``Ref`` for every function: NEWOBJ makes an
empty record, BUILD stores the file's state in it, and that is all a record can do: it has no methods of the real
class, no ``__dict__`` to plant anything in, and it cannot be called.  A ``Ref`` is a name, not a callable.  What
torch returns is therefore data; ``materialize`` (trusted code, one declarative schema) checks it position by
position and builds the real learner, putting real functions only where fastai itself puts them.
"""

from __future__ import annotations

import functools
import pickle


class Record:
    """An allowlisted class as the file describes it: the class's name and the state one BUILD gave it."""

    __slots__ = ("state", "built")
    name = ""  # the allowlisted dotted name (set on each subclass)

    def __new__(cls, *args):
        if args:  # genuine files construct with NEWOBJ and no arguments (the static pass refuses the rest)
            raise pickle.UnpicklingError(f"{cls.name} constructed with arguments")
        inst = object.__new__(cls)
        inst.state, inst.built = None, False
        return inst

    def __setstate__(self, state):
        if self.built:
            raise pickle.UnpicklingError(f"{self.name} built twice")
        self.state, self.built = state, True

    def __reduce__(self):
        raise TypeError("a record of a secure load is not picklable")

    def __repr__(self) -> str:
        return f"<record {self.name}>"


class Ref:
    """A function (or a class used as a value) the file names: only a name until the materializer places it."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self):
        raise TypeError("a reference of a secure load is not picklable")

    def __repr__(self) -> str:
        return f"<reference {self.name}>"


class BoundRef:
    """``getattr(record, name)``: a bound method the file names (TabularPandas keeps its ``dataloaders``)."""

    __slots__ = ("record", "attr")

    def __init__(self, record: Record, attr: str):
        self.record, self.attr = record, attr

    def __reduce__(self):
        raise TypeError("a reference of a secure load is not picklable")

    def __repr__(self) -> str:
        return f"<bound reference {self.record.name}.{self.attr}>"


@functools.lru_cache(maxsize=None)
def record_type(name: str) -> type[Record]:
    """The one record type standing for ``name`` (one per name, so the scope can tell them apart by identity)."""
    return type(f"Record[{name}]", (Record,), {"__slots__": (), "name": name, "__module__": __name__})


@functools.lru_cache(maxsize=None)
def ref(name: str) -> Ref:
    return Ref(name)
