"""Strict mode: every pickle AutoGluon reads goes through an allowlist-restricted unpickler.

Outside strict mode AutoGluon's ``load_pkl.load`` is plain ``pickle.load``: predictor.pkl, learner.pkl,
trainer.pkl, every model.pkl and the files under utils/ can run code.  In strict mode
(``AG_TORCHFIX_STRICT=1``, ``with ag_torchfix.strict():`` or ``ag_torchfix.install(strict=True)``)
they are read statically first (all disallowed globals named at once, nothing run) and then
unpickled by ``StrictUnpickler``, which, like torch's weights-only unpickler:
- resolves only allowlisted names (``allowlist.STRICT``) and the strict shims;
- calls (REDUCE) only CONSTRUCT/CALL entries and shims, constructs (NEWOBJ) only CONSTRUCT classes;
- BUILDs only instances of CONSTRUCT classes (class objects included in the refusal), looking
  ``__setstate__`` up on the type so an instance cannot smuggle in its own;
- sets items only on dicts, OrderedDicts and shimmed defaultdicts, appends only to lists and sets;
- refuses INST/OBJ, extension codes and persistent ids.
The fastai internals keep going through the secure torch loader.  Trust (context, env var, path
list) lifts strict mode for trusted predictors only, after the strict load was tried.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import io
import os
import pickle
import sys
import warnings

from . import allowlist, pickle_scan, policy, shims, trust
from .activation import AUTOGLUON_LOAD_PKL_MODULE as TARGET_MODULE, strict_env_enabled
from .errors import (
    DisallowedGlobalsError,
    SecureLoadError,
    TrustedFallbackWarning,
    UnreadableFileError,
    refusal_summary,
)

_context: contextvars.ContextVar[bool | None] = contextvars.ContextVar("ag_torchfix_strict", default=None)
_process_default = False
_original_load = None


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

@functools.lru_cache(maxsize=1)
def profile() -> policy.Profile:
    return policy.Profile("strict", {e.name: e for e in allowlist.STRICT}, frozenset(allowlist.STRICT_SHIMS),
                          torch_opcodes_only=False)


class _Objects:
    """Allowlisted names resolved on first use, and what each object may do, found by identity."""

    SHIM = "shim"

    def __init__(self):
        self.entries = profile().entries
        self._by_name: dict[str, object] = {}
        self._use_by_id: dict[int, str] = {}
        self._keep: list[object] = []  # keeps ids valid

    def _register(self, obj: object, use: str) -> object:
        self._use_by_id[id(obj)] = use
        self._keep.append(obj)
        return obj

    def by_name(self, name: str) -> object:
        obj = self._by_name.get(name)
        if obj is not None:
            return obj
        if name in _SHIMS:
            obj = self._register(_SHIMS[name], self.SHIM)
        else:
            entry = self.entries.get(name)
            if entry is None:
                raise pickle.UnpicklingError(f"global {name} is not allowlisted for strict mode")
            try:
                obj = self._register(shims.resolve(name), entry.use)
            except LookupError:
                raise pickle.UnpicklingError(f"allowlisted global {name} cannot be imported here") from None
        self._by_name[name] = obj
        return obj

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
    """torch.storage._load_from_bytes, weights-only: the bytes may only hold a storage."""
    import torch

    if type(data) is not bytes:
        raise pickle.UnpicklingError("torch storage bytes expected")
    storage = torch.load(io.BytesIO(data), weights_only=True)
    if not isinstance(storage, (torch.UntypedStorage, torch.storage.TypedStorage)):
        raise pickle.UnpicklingError(f"torch storage expected, got {type(storage).__qualname__}")
    return storage


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
        super().load_reduce()
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        self._constructible(self.stack[-2])
        super().load_newobj()
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        self._constructible(self.stack[-3])
        super().load_newobj_ex()
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
        setstate = getattr(cls, "__setstate__", None)  # from the type: an instance cannot bring its own
        if setstate is not None and setstate is not getattr(object, "__setstate__", None):
            setstate(inst, state)
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

    def _refuse(self):
        raise pickle.UnpicklingError("INST/OBJ, extension codes and persistent ids are not allowed in strict mode")

    for _op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.PERSID, pickle.BINPERSID):
        dispatch[_op[0]] = _refuse
    del _op


def _describe(obj) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    cls = type(obj)
    return f"a {cls.__module__}.{cls.__qualname__}"


# --- loading one file ----------------------------------------------------------------------------------

def load_pickle(opener, *, path: str, model: str | None = None):
    """Scan, then strictly unpickle, what ``opener()`` yields (a fresh binary stream each call)."""
    where = {"path": path, "model": model}
    try:
        with opener() as stream:
            scan = pickle_scan.scan(stream)
    except pickle_scan.ScanError as exc:
        raise UnreadableFileError(f"it is not a readable pickle ({exc})", **where) from exc
    except (OSError, EOFError, ValueError) as exc:
        raise UnreadableFileError(f"it cannot be read ({type(exc).__name__}: {exc})", **where) from exc
    verdict = policy.judge(scan, profile())
    if any(p.kind == "out-of-band-buffer" for p in scan.problems):
        raise UnreadableFileError("it uses protocol 5 out-of-band buffers that are not in the file", **where)
    if not verdict.ok:
        raise DisallowedGlobalsError(verdict.disallowed_labels(), verdict.constructs, **where)
    try:
        with opener() as stream:
            return StrictUnpickler(stream).load()
    except pickle.UnpicklingError as exc:
        raise DisallowedGlobalsError([], [f"the strict unpickler refused it: {exc}"], **where) from exc
    except Exception as exc:
        raise SecureLoadError(f"rebuilding it under the strict allowlist failed ({type(exc).__name__}: {exc})",
                              **where) from exc


# --- AutoGluon's load_pkl.load, strict when strict mode is on -------------------------------------------

def apply(module) -> None:
    """Wrap ``autogluon.common.loaders.load_pkl.load`` (idempotent)."""
    global _original_load
    if getattr(module.load, "__wrapped__", None) is not None and module.load.__module__ == __name__:
        return
    _original_load = module.load

    @functools.wraps(_original_load)
    def load(path, *args, **kwargs):
        if not is_active():
            return _original_load(path, *args, **kwargs)
        return _strict_load_pkl(module, path, *args, **kwargs)

    load.__module__ = __name__
    module.load = load


def remove() -> None:
    module = sys.modules.get(TARGET_MODULE)
    if module is not None and getattr(module.load, "__module__", None) == __name__:
        module.load = module.load.__wrapped__


def is_applied() -> bool:
    module = sys.modules.get(TARGET_MODULE)
    return module is not None and getattr(module.load, "__module__", None) == __name__


def _strict_load_pkl(module, path, format=None, verbose=True, *args, **kwargs):
    """AutoGluon's load_pkl.load with pickle.load replaced by the strict loader."""
    from . import scanner

    path = os.fspath(path)
    model = scanner.model_of(path) if "://" not in path else None
    try:
        if module.s3_utils.is_s3_url(path):
            import boto3

            bucket, prefix = module.s3_utils.s3_path_to_bucket_prefix(s3_path=path)
            data = boto3.resource("s3").Bucket(bucket).Object(prefix).get()["Body"].read()
            return load_pickle(lambda: io.BytesIO(data), path=path, model=model)
        if "://" in path:
            raise SecureLoadError("strict mode does not load pickles from URLs", path=path, model=model)
        compression_fn = kwargs.get("compression_fn")
        compression_fn_kwargs = kwargs.get("compression_fn_kwargs") or {}
        compression_map = module.compression_utils.get_compression_map()
        if compression_fn not in compression_map:
            return _original_load(path, format, verbose, *args, **kwargs)  # AutoGluon's own error for bad arguments
        validated = module.compression_utils.get_validated_path(path, compression_fn=compression_fn)
        opener = compression_map[compression_fn]["open"]
        return load_pickle(lambda: opener(validated, "rb", **compression_fn_kwargs), path=validated, model=model)
    except UnreadableFileError:
        raise
    except SecureLoadError as err:
        source = trust.trust_source(path)
        if source is None:
            raise
        warnings.warn(f"ag_torchfix: {path} is trusted ({source}) and failed the strict load ({refusal_summary(err)}); "
                      "loading it with full pickle.", TrustedFallbackWarning, stacklevel=3)
        return _original_load(path, format, verbose, *args, **kwargs)
