"""Build the real fastai learner from the inert records a secure load returns (issue 17: rebuild, don't trust).

Two passes, both trusted code.  ``check`` walks the records against ``learner_schema`` position by position: the
class each position may hold, each record's attributes (closed world), each value's type and bounds, functions only
where the schema names them, hook dicts empty, tensors as views inside their storage; it raises ``SchemaError``
naming the first offending position.  Only then does ``build`` make the real objects: ``cls.__new__`` and the
class's own ``__setstate__`` (what torch would have done) on checked data, the genuine function from code for each
reference, sharing and cycles kept.  No method of a file-built object runs before the check has passed.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import inspect
import math
import pathlib
import random

from ..policy import learner_schema as schema
from ..formats.records import BoundRef, Record, Ref

MAX_VISITS = 2_000_000  # (object, position) pairs checked: a genuine learner has a few thousand
MAX_DEPTH = 100  # nesting of positions: a genuine learner is about 25 deep
MAX_ITEMS = 10_000_000  # items of one list or dict


class SchemaError(Exception):
    """The records are not a genuine learner: ``where`` names the position, ``reason`` what is wrong there."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def materialize(root):
    """The real learner the records describe, or ``SchemaError``."""
    check(root)
    return _Builder().build(root, 0)


def check(root, world=None) -> None:
    """Raise ``SchemaError`` unless the records are a genuine learner, position by position.  ``world`` answers the
    checker's questions about library objects: the real libraries (the loader, default) or the stand-ins of an
    offline read (``record_reader.OFFLINE``: the scanner, which imports neither torch, numpy nor pandas)."""
    if not (isinstance(root, Record) and root.name == schema.LEARNER):
        raise SchemaError("learner", f"the file holds {_show(root)}, not a fastai Learner")
    token = _world.set(world or REAL)
    try:
        _Checker().check(root, schema.ROOT, "learner", None, 0)
    finally:
        _world.reset(token)


# --- lazily imported libraries (the scanner imports this module without torch) -----------------------------

@functools.lru_cache(maxsize=1)
def _libs():
    import numpy
    import pandas
    import torch

    from ..policy import shims

    tensor_types = tuple(shims.resolve(n) for n in schema.TENSOR_TYPES)
    return numpy, pandas, torch, tensor_types


@functools.lru_cache(maxsize=None)
def _resolved(name: str):
    from ..policy import shims

    return shims.resolve(name)


class _Real:
    """The checker's questions about library objects, answered by the real libraries (what torch returned)."""

    @staticmethod
    def numpy_scalar(value) -> bool:
        numpy = _libs()[0]
        return isinstance(value, (numpy.integer, numpy.floating, numpy.bool_)) and type(value).__module__ == "numpy"

    @staticmethod
    def numpy_bool(value) -> bool:
        return isinstance(value, _libs()[0].bool_)

    @staticmethod
    def numpy_str(value) -> bool:
        return isinstance(value, _libs()[0].str_)

    @staticmethod
    def is_tensor(value) -> bool:
        return isinstance(value, _libs()[2].Tensor)

    @staticmethod
    def tensor_of_class(value) -> bool:
        return type(value) in _libs()[3] or type(value) is _libs()[2].nn.Parameter

    @staticmethod
    def is_parameter(value) -> bool:
        return type(value) is _libs()[2].nn.Parameter

    @staticmethod
    def geometry(value):
        return (tuple(value.shape), value.stride(), value.storage_offset(), value.untyped_storage().nbytes(),
                value.element_size(), getattr(value, "__dict__", None))

    @staticmethod
    def attributes(value):
        return getattr(value, "__dict__", None)

    @staticmethod
    def is_device(value) -> bool:
        return type(value) is _libs()[2].device

    @staticmethod
    def is_ndarray(value) -> bool:
        return isinstance(value, _libs()[0].ndarray)

    @staticmethod
    def numeric_ndarray(value) -> bool:
        return type(value) is _libs()[0].ndarray and value.dtype.kind in "biuf"

    @staticmethod
    def is_dataframe(value) -> bool:
        return type(value) is _libs()[1].DataFrame

    @staticmethod
    def is_class(value, name: str) -> bool:
        return value is _resolved(name)

    @staticmethod
    def is_type(value) -> bool:
        return isinstance(value, type)


REAL = _Real()
_world: contextvars.ContextVar = contextvars.ContextVar("ag_torchfix_materialize_world", default=REAL)


def _numpy_scalar(value) -> bool:
    return _world.get().numpy_scalar(value)


def _atom(value) -> bool:
    t = type(value)
    if value is None or t is bool or t is float:
        return True
    if t is int:
        return abs(value) <= schema.MAX_INT
    if t is str:
        return len(value) <= schema.MAX_STR
    return _numpy_scalar(value)


def _number(value) -> bool:
    t = type(value)
    if t is int:
        return abs(value) <= schema.MAX_INT
    return t is float or (_numpy_scalar(value) and not _world.get().numpy_bool(value))


def _tensor_problem(value) -> str | None:
    """A tensor must be a view that stays inside its storage, without zero strides over more than one element."""
    try:
        size, stride, offset, nbytes, itemsize, extra = _world.get().geometry(value)
    except Exception as exc:  # a tensor torch cannot describe is no genuine tensor
        return f"unreadable tensor ({type(exc).__name__})"
    if extra and not all(type(k) is str and _atom(v) for k, v in extra.items()):
        return "a tensor carrying attributes that are not plain data (fastai copies them into every result)"
    if offset < 0 or any(s < 0 for s in stride):
        return "negative stride or offset"
    if any(n > 1 and s == 0 for n, s in zip(size, stride)):
        return f"zero stride over {size} (a small storage expanded into a large tensor)"
    if math.prod(size) == 0:
        return None
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if extent * itemsize > nbytes:
        return f"view of {extent * itemsize} bytes over a storage of {nbytes}"
    return None


# --- the check ---------------------------------------------------------------------------------------------

class _Checker:
    def __init__(self):
        self.done: set[tuple[int, int]] = set()
        self.keep: list = []  # keeps checked objects alive so their ids stay unique
        self.visits = 0
        self.module_children: dict[int, tuple] = {}  # module -> its one place (parent, name) in the model

    def work(self, where: str, amount: int) -> None:
        """Count work done inside one position (dict entries, tensor attributes) against the same bound."""
        self.visits += amount
        if self.visits > MAX_VISITS:
            raise SchemaError(where, f"more than {MAX_VISITS} positions and entries (no genuine learner has)")

    def check(self, value, p: schema.P, where: str, owner, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise SchemaError(where, f"nested deeper than {MAX_DEPTH} positions (no genuine learner is)")
        self.visits += 1
        if self.visits > MAX_VISITS:
            raise SchemaError(where, f"more than {MAX_VISITS} positions (no genuine learner has)")
        key = (id(value), id(p))
        if key in self.done:
            return
        kind = p.kind
        if kind != "either":  # each (object, pattern) is checked once: cycles end here, shared values cost once
            self.done.add(key)
            self.keep.append(value)
        problem = getattr(self, "_" + kind.replace("-", "_"))(value, p, where, owner, depth)
        if problem:
            raise SchemaError(where, problem)

    # scalars
    def _bool(self, v, p, *_):
        return None if type(v) is bool else f"{_show(v)} where a bool belongs"

    def _int(self, v, p, *_):
        return None if type(v) is int and abs(v) <= schema.MAX_INT else f"{_show(v)} where a bounded int belongs"

    def _number(self, v, p, *_):
        return None if _number(v) else f"{_show(v)} where a number belongs"

    def _str(self, v, p, *_):
        return None if type(v) is str and len(v) <= schema.MAX_STR else f"{_show(v)} where a short str belongs"

    def _none(self, v, p, *_):
        return None if v is None else f"{_show(v)} where None belongs"

    def _atom(self, v, p, *_):
        return None if _atom(v) else f"{_show(v)} where plain data belongs"

    def _lit(self, v, p, *_):
        return None if any(type(v) is type(x) and v == x for x in p.args) else \
            f"{_show(v)}, but genuine learners hold {' or '.join(map(repr, p.args))} here"

    def _either(self, v, p, where, owner, depth):
        for option in p.args:
            if _could_be(v, option):  # options are told apart by the value's type: no backtracking
                self.check(v, option, where, owner, depth)
                return None
        return f"{_show(v)} is none of {p.args}"

    # references
    def _record(self, v, p, where, owner, depth):
        if not isinstance(v, Record) or v.name not in p.args:
            return f"{_show(v)} where {' or '.join(p.args)} belongs"
        cls = schema.CLASSES[v.name]
        state = v.state
        if not v.built or type(state) is not dict:
            return f"{v.name} without a plain state dict"
        missing = [k for k in cls.required if k not in state]
        if missing:
            return f"{v.name} without {', '.join(missing)}"
        for key, item in state.items():
            if type(key) is not str:
                return f"{v.name} state has a key {_show(key)}"
            attr = cls.attrs.get(key)
            if attr is None:
                return f"{v.name} has an attribute {key[:80]!r} no genuine learner has"
            if key == "_modules" and type(item) is dict:  # a module shared across the tree runs once per place
                if len(item) > schema.MAX_SUBMODULES:
                    return f"{len(item)} submodules (genuine modules have a few)"
                for name, child in item.items():
                    if isinstance(child, Record) and child.name not in schema.SHARED_MODULES:
                        place = self.module_children.setdefault(id(child), (id(v), name))
                        if place != (id(v), name):
                            return f"the module at _modules[{str(name)[:40]!r}] also sits elsewhere in the model"
            self.check(item, attr, f"{where}.{key}", v, depth + 1)
        return None

    def _function(self, v, p, *_):
        if isinstance(v, Ref) and v.name in p.args:
            return None
        if isinstance(v, Ref):
            return f"the function {v.name}, where only {' or '.join(p.args)} belongs"
        return f"{_show(v)} where the function {' or '.join(p.args)} belongs"

    def _bound(self, v, p, where, owner, depth):
        if isinstance(v, BoundRef) and v.attr == p.args[0] and v.record is owner:
            return None
        return f"{_show(v)} where the object's own {p.args[0]} method belongs"

    def _type(self, v, p, *_):
        world = _world.get()
        if world.is_type(v) and any(world.is_class(v, n) for n in p.args):
            return None
        return f"{_show(v)} where the class {' or '.join(p.args)} belongs"

    # containers
    def _list(self, v, p, where, owner, depth):
        return self._items(v, p.args[0], where, owner, depth, *p.args[1:])

    def _items(self, v, item, where, owner, depth, most=None, unique=False):
        if type(v) is not list or len(v) > (most or MAX_ITEMS):
            return f"{_show(v)} where a list of at most {most or MAX_ITEMS} items belongs"
        if unique:  # fastai works once per occurrence: the same object (or column name) twice is no genuine list
            seen = {x if type(x) is str else id(x) for x in v}
            if len(seen) != len(v):
                return "an item listed twice (genuine learners list each once)"
        for i, x in enumerate(v):
            self.check(x, item, f"{where}[{i}]", owner, depth + 1)
        return None

    def _any_list(self, v, p, where, owner, depth):
        return self._items(v, schema.ATOM, where, owner, depth)

    def _tuple(self, v, p, where, owner, depth):
        if type(v) is not tuple or len(v) > MAX_ITEMS:
            return f"{_show(v)} where a tuple belongs"
        for i, item in enumerate(v):
            self.check(item, p.args[0], f"{where}[{i}]", owner, depth + 1)
        return None

    def _set(self, v, p, where, owner, depth):
        if type(v) is not set or len(v) > MAX_ITEMS:
            return f"{_show(v)} where a set belongs"
        for item in v:
            self.check(item, p.args[0], f"{where}{{}}", owner, depth + 1)
        return None

    def _dict(self, v, p, where, owner, depth):
        if type(v) is not dict or len(v) > MAX_ITEMS:
            return f"{_show(v)} where a dict belongs"
        for key, item in v.items():
            if type(key) is not str or len(key) > schema.MAX_STR:
                return f"a key {_show(key)} where keys are short strings"
            self.check(item, p.args[0], f"{where}[{key[:40]!r}]", owner, depth + 1)
        return None

    def _L(self, v, p, where, owner, depth):  # noqa: N802
        if not isinstance(v, Record) or v.name != "fastcore.foundation.L":
            return f"{_show(v)} where an L belongs"
        state = v.state
        if not v.built or type(state) is not dict or set(state) != {"items"} or type(state["items"]) is not list:
            return "an L whose state is not just its items"
        return self._items(state["items"], p.args[0], where, owner, depth, *p.args[1:])

    def _empty_odict(self, v, p, *_):
        return None if type(v) is collections.OrderedDict and not v else f"{_show(v)} where an empty hook dict belongs"

    def _o2i(self, v, p, where, *_):
        world = _world.get()
        if not (type(v) is dict or (type(v) is collections.defaultdict and v.default_factory is int)):
            return f"{_show(v)} where a category index belongs"
        if len(v) > MAX_ITEMS:
            return "a category index larger than any genuine one"
        self.work(where, len(v))
        for key, index in v.items():
            if not (_atom(key) or world.numpy_str(key)) or type(index) is not int:
                return f"category index entry {_show(key)} -> {_show(index)}"
        return None

    def _types_map(self, v, p, where, *_):
        if type(v) is not dict or len(v) > 16:
            return f"{_show(v)} where fastai's batch type map belongs"
        self.work(where, sum(len(x) if type(x) is list else 1 for x in v.values()))
        world = _world.get()
        for key, value in v.items():
            if not any(world.is_class(key, k) for k in schema.TYPES_MAP_KEYS) or type(value) is not list \
                    or len(value) > 64 or not all(any(world.is_class(t, x) for x in schema.TENSOR_TYPES) for t in value):
                return f"batch type map entry {_show(key)} -> {_show(value)}"
        return None

    # values the libraries built (their own states were checked statically before torch read them)
    def _tensor(self, v, p, where, *_):
        world = _world.get()
        if not world.tensor_of_class(v):
            return f"{_show(v)} where a tensor belongs"
        self.work(where, len(world.attributes(v) or ()))
        return _tensor_problem(v)

    def _parameter(self, v, p, where, *_):
        world = _world.get()
        if not world.is_parameter(v):
            return f"{_show(v)} where a parameter belongs"
        self.work(where, len(world.attributes(v) or ()))
        return _tensor_problem(v)

    def _device(self, v, p, *_):
        return None if _world.get().is_device(v) else f"{_show(v)} where a device belongs"

    def _path(self, v, p, *_):
        return None if type(v) is pathlib.PosixPath or type(v) is pathlib.WindowsPath else \
            f"{_show(v)} where a path belongs"

    def _ndarray(self, v, p, *_):
        if not _world.get().numeric_ndarray(v):
            return f"{_show(v)} where a numeric array belongs"
        return None

    def _dataframe(self, v, p, *_):
        return None if _world.get().is_dataframe(v) else f"{_show(v)} where a DataFrame belongs"

    def _random(self, v, p, *_):
        return None if type(v) is random.Random else f"{_show(v)} where a random generator belongs"

    def _signature(self, v, p, where, *_):
        if type(v) is not inspect.Signature or len(v.parameters) > 256:
            return f"{_show(v)} where a signature belongs"
        self.work(where, len(v.parameters))
        if v.return_annotation is not inspect.Signature.empty and not _atom(v.return_annotation):
            return f"a signature returning {_show(v.return_annotation)}"
        for param in v.parameters.values():
            for value in (param.default, param.annotation):
                if value is not inspect.Parameter.empty and not _atom(value):
                    return f"a signature parameter holding {_show(value)}"
        return None


def _could_be(value, p: schema.P) -> bool:
    """Whether ``value``'s type is the kind ``p`` describes (so ``either`` checks one option only)."""
    kind = p.kind
    if kind in ("record", "L"):
        return isinstance(value, Record)
    if kind == "function":
        return isinstance(value, Ref)
    if kind == "bound":
        return isinstance(value, BoundRef)
    if kind == "either":
        return any(_could_be(value, o) for o in p.args)
    simple = {"bool": bool, "str": str, "list": list, "tuple": tuple, "set": set, "dict": dict}
    if kind in simple:
        return type(value) is simple[kind]
    if kind == "none":
        return value is None
    if kind == "int":
        return type(value) is int
    if kind == "number":
        return type(value) in (int, float) or _numpy_scalar(value)
    if kind == "atom":
        return _atom(value)
    if kind == "lit":
        return any(type(value) is type(x) for x in p.args)
    world = _world.get()
    if kind in ("tensor", "parameter"):
        return world.is_tensor(value)
    if kind == "device":
        return world.is_device(value)
    if kind == "path":
        return isinstance(value, pathlib.PurePath)
    if kind == "ndarray":
        return world.is_ndarray(value)
    if kind == "dataframe":
        return world.is_dataframe(value)
    if kind == "type":
        return world.is_type(value)
    if kind in ("o2i", "types-map"):
        return isinstance(value, dict)
    if kind == "empty-odict":
        return isinstance(value, collections.OrderedDict)
    return kind in ("signature", "random")  # never an option of either: checked directly


# --- the build ---------------------------------------------------------------------------------------------

class _Builder:
    def __init__(self):
        self.made: dict[int, object] = {}

    def build(self, value, depth: int):
        if depth > 2 * MAX_DEPTH + 8:  # the check bounded the same walk (a record's list is one level more here)
            raise SchemaError("learner", f"nested deeper than {MAX_DEPTH} positions")
        known = self.made.get(id(value))
        if known is not None:
            return known
        t = type(value)
        if isinstance(value, Record):
            cls = _resolved(value.name)
            obj = cls.__new__(cls)
            self.made[id(value)] = obj
            state = {key: self.build(item, depth + 1) for key, item in value.state.items()}
            setstate = getattr(cls, "__setstate__", None)
            if setstate is None or setstate is getattr(object, "__setstate__", None):
                obj.__dict__.update(state)
            else:  # the library's own __setstate__ (Learner, Module, GetAttr, Stateful ...), on checked data
                setstate(obj, state)
            return obj
        if t is Ref:
            obj = _resolved(value.name)
        elif t is BoundRef:
            obj = getattr(self.build(value.record, depth + 1), value.attr)
        elif t is list:
            obj = self.made[id(value)] = []
            obj.extend(self.build(item, depth + 1) for item in value)
            return obj
        elif t is dict or t is collections.defaultdict:
            obj = self.made[id(value)] = {} if t is dict else collections.defaultdict(value.default_factory)
            for key, item in value.items():
                obj[key] = self.build(item, depth + 1)
            return obj
        elif t is collections.OrderedDict:
            obj = collections.OrderedDict()
        elif t is tuple:
            obj = tuple(self.build(item, depth + 1) for item in value)
        elif t is set:
            obj = set(value)  # sets of strings only (checked)
        else:
            obj = value  # scalars and the values numpy, pandas, pathlib, inspect and torch built
        self.made[id(value)] = obj
        return obj


def _show(value) -> str:
    if isinstance(value, (Record, Ref, BoundRef)):
        return repr(value)
    t = type(value)
    if t in (str, int, float, bool) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {t.__module__}.{t.__qualname__}"
