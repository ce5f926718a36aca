"""ag_torchfix: load AutoGluon's fastai models securely on modern PyTorch.

``import ag_torchfix`` activates the package: AutoGluon's fastai model loader reads
``model-internals.pkl`` with ``torch.load(weights_only=True)`` under a curated, per-load allowlist,
and fastai's own checkpoint reloads get the few globals they need.  Strict mode (``strict``,
AG_TORCHFIX_STRICT=1) loads every other pickle of a predictor through a restricted unpickler too.  Importing costs a few
milliseconds and imports none of torch, fastai or AutoGluon; the patches apply when those are
imported.  Full-pickle loading happens only for files you trust (see ``trusted``).
"""

import sys as _sys

from .activation import install, status, uninstall

__version__ = "0.2.0"

# Everything else loads on first use, so that the import stays a few milliseconds.
_LAZY = {
    "trusted": "trust",
    "strict": "strict_mode",
    "load_learner": "secure_load",
    "SecureLoadError": "errors",
    "DisallowedGlobalsError": "errors",
    "UnreadableFileError": "errors",
    "UnsupportedTorchError": "errors",
    "LockMismatchError": "errors",
    "NativeSandboxError": "errors",
    "AgTorchfixWarning": "errors",
    "TrustedFallbackWarning": "errors",
    "ConfigurationWarning": "errors",
    "VersionWarning": "errors",
}

__all__ = ["install", "uninstall", "status", *_LAZY]


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
