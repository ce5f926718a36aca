"""Strict mode: every pickle AutoGluon reads goes through an allowlist-restricted unpickler.

Outside strict mode AutoGluon's ``load_pkl.load`` is plain ``pickle.load``: predictor.pkl, learner.pkl,
trainer.pkl, every model.pkl and the files under utils/ can run code.  In strict mode
(``AG_TORCHFIX_STRICT=1``, ``with ag_torchfix.strict():`` or ``ag_torchfix.install(strict=True)``)
they are read statically first (all disallowed globals named at once, nothing run) and then
unpickled by ``StrictUnpickler``, which, like torch's weights-only unpickler:
- resolves only allowlisted names (``allowlist.STRICT``) and the strict shims;
- calls (REDUCE) only CONSTRUCT/CALL entries and shims, constructs (NEWOBJ) only CONSTRUCT classes;
- BUILDs only instances of CONSTRUCT classes (class objects included in the refusal), looking
  ``__setstate__`` up on the type so an instance cannot smuggle in its own; a state may not plant a
  dunder name (``allowlist.DUNDER_STATE``) and a slot state may only set the class's real
  ``__slots__``, so BUILD can never change an object's ``__class__``; numpy dtype and array states
  are checked (forged dtype flags and short object lists crash numpy), and native model state is
  validated before the native library parses it (``native``);
- sets items only on dicts, OrderedDicts and shimmed defaultdicts, appends only to lists and sets;
- refuses INST/OBJ, extension codes and persistent ids.
After unpickling, each file's object is checked against what AutoGluon itself writes there
(``dispatch``): its kind, and every class-valued attribute AutoGluon later dispatches on.
The fastai internals keep going through the secure torch loader.  Trust lifts strict mode for
trusted predictors only, after the strict load was tried (``fallback``); never when torch forces
weights-only loading.  A missing or unreadable path raises AutoGluon's (the OS's) own error.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import inspect
import io
import math
import os
import pickle
import struct
import sys

from . import allowlist, fallback, files, pickle_scan, policy, shims, trust
from . import patching
from .activation import AUTOGLUON_LOAD_PKL_MODULE as TARGET_MODULE, strict_env_enabled
from .errors import DisallowedGlobalsError, SecureLoadError, UnreadableFileError

_context: contextvars.ContextVar[bool | None] = contextvars.ContextVar("ag_torchfix_strict", default=None)
_process_default = False


class strict:
    """Load AutoGluon's pickles in strict mode inside this ``with`` block (this thread / async task).

    ``strict(False)`` turns it off for a block even when the environment or install() turned it on.
    """

    def __init__(self, enabled: bool = True):
        self._enabled = bool(enabled)
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> None:
        self._tokens.append(_context.set(self._enabled))

    def __exit__(self, *exc_info) -> None:
        _context.reset(self._tokens.pop())


def is_active() -> bool:
    """Whether AutoGluon's pickles are loaded strictly here and now."""
    local = _context.get()
    if local is not None:
        return local
    return _process_default or strict_env_enabled()


def set_process_default(enabled: bool) -> None:
    global _process_default
    _process_default = bool(enabled)


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
        name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
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


_SHIMS = {
    "collections.defaultdict": _strict_defaultdict,
    "pandas.core.indexes.base._new_Index": shims.pickled_new_index,
    "functools.partial": _strict_partial,
    "torch.storage._load_from_bytes": _strict_load_from_bytes,
}
assert _SHIMS.keys() == allowlist.STRICT_SHIMS.keys()
_objects = _Objects()
_SETITEM_TYPES = (dict, collections.OrderedDict, collections.Counter)


# --- the unpickler -----------------------------------------------------------------------------------

class StrictUnpickler(pickle._Unpickler):
    """pickle's own (Python) unpickler with every code-reaching opcode checked against the allowlist."""

    dispatch = dict(pickle._Unpickler.dispatch)

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
        super().load_reduce()
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        self._constructible(self.stack[-2])
        self._arguments(self.stack[-2], self.stack[-1], "NEWOBJ")
        super().load_newobj()
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        self._constructible(self.stack[-3])
        self._arguments(self.stack[-3], (self.stack[-2], tuple(self.stack[-1].values()) if isinstance(
            self.stack[-1], dict) else self.stack[-1]), "NEWOBJ_EX")
        super().load_newobj_ex()

    def _arguments(self, func, args, opname: str) -> None:
        """No class or function among the arguments unless the callee is known to take exactly that one, and no
        size the file chooses where genuine pickles pass a fixed one."""
        name = _objects.name_of(func)
        allowed = allowlist.STRICT_CALLABLE_ARGS.get(name, ())
        for value in _shallow(args):
            if not _is_code(value):
                continue
            use = _objects.use_of(value)
            if not any(value is _objects.resolved(token) if not token.startswith("<") else
                       use == token.strip("<>") for token in allowed):
                raise pickle.UnpicklingError(f"{opname} of {name or _describe(func)} with {_describe(value)} as an "
                                             "argument: it could call it")
        if name in allowlist.STRICT_EMPTY_SHAPE and not (isinstance(args, tuple) and len(args) == 3
                                                         and args[1] == (0,)):
            raise pickle.UnpicklingError(f"{name} with a shape genuine pickles never pass (numpy would allocate it)")
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _constructible(self, cls) -> None:
        if _objects.use_of(cls) != allowlist.CONSTRUCT:
            raise pickle.UnpicklingError(f"NEWOBJ of {_describe(cls)}, which is not allowlisted to be constructed")

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        cls = type(inst)
        if cls is functools.partial:  # made by the partial shim; its state names the function again
            if not (isinstance(state, tuple) and len(state) == 4):
                raise pickle.UnpicklingError("malformed functools.partial state")
            _check_partial_func(state[0])
        elif _objects.use_of(cls) != allowlist.CONSTRUCT:
            raise pickle.UnpicklingError(f"BUILD on {_describe(inst)}: its type is not allowlisted")
        else:
            problem = build_problem(inst, state)
            if problem:
                raise pickle.UnpicklingError(f"BUILD of {_describe(inst)}: {problem}")
        setstate = getattr(cls, "__setstate__", None)  # from the type: an instance cannot bring its own
        if setstate is not None and setstate is not getattr(object, "__setstate__", None):
            setstate(inst, state)
            problem = _after_build(inst)
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
    dispatch[pickle.BUILD[0]] = load_build

    def _check_setitem_target(self, target) -> None:
        if type(target) in _SETITEM_TYPES:
            return
        if type(target) is collections.defaultdict and any(target.default_factory is f for f in _factories()):
            return
        raise pickle.UnpicklingError(f"SETITEM on {_describe(target)} is not allowed")

    def load_setitem(self):
        self._check_setitem_target(self.stack[-3])
        super().load_setitem()
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        self._check_setitem_target(self.metastack[-1][-1])
        super().load_setitems()
    dispatch[pickle.SETITEMS[0]] = load_setitems

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


def _is_code(value) -> bool:
    """A class or something callable that pickle can name: what a callee could call."""
    return isinstance(value, type) or inspect.isroutine(value) or isinstance(value, functools.partial)


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
    return None  # checked after BUILD (_AFTER_BUILD): numpy's own parser is the reference


_SEQUENCE_CHECKS = {"numpy.ndarray": _ndarray_problem, "numpy.dtype": _dtype_state_problem}


def _after_build(inst) -> str | None:
    """Checks that need the built object: a dtype against numpy's own reading of it; a tree estimator against
    its tree (sklearn checks input width against the estimator, then trusts the tree's feature count)."""
    if _family(type(inst)) == "numpy.dtype":
        return _dtype_problem(inst)
    if "tree_" in getattr(inst, "__dict__", {}):
        from . import native

        try:
            native.check_sklearn_estimator(inst)
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


# --- loading one file ----------------------------------------------------------------------------------

def load_pickle(data: bytes, *, path: str, model: str | None = None, opener=None):
    """Scan, then strictly unpickle, a pickle's bytes (``opener(raw)`` decompresses them when AutoGluon
    wrote them compressed), then check the object against what AutoGluon writes at ``path``."""
    where = {"path": path, "model": model, "forced": trust.platform_forces_weights_only()}
    stream = (lambda: opener(io.BytesIO(data))) if opener is not None else (lambda: io.BytesIO(data))
    try:
        with stream() as fh:
            scan = pickle_scan.scan(fh, limits=profile().limits)
    except (OSError, EOFError, ValueError) as exc:  # a compressed stream that does not decompress
        raise UnreadableFileError(f"it cannot be decompressed ({type(exc).__name__}: {exc})", **where) from exc
    verdict = policy.judge(scan, profile())
    if any(p.kind == "out-of-band-buffer" for p in scan.problems):
        raise UnreadableFileError("it uses protocol 5 out-of-band buffers that are not in the file", **where)
    if verdict.error is not None and not verdict.dangerous:
        raise UnreadableFileError(f"it is not a readable pickle ({verdict.error})", **where)
    if not verdict.ok:
        constructs = verdict.constructs + ([f"unreadable past a point: {verdict.error}"] if verdict.error else [])
        raise DisallowedGlobalsError(verdict.disallowed_labels(), constructs, **where)
    try:
        with stream() as fh:
            obj = StrictUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise DisallowedGlobalsError([], [f"the strict unpickler refused it: {exc}"], **where) from exc
    except Exception as exc:  # TypeError, ValueError, RecursionError, MemoryError ... from crafted state
        raise SecureLoadError(f"rebuilding it under the strict allowlist failed ({type(exc).__name__}: "
                              f"{str(exc)[:300]})", **where) from exc
    from . import dispatch

    try:
        problem = dispatch.check_file(obj, path)
    except Exception as exc:  # a check that cannot even compare the object's values: refuse, typed
        problem = f"its object cannot be checked against what AutoGluon writes there ({type(exc).__name__}: {exc})"
    if problem:
        raise DisallowedGlobalsError([], [problem], **where)
    return obj


# --- AutoGluon's load_pkl.load, strict when strict mode is on -------------------------------------------

def apply(module) -> None:
    """Wrap ``autogluon.common.loaders.load_pkl.load`` (idempotent).  The wrapper keeps the original's
    name, module, qualified name, docstring and signature, so it pickles by reference like the original."""
    if patching.is_patched(module.load):
        return
    original = module.load
    signature = inspect.signature(original)

    def load(*args, **kwargs):
        if not is_active():
            return original(*args, **kwargs)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)  # AutoGluon's own error for a bad call
        return _strict_load_pkl(module, original, bound)

    module.load = patching.wrap(original, load)


def remove() -> None:
    module = sys.modules.get(TARGET_MODULE)
    if module is not None and patching.is_patched(module.load):
        module.load = module.load.__wrapped__


def is_applied() -> bool:
    module = sys.modules.get(TARGET_MODULE)
    return module is not None and patching.is_patched(module.load)


def _strict_load_pkl(module, original, bound: inspect.BoundArguments):
    """AutoGluon's load_pkl.load with pickle.load replaced by the strict loader.  The file's bytes are read
    once: the scan, the strict unpickling and a lock's hash all see the same bytes."""

    arguments = bound.arguments
    path = os.fspath(arguments["path"])
    extra = dict(arguments.get("kwargs", {}))
    model = _model_of(path)
    where = {"path": path, "model": model, "forced": trust.platform_forces_weights_only()}
    opener = identity = None
    if module.s3_utils.is_s3_url(path):
        import boto3

        bucket, prefix = module.s3_utils.s3_path_to_bucket_prefix(s3_path=path)
        raw = boto3.resource("s3").Bucket(bucket).Object(prefix).get()["Body"].read()
    elif "://" in path or getattr(module, "_is_web_url", lambda path: False)(path):
        if not (arguments.get("trust_remote") or getattr(module, "_url_pickle_allowed", lambda: False)()):
            return original(*bound.args, **bound.kwargs)  # AutoGluon refuses remote pickles itself
        raw = None
    else:
        compression_fn = extra.get("compression_fn")
        compression_map = module.compression_utils.get_compression_map()
        if compression_fn not in compression_map:
            return original(*bound.args, **bound.kwargs)  # AutoGluon's own error for bad arguments
        path = module.compression_utils.get_validated_path(path, compression_fn=compression_fn)
        where["path"] = path
        if compression_fn is not None:
            open_compressed = compression_map[compression_fn]["open"]
            kwargs = extra.get("compression_fn_kwargs") or {}
            opener = functools.partial(open_compressed, mode="rb", **kwargs)
        if files.is_irregular(path):
            raise UnreadableFileError("it is not a regular file (a FIFO, device or directory)", **where)
        with files.open_regular(path) as fh:  # OSError (missing, unreadable) is AutoGluon's own
            raw = fh.read()
            identity = files.identity(fh)
    try:
        if raw is None:
            raise SecureLoadError("strict mode does not load pickles from URLs", **where)
        return load_pickle(raw, path=path, model=model, opener=opener)
    except SecureLoadError as err:
        door = fallback.open_door(err, path, lambda limit: (raw or b"")[:limit], what="strict load", stacklevel=5,
                                  identity=identity)
        if door.data is None:
            return original(*bound.args, **bound.kwargs)
        with (opener(io.BytesIO(door.data)) if opener is not None else io.BytesIO(door.data)) as fh:
            return pickle.load(fh)


# --- XGBoost's own model file, read outside load_pkl.load ---------------------------------------------------

XGBOOST_MODULE = "autogluon.tabular.models.xgboost.xgboost_model"
XGBOOST_FILE = "xgb.ubj"
_xgboost_originals: dict[type, object] = {}


def apply_xgboost(module) -> None:
    """Make ``XGBoostModel.load`` read ``xgb.ubj`` through ``native.check_xgboost_model`` in strict mode: the
    bytes XGBoost parses are the bytes that were checked (and, for lock trust, hashed)."""
    def make(original):
        def load(cls, path: str, reset_paths=True, verbose=True):
            if not is_active():
                return original(cls, path, reset_paths=reset_paths, verbose=verbose)
            model = super(module.XGBoostModel, cls).load(path=path, reset_paths=reset_paths, verbose=verbose)
            if model._xgb_model_type is not None:
                model.model = model._xgb_model_type()
                model.model.load_model(bytearray(_checked_xgboost_bytes(os.path.join(path, XGBOOST_FILE))))
                model._xgb_model_type = None
            return model
        return load

    patching.replace_classmethod(module.XGBoostModel, "load", make, _xgboost_originals)


def remove_xgboost() -> None:
    patching.restore_classmethod("load", _xgboost_originals)


def _checked_xgboost_bytes(path: str) -> bytes:
    from . import native

    model = _model_of(path)
    if files.is_irregular(path):
        raise UnreadableFileError("it is not a regular file (a FIFO, device or directory)", path=path, model=model)
    with files.open_regular(path) as fh:
        raw = fh.read()
        identity = files.identity(fh)
    try:
        native.check_xgboost_model(raw)
        return raw
    except native.NativeStateError as exc:
        err = DisallowedGlobalsError([], [f"XGBoost's model file fails its structural check: {exc}"], path=path,
                                     model=model, forced=trust.platform_forces_weights_only())
    door = fallback.open_door(err, path, lambda limit: raw[:limit], what="strict load", stacklevel=4,
                              identity=identity)
    return door.data if door.data is not None else raw


# --- the text files AutoGluon reads beside its pickles (version.txt, metadata.json) ------------------------------

TEXT_MODULES = ("autogluon.common.loaders.load_str", "autogluon.common.loaders.load_json")
MAX_TEXT = 16 << 20
# what TabularPredictor.load reads from metadata.json (a missing key is a KeyError in AutoGluon's own check)
METADATA_KEYS = {"version": str, "py_version": str, "system": str}


def apply_text(module) -> None:
    """In strict mode, AutoGluon's load_str / load_json read local files as AutoGluon does, but never block on a
    FIFO, never read more than MAX_TEXT bytes (a link to /dev/zero), and a metadata.json AutoGluon cannot use is
    a typed refusal, not a KeyError later."""
    original = module.load
    if patching.is_patched(original):
        return
    parse_json = module.__name__.endswith("load_json")

    def load(path, *args, **kwargs):
        text_path = os.fspath(path)
        if not is_active() or trust.is_url(text_path) or "://" in text_path:
            return original(path, *args, **kwargs)
        where = {"path": text_path, "model": None, "forced": trust.platform_forces_weights_only()}
        if files.is_irregular(text_path):
            raise UnreadableFileError("it is not a regular file (a FIFO, device or directory)", **where)
        with files.open_regular(text_path) as fh:  # a missing file: the OS's own FileNotFoundError
            data = fh.read(MAX_TEXT + 1)
        if len(data) > MAX_TEXT:
            raise UnreadableFileError(f"it is larger than {MAX_TEXT} bytes (AutoGluon writes a few kilobytes)", **where)
        try:
            text = data.decode("utf-8")
            if not parse_json:
                return text
            import json

            value = json.loads(text)
        except ValueError as exc:
            raise UnreadableFileError(f"it is not the text AutoGluon writes ({type(exc).__name__}: {exc})",
                                      **where) from None
        if os.path.basename(text_path) == "metadata.json" and not (
                isinstance(value, dict) and all(isinstance(value.get(k), t) for k, t in METADATA_KEYS.items())):
            raise DisallowedGlobalsError([], ["metadata.json lacks the fields AutoGluon checks ("
                                              + ", ".join(METADATA_KEYS) + ")"], **where)
        return value

    module.load = patching.wrap(original, load)


def remove_text() -> None:
    for name in TEXT_MODULES:
        module = sys.modules.get(name)
        if module is not None and patching.is_patched(module.load):
            module.load = module.load.__wrapped__


def _model_of(path: str) -> str | None:
    if trust.is_url(path) or "://" in path:
        return None
    from . import scanner

    return scanner.model_of(path)
