"""ag_torchfix: load AutoGluon's fastai models securely on modern PyTorch.

``import ag_torchfix`` activates the package: AutoGluon's fastai model loader reads
``model-internals.pkl`` with ``torch.load(weights_only=True)`` under a curated, per-load allowlist,
and fastai's own checkpoint reloads get the few globals they need.  Strict mode (``strict``,
AG_TORCHFIX_STRICT=1) loads every other pickle of a predictor through a restricted unpickler too.  Importing costs a few
milliseconds and imports none of torch, fastai or AutoGluon; the patches apply when those are
imported.  Full-pickle loading happens only for files you trust (see ``trusted``).
"""

import sys as _sys

from . import _moved
from .core.versions import PACKAGE_VERSION as __version__  # noqa: F401
from .integration.activation import install, status, uninstall

# Everything else loads on first use, so that the import stays a few milliseconds.
_LAZY = {
    "trusted": "trust.rules",
    "strict": "load.strict_mode",
    "load_learner": "load.secure_load",
    "SecureLoadError": "core.errors",
    "DisallowedGlobalsError": "core.errors",
    "UnreadableFileError": "core.errors",
    "UnsupportedTorchError": "core.errors",
    "LockMismatchError": "core.errors",
    "NativeSandboxError": "core.errors",
    "AgTorchfixWarning": "core.errors",
    "TrustedFallbackWarning": "core.errors",
    "ConfigurationWarning": "core.errors",
    "VersionWarning": "core.errors",
}

__all__ = ["install", "uninstall", "status", *_LAZY]
_moved.install()  # the 0.2 module paths (ag_torchfix.trust, .errors, .scanner, ...) keep working


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ag_torchfix' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


# the start-up hook (plugin/_ag_torchfix_autoload.py) imports this package when it activates it
install(how="plugin" if getattr(_sys.modules.get("_ag_torchfix_autoload"), "activating", False) else "import")
