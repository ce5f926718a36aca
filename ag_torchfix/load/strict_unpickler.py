"""Strict mode's restricted unpickler: every code-reaching opcode checked against the strict allowlist.

``StrictUnpickler`` is pickle's own (Python) unpickler with these opcodes checked, at run time, on the real
objects:
- GLOBAL / STACK_GLOBAL resolve only allowlisted names (``allowlist.STRICT``) and the shims below;
- REDUCE only on CONSTRUCT/CALL entries and shims, NEWOBJ only on CONSTRUCT classes, and no argument may be a
  class or a function unless that callee takes exactly that one (``allowlist.STRICT_CALLABLE_ARGS``; numpy's
  ``__randomstate_ctor`` calls its second argument); every call's arguments are one of the tuples its library's
  ``__reduce__`` writes (``allowlist.STRICT_CALLS``: NEWOBJ with none, sizes and strides checked), and every value
  made is checked against the invariants its library trusts (``value_invariants``: categorical codes, block
  placements, tensor views, index lengths, frame states);
- BUILD only on instances of CONSTRUCT classes, with ``__setstate__`` looked up on the *type* (pickle looks it
  up on the instance, so a first BUILD could plant one for a second); a state may not plant a dunder name
  (``allowlist.DUNDER_STATE``) and a slot state may only set the class's real ``__slots__``, so BUILD can never
  change an object's ``__class__``; numpy dtype and array states are checked (forged dtype flags and short
  object lists crash numpy), and native model state is validated before the native library parses it
  (``native``);
- SETITEM(S) only on dicts, OrderedDicts and shimmed defaultdicts, APPEND(S) only on lists, ADDITEMS only on
  sets; no container gets more than ``allowlist.MAX_EQUAL_HASHES`` keys with one hash; BYTEARRAY8 bounded by the stream; no INST/OBJ, extension codes or persistent ids.
"""

from __future__ import annotations

import collections
import functools
import inspect
import io
import math
import pickle
import struct

from ..policy import allowlist, verdicts as policy, shims, value_invariants
from ..formats import pickle_scan
from ..policy.value_invariants import ValueRefused


# --- the policy: which objects may do what ----------------------------------------------------------

def profile() -> policy.Profile:
    return policy.strict()


class _Objects:
    """Allowlisted names resolved on first use, and what each object may do, found by identity."""

    SHIM = "shim"

    def __init__(self):
        self.entries = profile().entries
        self._by_name: dict[str, object] = {}
        self._use_by_id: dict[int, str] = {}
        self._name_by_id: dict[int, str] = {}
        self._keep: list[object] = []  # keeps ids valid

    def _register(self, obj: object, use: str, name: str = "") -> object:
        self._use_by_id[id(obj)] = use
        self._name_by_id.setdefault(id(obj), name)
        self._keep.append(obj)
        return obj

    def by_name(self, name: str) -> object:
        name = allowlist.canonical(name)  # another writer's spelling of an allowlisted name
        obj = self._by_name.get(name)
        if obj is not None:
            return obj
        if name in _SHIMS:
            obj = self._register(_SHIMS[name], self.SHIM, name)
        else:
            entry = self.entries.get(name)
            if entry is None:
                raise pickle.UnpicklingError(f"global {name} is not allowlisted for strict mode")
            try:
                obj = self._register(shims.resolve(name), entry.use, name)
            except LookupError:
                raise pickle.UnpicklingError(f"allowlisted global {name} cannot be imported here") from None
        self._by_name[name] = obj
        return obj

    def name_of(self, obj: object) -> str | None:
        return self._name_by_id.get(id(obj))

    def resolved(self, name: str) -> object:
        try:
            return self.by_name(name)
        except pickle.UnpicklingError:
            return None

    def use_of(self, obj: object) -> str | None:
        use = self._use_by_id.get(id(obj))
        if use is not None:
            return use
        # types the stream never names (a dtype's class, a rebuilt tensor's class): look them up by their own name
        name = allowlist.canonical(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
        if name in self.entries and name not in _SHIMS:
            try:
                if self.by_name(name) is obj:
                    return self.entries[name].use
            except pickle.UnpicklingError:
                return None
        return None


# --- shims --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _factories() -> tuple:
    return shims.resolve_installed(allowlist.STRICT_DEFAULTDICT_FACTORIES)


@functools.lru_cache(maxsize=1)
def _partial_funcs() -> tuple:
    return shims.resolve_installed(allowlist.STRICT_PARTIAL_FUNCS)


def _strict_defaultdict(*args):
    if len(args) != 1 or not any(args[0] is f for f in _factories()):
        raise pickle.UnpicklingError(f"defaultdict with factory {args[0] if args else None!r} is not allowlisted")
    return collections.defaultdict(args[0])


def _check_partial_func(func) -> None:
    if not any(func is f for f in _partial_funcs()):
        raise pickle.UnpicklingError(f"functools.partial around {func!r} is not allowlisted")


def _strict_partial(func, *args):
    _check_partial_func(func)
    return functools.partial(func, *args)


def _strict_load_from_bytes(data):
    """torch.storage._load_from_bytes, weights-only: the bytes may only hold one storage, whose size header,
    element count and byte count agree (torch allocates what the pickle declares before reading)."""
    import torch

    if type(data) is not bytes:
        raise pickle.UnpicklingError("torch storage bytes expected")
    problem = _legacy_storage_problem(data)
    if problem:
        raise pickle.UnpicklingError(f"torch storage bytes refused: {problem}")
    storage = torch.load(io.BytesIO(data), weights_only=True)
    if not isinstance(storage, (torch.UntypedStorage, torch.storage.TypedStorage)):
        raise pickle.UnpicklingError(f"torch storage expected, got {type(storage).__qualname__}")
    return storage


def _legacy_storage_problem(data: bytes) -> str | None:
    """torch's legacy format for one storage: five pickles (magic, protocol, sys info, the storage's persistent
    id, its keys), then an 8-byte element count and the elements."""
    reader = pickle_scan.Reader(data)
    results = pickle_scan.scan_all(reader, max_pickles=5)
    if len(results) != 5 or any(r.error or r.globals.keys() - _LEGACY_GLOBALS for r in results):
        return "not torch's legacy format for a single storage"
    storage, keys = results[3].value, results[4].value
    pid = storage.args if type(storage) is pickle_scan.Obj and storage.made_by == "persistent id" else None
    if not (type(pid) is tuple and len(pid) == 6 and pid[0] == "storage" and type(pid[1]) is pickle_scan.Global
            and type(pid[4]) is int and keys == [pid[2]]):
        return "its persistent id is not one storage"
    itemsize = 1 if pid[1].name == _UNTYPED else allowlist.STORAGE_ITEMSIZE.get(pid[1].name.removeprefix("torch."))
    rest = data[reader.offset:]
    if itemsize is None or len(rest) < 8:
        return "unknown storage type or missing data"
    numel = int.from_bytes(rest[:8], "little")
    if numel != pid[4] or 8 + numel * itemsize != len(rest):
        return f"it declares {pid[4]} elements but holds {len(rest) - 8} bytes"
    return None


_UNTYPED = "torch.storage.UntypedStorage"  # what torch >= 2 pickles; its element count is in bytes
_LEGACY_GLOBALS = frozenset(f"torch.{name}" for name in allowlist.STORAGE_ITEMSIZE) | {_UNTYPED}


def _strict_new_index(cls, d):
    """pandas' _new_Index with only the arguments pandas writes (value_invariants.index_problem)."""
    import pandas

    if not (isinstance(cls, type) and issubclass(cls, pandas.Index) and type(d) is dict):
        raise pickle.UnpicklingError(f"_new_Index only rebuilds pandas indexes, not {cls!r}")
    problem = value_invariants.index_problem(cls, d)
    if problem:
        raise ValueRefused(problem)
    return shims.pickled_new_index(cls, d)


_SHIMS = {
    "collections.defaultdict": _strict_defaultdict,
    "pandas.core.indexes.base._new_Index": _strict_new_index,
    "functools.partial": _strict_partial,
    "torch.storage._load_from_bytes": _strict_load_from_bytes,
}
assert _SHIMS.keys() == allowlist.STRICT_SHIMS.keys()
_objects = _Objects()
_SETITEM_TYPES = (dict, collections.OrderedDict, collections.Counter)
_IMMUTABLE = (str, bytes, int, float, bool, type(None), type)
_EMPTY_MAKER = "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked"  # makes an empty array object that BUILD fills


# --- the unpickler -----------------------------------------------------------------------------------

class StrictUnpickler(pickle._Unpickler):
    """pickle's own (Python) unpickler with every code-reaching opcode checked against the allowlist."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._hashes = value_invariants.HashBudget()
        self._unbuilt: dict[int, object] = {}
        self._sealed: dict[int, object] = {}  # built, or passed to a call: no BUILD may change it (ids kept alive)

    def find_class(self, module, name):
        full = pickle_scan.normalise_global(module, name) if self.proto < 3 else f"{module}.{name}"
        return _objects.by_name(full)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed in strict mode")

    def _callable(self, func, what: str) -> None:
        use = _objects.use_of(func)
        if use not in (allowlist.CONSTRUCT, allowlist.CALL, _Objects.SHIM):
            raise pickle.UnpicklingError(f"{what} on {_describe(func)}, which is not allowlisted to be called")

    def load_reduce(self):
        self._callable(self.stack[-2], "REDUCE")
        self._arguments(self.stack[-2], self.stack[-1], "REDUCE")
        for value in _shallow(self.stack[-1]):
            if not isinstance(value, _IMMUTABLE):
                self._sealed[id(value)] = value
        func = self.stack[-2]
        super().load_reduce()
        if func is _objects.resolved(_EMPTY_MAKER):
            self._to_build(self.stack[-1])
        else:
            self._made(self.stack[-1])
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        self._constructible(self.stack[-2])
        self._arguments(self.stack[-2], self.stack[-1], "NEWOBJ")
        super().load_newobj()
        self._to_build(self.stack[-1])
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        self._constructible(self.stack[-3])
        self._arguments(self.stack[-3], (self.stack[-2], self.stack[-1]), "NEWOBJ_EX")
        super().load_newobj_ex()
        self._to_build(self.stack[-1])
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    @staticmethod
    def _made(obj) -> None:
        problem = value_invariants.made_problem(obj)
        if problem:
            raise ValueRefused(problem)

    def _to_build(self, obj) -> None:
        """An object made empty: its values are checked when BUILD fills it, and it must be filled."""
        if value_invariants.needs_build(obj):
            self._unbuilt[id(obj)] = obj

    def load(self):
        obj = super().load()
        if self._unbuilt:
            raise ValueRefused(f"a {_describe(next(iter(self._unbuilt.values())))[2:]} is made but never given its "
                               "state (genuine files always BUILD it)")
        return obj

    def _arguments(self, func, args, opname: str) -> None:
        """The argument tuples genuine pickles pass (``allowlist.STRICT_CALLS``; NEWOBJ with none), and no class or
        function among them unless the callee is known to take exactly that one."""
        name = _objects.name_of(func)
        problem = value_invariants.call_problem(name or _describe(func), opname, args, _objects.resolved)
        if problem:
            raise ValueRefused(problem)
        allowed = allowlist.STRICT_CALLABLE_ARGS.get(name, ())
        for value in _shallow(args[0] if opname == "NEWOBJ_EX" else args):
            if not value_invariants.is_code(value):
                continue
            use = _objects.use_of(value)
            if not any(value is _objects.resolved(token) if not token.startswith("<") else
                       use == token.strip("<>") for token in allowed):
                raise pickle.UnpicklingError(f"{opname} of {name or _describe(func)} with {_describe(value)} as an "
                                             "argument: it could call it")

    def _constructible(self, cls) -> None:
        if _objects.use_of(cls) != allowlist.CONSTRUCT:
            raise pickle.UnpicklingError(f"NEWOBJ of {_describe(cls)}, which is not allowlisted to be constructed")

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        cls = type(inst)
        if id(inst) in self._sealed:  # a value checked when it was made, or handed to a call, cannot change after
            raise pickle.UnpicklingError(f"BUILD of {_describe(inst)} after it was built or passed to a call "
                                         "(genuine files build an object once, before using it)")
        self._sealed[id(inst)] = inst
        if cls is functools.partial:  # made by the partial shim; its state names the function again
            if not (isinstance(state, tuple) and len(state) == 4):
                raise pickle.UnpicklingError("malformed functools.partial state")
            _check_partial_func(state[0])
        elif _objects.use_of(cls) != allowlist.CONSTRUCT:
            raise pickle.UnpicklingError(f"BUILD on {_describe(inst)}: its type is not allowlisted")
        else:
            problem = build_problem(inst, state) or value_invariants.state_problem(inst, state)
            if problem:
                raise pickle.UnpicklingError(f"BUILD of {_describe(inst)}: {problem}")
        setstate = getattr(cls, "__setstate__", None)  # from the type: an instance cannot bring its own
        if setstate is not None and setstate is not getattr(object, "__setstate__", None):
            setstate(inst, state)
            self._unbuilt.pop(id(inst), None)
            problem = _after_build(inst) or value_invariants.made_problem(inst)
            if problem:
                raise pickle.UnpicklingError(f"BUILD of {_describe(inst)}: {problem}")
            return
        slotstate = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slotstate = state
        if state:
            inst.__dict__.update(state)
        for key, value in (slotstate or {}).items():
            setattr(inst, key, value)
        self._unbuilt.pop(id(inst), None)
        self._made(inst)
    dispatch[pickle.BUILD[0]] = load_build

    def _check_setitem_target(self, target) -> None:
        if type(target) in _SETITEM_TYPES:
            return
        if type(target) is collections.defaultdict and any(target.default_factory is f for f in _factories()):
            return
        raise pickle.UnpicklingError(f"SETITEM on {_describe(target)} is not allowed")

    def load_setitem(self):
        self._check_setitem_target(self.stack[-3])
        self._hashes.add(self.stack[-3], (self.stack[-2],))
        super().load_setitem()
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        self._check_setitem_target(self.metastack[-1][-1])
        self._hashes.add(self.metastack[-1][-1], self.stack[::2])
        super().load_setitems()
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self):
        self._hashes.once(self.stack[::2], "dict")
        super().load_dict()
    dispatch[pickle.DICT[0]] = load_dict

    def load_frozenset(self):
        self._hashes.once(self.stack, "frozenset")
        super().load_frozenset()
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_append(self):
        if type(self.stack[-2]) is not list:
            raise pickle.UnpicklingError(f"APPEND to {_describe(self.stack[-2])} is not allowed")
        super().load_append()
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        if type(self.metastack[-1][-1]) is not list:
            raise pickle.UnpicklingError(f"APPENDS to {_describe(self.metastack[-1][-1])} is not allowed")
        super().load_appends()
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_additems(self):
        if type(self.metastack[-1][-1]) is not set:
            raise pickle.UnpicklingError(f"ADDITEMS to {_describe(self.metastack[-1][-1])} is not allowed")
        self._hashes.add(self.metastack[-1][-1], self.stack)
        super().load_additems()
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_bytearray8(self):
        """pickle's own version allocates the declared length, then reads: 10 bytes could ask for a terabyte."""
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)  # the stream returns what it holds, never more
        if len(data) != size:
            raise pickle.UnpicklingError(f"BYTEARRAY8 declares {size} bytes but the pickle ends first")
        self.append(bytearray(data))
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def _refuse(self):
        raise pickle.UnpicklingError("INST/OBJ, extension codes and persistent ids are not allowed in strict mode")

    for _op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.PERSID, pickle.BINPERSID):
        dispatch[_op[0]] = _refuse
    del _op


def _shallow(args):
    """The arguments, and the items of argument tuples and lists (one level)."""
    if not isinstance(args, tuple):
        return [args]
    found = []
    for value in args:
        found.append(value)
        if isinstance(value, (tuple, list)):
            found.extend(value[:10_000])
    return found


def _describe(obj) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    cls = type(obj)
    return f"a {cls.__module__}.{cls.__qualname__}"


# --- BUILD states, at run time -------------------------------------------------------------------------

def build_problem(inst, state) -> str | None:
    """Why this BUILD could plant a dunder, change the object's class, or crash a native parser; None if fine."""
    family = _family(type(inst))
    if family in allowlist.STRICT_SEQUENCE_STATE:
        check = _SEQUENCE_CHECKS.get(family)
        return check(inst, state) if check is not None else None
    problem = _mapping_problem(state, _slot_names(type(inst)))
    if problem:
        return problem
    native_check = _NATIVE_CHECKS.get(family)
    return native_check(inst, state) if native_check is not None else None


def _mapping_problem(state, slots: frozenset[str]) -> str | None:
    if state is None:
        return None
    slot_state = None
    if type(state) is tuple and len(state) == 2:
        state, slot_state = state
    for part, what in ((state, "state"), (slot_state, "slot state")):
        if part is None or (what == "slot state" and part == {}):
            continue
        if type(part) is not dict:
            return f"its {what} is a {type(part).__qualname__}, not a plain dict"
        for key, value in part.items():
            if type(key) is not str:
                return f"its {what} has a {type(key).__qualname__} key (only plain strings)"
            if pickle_scan.is_dunder(key):
                rule = allowlist.DUNDER_STATE.get(key) or allowlist.STRICT_DUNDER_STATE.get(key)
                if rule is None or not _value_matches(value, rule[0]):
                    return f"its {what} sets {key} (a dunder name: it would shadow or replace the class's own)"
            elif what == "slot state" and key not in slots:
                return f"its slot state sets {key!r}, which is not one of the class's __slots__"
    return None


@functools.lru_cache(maxsize=None)
def _slot_names(cls: type) -> frozenset[str]:
    names = set()
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
    return frozenset(n for n in names if not pickle_scan.is_dunder(n))


def _value_matches(value, pattern: allowlist.Pattern) -> bool:
    kind = pattern.kind
    if kind == "dict":
        return type(value) is dict
    if kind == "empty-dict":
        return type(value) is dict and not value
    if kind == "str":
        return type(value) is str
    if kind == "none":
        return value is None
    if kind == "either":
        return any(_value_matches(value, p) for p in pattern.values)
    if kind == "made":
        return any(f"{type(value).__module__}.{type(value).__qualname__}" == t for t in pattern.values)
    if kind == "dict-of":
        return type(value) is dict and all(_value_matches(v, pattern.values[0]) for v in value.values())
    if kind == "global":
        return isinstance(value, type) or callable(value) and hasattr(value, "__qualname__")
    if kind == "object":
        return not isinstance(value, type) and not inspect.isroutine(value)
    return False


def _family(cls: type) -> str:
    """The allowlist name a BUILD rule is keyed by (numpy's dtype classes all count as numpy.dtype)."""
    import numpy

    if isinstance(cls, type) and issubclass(cls, numpy.dtype):
        return "numpy.dtype"
    return f"{cls.__module__}.{cls.__qualname__}"


def _ndarray_problem(inst, state) -> str | None:
    import numpy

    if not (type(state) is tuple and len(state) in (4, 5)):
        return "its state is not (version, shape, dtype, fortran, data)"
    shape, dtype, data = state[-4], state[-3], state[-1]
    if not (type(shape) is tuple and all(type(n) is int and n >= 0 for n in shape) and isinstance(dtype, numpy.dtype)):
        return "its shape or dtype is malformed"
    problem = _dtype_problem(dtype)
    if problem:
        return problem
    if dtype.hasobject and (dtype.names is not None or type(data) is not list or len(data) != math.prod(shape)):
        return (f"an object array of shape {shape} needs a list of exactly {math.prod(shape)} items "
                "(numpy reads past a shorter list)")
    if dtype.itemsize == 0 and math.prod(shape) > 0:
        return (f"an array of {math.prod(shape)} items of a zero-size dtype ({dtype}): no bytes back its shape, and "
                "code converting it allocates per item (numpy writes no such arrays)")
    return None


def _dtype_problem(dtype) -> str | None:
    """A dtype must be one numpy itself builds from its description: BUILD can set flags, fields and sizes
    that make numpy read object pointers from raw bytes."""
    import numpy

    try:
        if dtype.names is None:
            canonical = numpy.dtype(dtype.str) if dtype.subdtype is None else numpy.dtype(dtype.descr)
        else:
            canonical = numpy.dtype({"names": list(dtype.names),
                                     "formats": [dtype.fields[n][0] for n in dtype.names],
                                     "offsets": [dtype.fields[n][1] for n in dtype.names],
                                     "itemsize": dtype.itemsize})
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        return f"its dtype {dtype!r} is inconsistent ({exc})"
    if (canonical != dtype or canonical.flags != dtype.flags or canonical.itemsize != dtype.itemsize
            or canonical.hasobject != dtype.hasobject or canonical.alignment != dtype.alignment):
        return f"its dtype state is not one numpy would write (flags {dtype.flags}, itemsize {dtype.itemsize})"
    return None


def _dtype_state_problem(inst, state) -> str | None:
    """The shape numpy itself writes, checked before numpy's dtype.__setstate__ sees it: that parser trusts the
    tuple's length and types (a six-item state crashes the interpreter).  The result is checked again after
    BUILD against numpy's own reading of the dtype (``_dtype_problem``)."""
    import numpy

    if not (type(state) is tuple and len(state) in (8, 9)):
        return "its dtype state is not the 8- or 9-item tuple numpy writes"
    version, byteorder, subarray, names, fields, elsize, alignment, flags = state[:8]
    if version not in (3, 4) or byteorder not in ("<", ">", "|", "=") or not all(
            type(x) is int for x in (elsize, alignment, flags)):
        return "its dtype state has a bad version, byte order or size"
    if subarray is not None and not (type(subarray) is tuple and len(subarray) == 2
                                     and isinstance(subarray[0], numpy.dtype) and type(subarray[1]) is tuple
                                     and all(type(n) is int and n >= 0 for n in subarray[1])):
        return "its dtype state has a malformed subarray"
    if (names is None) != (fields is None):
        return "its dtype state has names without fields or fields without names"
    if names is not None:
        if not (type(names) is tuple and type(fields) is dict and all(type(n) is str for n in names)
                and set(names) <= set(fields)):
            return "its dtype state's names and fields disagree"
        for value in fields.values():
            if not (type(value) is tuple and len(value) in (2, 3) and isinstance(value[0], numpy.dtype)
                    and type(value[1]) is int and value[1] >= 0):
                return "its dtype state has a malformed field"
    if len(state) == 9:
        metadata = state[8]
        if not (metadata is None or type(metadata) is dict or (
                type(metadata) is tuple and len(metadata) == 2 and (metadata[0] is None or type(metadata[0]) is dict)
                and type(metadata[1]) is tuple and len(metadata[1]) == 4 and type(metadata[1][0]) is bytes
                and all(type(x) is int for x in metadata[1][1:]))):
            return "its dtype state has malformed metadata"
    return None


_SEQUENCE_CHECKS = {"numpy.ndarray": _ndarray_problem, "numpy.dtype": _dtype_state_problem}


def _after_build(inst) -> str | None:
    """Checks that need the built object: a dtype against numpy's own reading of it; every other object through
    ``native.check_built`` (sklearn estimators against the value invariants sklearn's predict path assumes and
    their trees' widths; CatBoost models marked so that their predictions run in the sandbox)."""
    if _family(type(inst)) == "numpy.dtype":
        return _dtype_problem(inst)
    from . import native

    try:
        native.check_built(inst)
    except native.NativeStateError as exc:
        return str(exc)
    return None


def _native_check(check):
    """A BUILD-state check that hands the native part of the state to ``native`` before the library parses it."""
    def run(inst, state):
        from . import native

        try:
            check(native, inst, state)
        except native.NativeStateError as exc:
            return str(exc)
        return None

    return run


def _lightgbm_text(native, inst, state):
    text = state.get("_handle") if isinstance(state, dict) else None
    if not isinstance(text, str):
        raise native.NativeStateError("a LightGBM booster's state must hold its model text")
    native.check_lightgbm_model(text)


def _catboost_blob(native, inst, state):
    blob = state.get("__model") if isinstance(state, dict) else None
    if not isinstance(blob, bytes):
        raise native.NativeStateError("a CatBoost model's state must hold its model bytes")
    native.check_catboost_blob(blob)


# type -> check of the native state its __setstate__ hands to compiled code (native.py says what is checked)
_NATIVE_CHECKS = {
    "sklearn.tree._tree.Tree": _native_check(lambda native, inst, state: native.check_sklearn_tree(inst, state)),
    "lightgbm.basic.Booster": _native_check(_lightgbm_text),
    "catboost.core.CatBoostClassifier": _native_check(_catboost_blob),
    "catboost.core.CatBoostRegressor": _native_check(_catboost_blob),
}
