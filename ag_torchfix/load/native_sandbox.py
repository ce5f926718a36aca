"""Strict mode's prediction sandbox for CatBoost models from untrusted files (issue 18).

``native.check_catboost_blob`` loads a CatBoost blob and predicts two rows with it in a sandbox before the
interpreter loads it; that proves the blob loads, not that every row is safe to predict: CatBoost's model format
(flatbuffers plus CTR tables) holds split indices, borders, leaf counts and CTR bucket indexes that CatBoost reads
without bounds checks for whatever features a row has.  Validating that whole format is a re-implementation of
CatBoost's loader; so instead a model that only the probe has seen stays *unvalidated*, and every prediction it
makes runs in a forked copy of this process:

- ``mark(model)``: strict mode's unpickler marks each CatBoost model it builds (``native.check_built``).  The mark
  is per instance (a weak reference by id: CatBoost models are unhashable) and survives ``copy.deepcopy`` /
  ``model.copy()``; models trained here or loaded outside strict mode are not marked and run as before.
- ``_CatBoostBase._base_predict`` (what ``predict``, ``predict_proba``, ``predict_log_proba`` and AutoGluon's
  ``CatBoostModel`` reach) and ``_base_virtual_ensembles_predict`` run a marked model in the sandbox: a fork of this
  process (``forking.fork_run``) that calls CatBoost's own method on its copy of the model and the Pool, with one
  thread (CatBoost's thread pool does not survive a fork; predictions do not depend on the thread count), a
  timeout, a CPU limit and an address-space limit, and sends back the array as raw bytes after a
  ``dtype|shape`` header: nothing from the child is unpickled.  A crash, a hang, an exhausted limit or anything
  but an array of the expected rows is a typed ``errors.NativeSandboxError``; CatBoost's own errors
  (``CatBoostError``: wrong columns, ...) are raised again as ``CatBoostError`` with the child's message.
- The other CatBoost methods that feed data to the model (staged prediction, leaf indexes, metric evaluation,
  feature and object importances) refuse a marked model with ``NativeSandboxError``; AutoGluon calls none of them
  on a loaded model.

The hooks are installed on import of ``catboost.core`` (``activation``), marked as the package's own
(``patching``), and removed by ``ag_torchfix.uninstall()``.  Where ``os.fork`` does not exist, a marked model's
prediction is a ``NativeSandboxError``.

Tunables: ``AG_TORCHFIX_SANDBOX_TIMEOUT`` (seconds, default 300) and ``AG_TORCHFIX_SANDBOX_MEMORY`` (MiB of
address space the child may add, default 4096).
"""

from __future__ import annotations

import _thread
import os
import re
import struct
import sys
import weakref

from . import forking
from ..core import patching

CATBOOST_MODULE = "catboost.core"
SANDBOXED = ("_base_predict", "_base_virtual_ensembles_predict")
REFUSED = ("_staged_predict_iterator", "_leaf_indexes_iterator", "_base_calc_leaf_indexes", "_base_eval_metrics",
           "_calc_fstr", "_calc_ostr")
MAX_RESULT = 1 << 30           # bytes of one prediction array
DEFAULT_TIMEOUT = 300.0
DEFAULT_MEMORY_MIB = 4096
_MAGIC_ARRAY, _MAGIC_ERROR = b"AGTFNDA1", b"AGTFERR1"
_DTYPE = re.compile(r"[<>|=][fiub][1248]|[<>|=]U[0-9]{1,6}")

_lock = _thread.RLock()
_marked: dict[int, weakref.ref] = {}
_originals: dict[str, object] = {}
_class = None   # the patched catboost.core._CatBoostBase


# --- the mark ---------------------------------------------------------------------------------------------

def mark(model) -> None:
    """Run every prediction of ``model`` in the sandbox (a CatBoost model built from an untrusted file)."""
    key = id(model)

    def forget(_ref, key=key):
        with _lock:
            if _marked.get(key) is _ref:
                del _marked[key]

    with _lock:
        _marked[key] = weakref.ref(model, forget)
    module = sys.modules.get(CATBOOST_MODULE)
    if module is not None and not is_applied():
        apply_catboost(module)   # the mark is useless without the hook (e.g. the package was uninstalled)


def is_marked(model) -> bool:
    ref = _marked.get(id(model))
    return ref is not None and ref() is model


# --- the hooks ----------------------------------------------------------------------------------------------

def apply_catboost(module) -> None:
    """Install the hooks on ``catboost.core._CatBoostBase`` (idempotent)."""
    global _class
    cls = getattr(module, "_CatBoostBase", None)
    if cls is None:
        return
    with _lock:
        if is_applied():
            return
        for name in SANDBOXED:
            original = cls.__dict__.get(name)
            if original is not None:
                _originals[name] = original
                setattr(cls, name, patching.wrap(original, _sandboxed(original, name)))
        for name in REFUSED:
            original = cls.__dict__.get(name)
            if original is not None:
                _originals[name] = original
                setattr(cls, name, patching.wrap(original, _refused(original, name)))
        original = cls.__dict__.get("__deepcopy__")
        if original is not None:
            _originals["__deepcopy__"] = original
            setattr(cls, "__deepcopy__", patching.wrap(original, _copying(original)))
        _class = cls


def remove_catboost() -> None:
    """Put back every original the hooks replaced (only where the package's replacement is still in place)."""
    global _class
    with _lock:
        cls = _class
        if cls is not None:
            for name, original in _originals.items():
                if patching.is_patched(cls.__dict__.get(name)):
                    setattr(cls, name, original)
        _originals.clear()
        _class = None


def is_applied() -> bool:
    cls = _class
    return cls is not None and patching.is_patched(cls.__dict__.get(SANDBOXED[0]))


def _sandboxed(original, name):
    def method(self, pool, *args, **kwargs):
        if not is_marked(self):
            return original(self, pool, *args, **kwargs)
        return predict_in_sandbox(original, self, pool, args, kwargs, what=name)
    return method


def _refused(original, name):
    def method(self, *args, **kwargs):
        if is_marked(self):
            from ..core.errors import NativeSandboxError

            raise NativeSandboxError(f"{name} is not available for a CatBoost model from an untrusted file (only its "
                                     "predictions run in the sandbox)", model="CatBoost")
        return original(self, *args, **kwargs)
    return method


def _copying(original):
    def __deepcopy__(self, memo):
        copy = original(self, memo)
        if is_marked(self):
            mark(copy)
        return copy
    return __deepcopy__


# --- one sandboxed call --------------------------------------------------------------------------------------

def _setting(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def _single_thread(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """thread_count=1, wherever the call passes it: fourth after the pool in both sandboxed methods,
    _base_predict(pool, prediction_type, ntree_start, ntree_end, thread_count, verbose, task_type) and
    _base_virtual_ensembles_predict(pool, prediction_type, ntree_end, virtual_ensembles_count, thread_count,
    verbose)."""
    args, kwargs = list(args), dict(kwargs)
    position = 3
    if "thread_count" in kwargs or len(args) <= position:
        kwargs["thread_count"] = 1
    else:
        args[position] = 1
    return tuple(args), kwargs


def _encode(result) -> bytes:
    import numpy as np

    if type(result) is not np.ndarray:
        raise TypeError(f"the prediction is a {type(result).__name__}, not a numpy array")
    as_object = result.dtype == object
    if as_object:  # class labels: strings only, sent as fixed-width unicode
        if not all(type(item) is str for item in result.flat):
            raise TypeError("the prediction holds objects other than strings")
        result = result.astype(str) if result.size else np.zeros(result.shape, dtype="<U1")
    result = np.ascontiguousarray(result)
    header = f"{result.dtype.str}|{','.join(map(str, result.shape))}|{int(as_object)}".encode("ascii")
    return _MAGIC_ARRAY + struct.pack("<I", len(header)) + header + result.tobytes()


def _decode(data: bytes, rows: int | None):
    """The array the child sent, or raise NativeSandboxError: the header must describe exactly the bytes that
    follow, with an allowed dtype, at most two dimensions and (when known) the Pool's rows."""
    import numpy as np

    from ..core.errors import NativeSandboxError

    def bad(why: str):
        raise NativeSandboxError(f"the sandbox returned {why}", model="CatBoost")

    if len(data) < 12 or data[:8] != _MAGIC_ARRAY:
        bad("no array")
    (size,) = struct.unpack("<I", data[8:12])
    if size > 200 or len(data) < 12 + size:
        bad("a malformed header")
    try:
        dtype_text, shape_text, obj = data[12:12 + size].decode("ascii").split("|")
        shape = tuple(int(n) for n in shape_text.split(",")) if shape_text else ()
    except (UnicodeDecodeError, ValueError):
        bad("a malformed header")
    if not _DTYPE.fullmatch(dtype_text) or obj not in ("0", "1") or len(shape) not in (1, 2) or min(shape) < 0:
        bad(f"an array of dtype {dtype_text[:12]!r} and shape {shape_text[:40]!r}")
    dtype = np.dtype(dtype_text)
    count = 1
    for n in shape:
        count *= n
    payload = data[12 + size:]
    if count * dtype.itemsize != len(payload) or len(payload) > MAX_RESULT:
        bad(f"{len(payload)} bytes for an array of shape {shape}")
    if rows is not None and shape[0] != rows:
        bad(f"{shape[0]} rows for a pool of {rows}")
    array = np.frombuffer(bytearray(payload), dtype=dtype).reshape(shape)
    return array.astype(object) if obj == "1" else array


def predict_in_sandbox(original, model, pool, args: tuple, kwargs: dict, *, what: str = "_base_predict"):
    """``original(model, pool, *args, **kwargs)`` in a forked sandbox; its array back as raw bytes."""
    from ..core.errors import NativeSandboxError

    if not hasattr(os, "fork"):
        raise NativeSandboxError("this platform cannot fork, and a CatBoost model from an untrusted file predicts "
                                 "only in a forked sandbox", model="CatBoost")
    try:
        rows = int(pool.num_row())
    except Exception:  # noqa: BLE001 - whatever CatBoost gets, it reports itself
        rows = None
    args, kwargs = _single_thread(args, kwargs)
    timeout = _setting("AG_TORCHFIX_SANDBOX_TIMEOUT", DEFAULT_TIMEOUT)
    memory = int(_setting("AG_TORCHFIX_SANDBOX_MEMORY", DEFAULT_MEMORY_MIB) * (1 << 20))

    def child(write_fd) -> int:
        try:
            from _catboost import CatBoostError
        except ImportError:  # pragma: no cover - catboost always has it
            CatBoostError = ()
        try:
            data = _encode(original(model, pool, *args, **kwargs))
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported as text, never pickled
            kind = ("catboost" if CatBoostError and isinstance(exc, CatBoostError) else
                    "MemoryError" if isinstance(exc, MemoryError) else type(exc).__qualname__)
            data = _MAGIC_ERROR + f"{kind}\n{str(exc)[:2000]}".encode("utf-8", "replace")
            code = 3
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
        return code

    status, value, output = forking.fork_run(child, timeout, memory=memory, max_output=MAX_RESULT + 4096)
    if status == "timeout":
        raise NativeSandboxError(f"CatBoost ran longer than {timeout:g}s predicting in the sandbox (a hang, or set "
                                 "AG_TORCHFIX_SANDBOX_TIMEOUT)", model="CatBoost")
    if status == "signal":
        raise NativeSandboxError(f"CatBoost crashed the sandbox with {forking.signal_name(value)} while predicting "
                                 f"{rows if rows is not None else 'some'} rows", model="CatBoost")
    if status in ("error", "too-large"):
        raise NativeSandboxError(output.decode("utf-8", "replace") or "the sandbox's output exceeded its limit",
                                 model="CatBoost")
    if value == 3 and output.startswith(_MAGIC_ERROR):
        kind, _, message = output[len(_MAGIC_ERROR):].decode("utf-8", "replace").partition("\n")
        if kind == "catboost":
            from catboost import CatBoostError

            raise CatBoostError(message)
        if kind == "MemoryError":
            raise NativeSandboxError(f"CatBoost ran out of the sandbox's memory: {message[:200]}", model="CatBoost")
        raise NativeSandboxError(f"the sandboxed prediction raised {kind}: {message[:300]}", model="CatBoost")
    if value != 0:
        raise NativeSandboxError(f"the sandbox exited with status {value}", model="CatBoost")
    return _decode(output, rows)
