"""Strict mode: every pickle AutoGluon reads goes through ag_torchfix, and so do the other files it reads.

Outside strict mode AutoGluon's ``load_pkl.load`` is plain ``pickle.load``: predictor.pkl, learner.pkl,
trainer.pkl, every model.pkl and the files under utils/ can run code.  In strict mode
(``AG_TORCHFIX_STRICT=1``, ``with ag_torchfix.strict():`` or ``ag_torchfix.install(strict=True)``) a file is read
once, statically scanned (all disallowed globals named at once, nothing run), unpickled by
``strict_unpickler.StrictUnpickler``, and its object checked against what AutoGluon writes at that path
(``dispatch``).  XGBoost's model file is checked before XGBoost parses it (``native``), and AutoGluon's
version.txt / metadata.json are read without blocking on FIFOs or reading without bound.
The fastai internals keep going through the secure torch loader.  Trust lifts strict mode for trusted
predictors only, after the strict load was tried (``fallback``); never when torch forces weights-only
loading.  A missing or unreadable path raises AutoGluon's (the OS's) own error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
import pickle
import sys

from ..trust import fallback, rules as trust
from ..formats import files, pickle_scan
from ..core import patching, scopes
from ..policy import verdicts as policy
from .strict_unpickler import StrictUnpickler, profile
from ..core.layout import AUTOGLUON_LOAD_PKL_MODULE as TARGET_MODULE, AUTOGLUON_TEXT_MODULES, model_of, predictor_root
from ..core.settings import strict_env_enabled
from ..formats.text import MAX_TEXT, TextProblem, parse_text
from ..core.errors import DisallowedGlobalsError, SecureLoadError, UnreadableFileError

# strict mode on tightens, so a closed "on" entry keeps applying in copies of the context that outlive its block;
# a closed "off" entry counts nowhere (scopes.Stack)
_context = scopes.Stack("ag_torchfix_strict", sticky=bool)
_process_default = False


class strict(scopes.Manager):
    """Load AutoGluon's pickles in strict mode inside this ``with`` block (this thread / async task).

    ``strict(False)`` turns it off for a block even when the environment or install() turned it on.  One object
    may be entered by any number of threads and tasks at once: each exit ends exactly its own block.
    """

    _stack = _context

    def __init__(self, enabled: bool = True):
        super().__init__()
        self._value = bool(enabled)


def is_active() -> bool:
    """Whether AutoGluon's pickles are loaded strictly here and now."""
    local = _context.innermost()
    if local is not None:
        return local
    return _process_default or strict_env_enabled()


def set_process_default(enabled: bool) -> None:
    global _process_default
    _process_default = bool(enabled)


# --- loading one file ----------------------------------------------------------------------------------

def load_pickle(data: bytes, *, path: str, model: str | None = None, opener=None, expected: type | None = None):
    """Scan, then strictly unpickle, a pickle's bytes (``opener(raw)`` decompresses them when AutoGluon
    wrote them compressed), then check the object against what AutoGluon writes at ``path`` (``expected``: the
    class whose ``load`` AutoGluon will call for it, when the caller knows it: the scanner)."""
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
    from ..policy import dispatch

    try:
        problem = dispatch.check_file(obj, path, expected=expected)
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
    """AutoGluon's load_pkl.load with pickle.load replaced by the strict loader.  The file's bytes are read (or
    downloaded) once: the scan, the strict unpickling, the trust decision and a trusted fallback's full pickle all
    see the same bytes; nothing opens or downloads the path again after trust was decided."""

    arguments = bound.arguments
    path = os.fspath(arguments["path"])
    extra = dict(arguments.get("kwargs", {}))
    model = _model_of(path)
    where = {"path": path, "model": model, "forced": trust.platform_forces_weights_only()}
    opener = identity = None
    held = contextlib.ExitStack()  # a local file stays open until trust is decided: its inode cannot be reused
    remote = remote_kind(path, module)
    if remote == "s3":
        import boto3

        bucket, prefix = module.s3_utils.s3_path_to_bucket_prefix(s3_path=path)
        raw = boto3.resource("s3").Bucket(bucket).Object(prefix).get()["Body"].read()
    elif remote == "url":
        if not (arguments.get("trust_remote") or getattr(module, "_url_pickle_allowed", lambda: False)()):
            return original(*bound.args, **bound.kwargs)  # AutoGluon refuses remote pickles itself
        err = SecureLoadError("strict mode does not load pickles from URLs", **where)
        fallback.open_door(err, path, lambda limit: b"", what="strict load", stacklevel=4)  # raises unless trusted
        import requests

        # as AutoGluon fetches it, once, after trust in the URL was decided; a redirect leaves the URL judged
        response = requests.get(path, allow_redirects=False)
        if response.is_redirect:
            raise SecureLoadError(f"the trusted URL redirects elsewhere ({response.status_code}); strict mode loads "
                                  "a trusted URL only from the URL that was judged", **where)
        response.raise_for_status()
        return pickle.loads(response.content)
    else:  # a local file, whatever its name looks like: AutoGluon opens it with open()
        compression_fn = extra.get("compression_fn")
        compression_map = module.compression_utils.get_compression_map()
        if compression_fn not in compression_map:
            return original(*bound.args, **bound.kwargs)  # AutoGluon's own error for bad arguments
        path = module.compression_utils.get_validated_path(path, compression_fn=compression_fn)
        where["path"] = path
        _refuse_linked_directory(path, where)
        if compression_fn is not None:
            open_compressed = compression_map[compression_fn]["open"]
            kwargs = extra.get("compression_fn_kwargs") or {}
            opener = functools.partial(open_compressed, mode="rb", **kwargs)
        fh = held.enter_context(files.open_for_load(path, **where))  # OSError (missing...) is AutoGluon's own
        try:
            raw = fh.read()
            identity = files.identity(fh)
        except BaseException:
            held.close()
            raise
    with held:
        try:
            return load_pickle(raw, path=path, model=model, opener=opener)
        except SecureLoadError as err:
            door = fallback.open_door(err, path, lambda limit: raw[:limit], what="strict load", stacklevel=5,
                                      identity=identity)
    # the bytes trust was decided on, never the path again (a re-pointed link, a re-uploaded S3 object)
    data = door.data if door.data is not None else raw
    with (opener(io.BytesIO(data)) if opener is not None else io.BytesIO(data)) as fh:
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
    _refuse_linked_directory(path, {"path": path, "model": model, "forced": trust.platform_forces_weights_only()})
    with files.open_for_load(path, path=path, model=model) as fh:  # open until trust is decided (inode reuse)
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

TEXT_MODULES = AUTOGLUON_TEXT_MODULES
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
        if not is_active() or remote_kind(text_path):
            return original(path, *args, **kwargs)
        where = {"path": text_path, "model": None, "forced": trust.platform_forces_weights_only()}
        with files.open_for_load(text_path, **where) as fh:  # a missing file: the OS's own FileNotFoundError
            data = fh.read(MAX_TEXT + 1)
        try:
            return parse_text(data, text_path, as_json=parse_json)
        except TextProblem as exc:
            if exc.content:
                raise DisallowedGlobalsError([], [str(exc)], **where) from None
            raise UnreadableFileError(f"it is {exc}", **where) from None

    module.load = patching.wrap(original, load)


def remove_text() -> None:
    for name in TEXT_MODULES:
        module = sys.modules.get(name)
        if module is not None and patching.is_patched(module.load):
            module.load = module.load.__wrapped__


def remote_kind(path: str, module=None) -> str | None:
    """Where AutoGluon's loader reads ``path`` remotely (``trust.remote_kind``: one decision for the loader, the
    text readers and trust); an AutoGluon older than 1.6 has no web-URL branch and opens such a path locally."""
    kind = trust.remote_kind(path)
    if kind == "url":
        module = module if module is not None else sys.modules.get(TARGET_MODULE)
        if module is not None and not hasattr(module, "_is_web_url"):
            return None
    return kind


def _refuse_linked_directory(path: str, where: dict) -> None:
    """A directory inside the predictor that is a symlink: AutoGluon would read another tree through it, which
    ``ag-torchfix scan`` does not follow (it reports it unreadable); strict mode refuses it the same way."""
    root, rel = predictor_root(path)
    if root is None:
        return
    for i in range(1, len(rel)):
        directory = os.path.join(root, *rel[:i])
        if os.path.islink(directory):
            raise UnreadableFileError(f"{os.path.join(*rel[:i])} is a symlinked directory inside the predictor "
                                      "(genuine predictors have none; scan does not follow it)", **where)


def _model_of(path: str) -> str | None:
    if remote_kind(path):
        return None
    return model_of(path)
