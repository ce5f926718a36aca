"""Typed refusals and warnings.  Every refusal is a ``pickle.UnpicklingError``, so code that already
handles failed unpickling handles these too, and each says how to opt in to trusting the file."""

from __future__ import annotations

import os
from _pickle import UnpicklingError  # the C module: same class as pickle.UnpicklingError, cheaper import

TRUST_HINT = (
    "If you trust this predictor, lock it where you trust it (`ag-torchfix lock {path}`) and load it with "
    "AG_TORCHFIX_TRUST=sha256:<the lock's digest>, or load it inside `with ag_torchfix.trusted({path!r}):`; "
    "a trusted file that fails the secure load is loaded with full pickle."
)
FORCED_HINT = (
    "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set: the platform setting wins, so trusting the file cannot "
    "enable full-pickle loading here."
)


class SecureLoadError(UnpicklingError):
    """A file was not loaded securely.  Nothing from it ran."""

    def __init__(self, reason: str, *, path: str | None = None, model: str | None = None,
                 forced: bool = False, hint: bool = True):
        self.reason = reason
        self.path = path
        self.model = model
        self.forced = forced
        where = f"{path}" + (f" (model {model!r})" if model else "") if path else "the file"
        message = f"ag_torchfix refused to load {where}: {reason}"
        if hint:
            message += "\n" + (FORCED_HINT if forced else TRUST_HINT.format(path=_trust_target(path)))
        super().__init__(message)

    def __reduce__(self):  # keep the error picklable across processes (Ray, multiprocessing)
        return (_rebuild_error, (type(self), self.args[0], self.__dict__))


def _rebuild_error(cls, message, state):
    err = Exception.__new__(cls)
    err.args = (message,)
    err.__dict__.update(state)
    return err


def refusal_summary(err: SecureLoadError) -> str:
    """The globals and constructs that caused a refusal (or its reason), for fallback warnings."""
    return ", ".join(getattr(err, "globals", []) + getattr(err, "constructs", [])) or err.reason


class DisallowedGlobalsError(SecureLoadError):
    """The file references globals outside the allowlist or uses constructs the loader refuses."""

    def __init__(self, globals_: list[str], constructs: list[str], **kwargs):
        self.globals = sorted(globals_)
        self.constructs = list(constructs)
        parts = []
        if self.globals:
            noun = "global" if len(self.globals) == 1 else "globals"
            parts.append(f"it references {len(self.globals)} {noun} outside the allowlist: " + ", ".join(self.globals))
        if self.constructs:
            parts.append("it uses constructs the secure loader refuses: " + "; ".join(self.constructs))
        super().__init__("; ".join(parts) + ". Nothing from the file was run.", **kwargs)


class UnreadableFileError(SecureLoadError):
    """Empty, truncated, corrupt, not a torch zip archive, or in torch's legacy format."""


class LockMismatchError(SecureLoadError):
    """A file trusted through a lock does not hold the bytes the lock recorded."""

    def __init__(self, relative: str, expected: str, actual: str, **kwargs):
        self.relative, self.expected, self.actual = relative, expected, actual
        super().__init__(f"its bytes do not match the trusted lock ({relative}: expected sha256:{expected}, "
                         f"got sha256:{actual}), so it is not trusted. Nothing from the file was run.",
                         hint=False, **kwargs)


class UnsupportedTorchError(SecureLoadError):
    """The installed torch lacks what the secure loader needs; only trusted files load."""


class AgTorchfixWarning(UserWarning):
    """Base class of the package's warnings."""


class TrustedFallbackWarning(AgTorchfixWarning):
    """A trusted file failed the secure load and was loaded with full pickle."""


class ConfigurationWarning(AgTorchfixWarning):
    """An environment setting could not be understood; the safe reading was used."""


class VersionWarning(AgTorchfixWarning):
    """A library version the package was not built for; behaviour may differ."""


def _trust_target(path: str | None) -> str:
    if not path:
        return "/path/to/predictor"
    # the predictor directory: .../<predictor>/models/<model>/[<child>/]model-internals.pkl
    parts = os.path.normpath(path).split(os.sep)
    if "models" in parts:
        return os.sep.join(parts[: len(parts) - 1 - parts[::-1].index("models")]) or path
    return os.path.dirname(path) or path


class NativeSandboxError(SecureLoadError):
    """Strict mode runs the predictions of a native model it cannot fully validate (a CatBoost model from an
    untrusted file) in a sandbox process, and that process crashed, hung, exhausted its limits or returned something
    other than the prediction array.  The interpreter itself was never at risk."""

    def __init__(self, reason: str, *, model: str | None = None):
        self.reason = reason
        self.path = None
        self.model = model
        self.forced = False
        UnpicklingError.__init__(self, f"ag_torchfix stopped a sandboxed {model or 'native'} prediction: {reason}")


# Users see, match and may pickle these as ``ag_torchfix.errors.<name>``, their path before the layered layout (still
# importable: ``ag_torchfix._moved``), so that is the name they keep.
for _cls in (SecureLoadError, DisallowedGlobalsError, UnreadableFileError, LockMismatchError, UnsupportedTorchError,
             AgTorchfixWarning, TrustedFallbackWarning, ConfigurationWarning, VersionWarning, NativeSandboxError):
    _cls.__module__ = "ag_torchfix.errors"
del _cls
