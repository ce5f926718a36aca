"""Trust policy: when, and only when, a file may fall back to full-pickle loading.

Trust comes from ``with ag_torchfix.trusted(...)`` (this thread / async context only) or from the
environment variable AG_TORCHFIX_TRUST, read at each load:
- ``1/true/yes/on`` (any case): every file is trusted;
- unset, empty, ``0/false/no/off``: nothing is trusted;
- absolute directories (or ``s3://`` prefixes) joined by ``os.pathsep``: files under them are trusted;
- anything else: nothing is trusted, and a ConfigurationWarning is issued once per value.
TORCH_FORCE_WEIGHTS_ONLY_LOAD always wins: when torch forces weights-only loading, trust never
enables full pickle.
"""

from __future__ import annotations

import contextvars
import os
import warnings
from .errors import ConfigurationWarning

ENV_TRUST = "AG_TORCHFIX_TRUST"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_ALL = "*"  # sentinel inside a trust scope: everything

# Each entry is a tuple of normalised path prefixes, or (_ALL,).  Nested scopes accumulate.
_scopes: contextvars.ContextVar[tuple[tuple[str, ...], ...]] = contextvars.ContextVar("ag_torchfix_trust", default=())
_warned_values: set[str] = set()


class trusted:
    """Trust files for loads made inside this ``with`` block (in this thread or async task).

    With no argument every file is trusted; otherwise only files under the given directories (or
    the given files themselves).  Trust only permits the full-pickle fallback after the secure load
    has failed; the secure load is always tried first.
    """

    def __init__(self, *paths: str | os.PathLike):
        self._scope = tuple(_normalise(p) for p in paths) if paths else (_ALL,)
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> None:
        self._tokens.append(_scopes.set(_scopes.get() + (self._scope,)))

    def __exit__(self, *exc_info) -> None:
        _scopes.reset(self._tokens.pop())


def trust_source(path: str | os.PathLike | None) -> str | None:
    """Why ``path`` is trusted (for messages), or None when it is not."""
    target = _normalise(path) if path is not None else None
    for scope in reversed(_scopes.get()):
        if scope == (_ALL,):
            return "ag_torchfix.trusted()"
        if target is not None and any(_under(target, prefix) for prefix in scope):
            return f"ag_torchfix.trusted({', '.join(scope)})"
    kind, prefixes = env_trust()
    if kind == "all":
        return f"{ENV_TRUST}={os.environ.get(ENV_TRUST)}"
    if kind == "paths" and target is not None:
        for prefix in prefixes:
            if _under(target, prefix):
                return f"{ENV_TRUST} ({prefix})"
    return None


def env_trust() -> tuple[str, tuple[str, ...]]:
    """Parse AG_TORCHFIX_TRUST: ("none"|"all"|"paths"|"invalid", prefixes)."""
    raw = os.environ.get(ENV_TRUST)
    if raw is None:
        return "none", ()
    value = raw.strip()
    if value.lower() in _TRUE:
        return "all", ()
    if value.lower() in _FALSE:
        return "none", ()
    entries = [e.strip() for e in value.split(os.pathsep) if e.strip()]
    if entries and all(_is_absolute(e) for e in entries):
        return "paths", tuple(_normalise(e) for e in entries)
    if raw not in _warned_values:
        _warned_values.add(raw)
        warnings.warn(
            f"{ENV_TRUST}={raw!r} is not understood, so nothing is trusted. Use 1/true/yes/on to trust every "
            f"file, 0/false/no/off for none, or absolute directories joined by {os.pathsep!r}.",
            ConfigurationWarning,
            stacklevel=3,
        )
    return "invalid", ()


def platform_forces_weights_only() -> bool:
    """True when torch itself forces weights-only loading (same parsing as torch.load)."""
    return os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true")


def describe() -> dict[str, object]:
    """The trust settings in force, for ``python -m ag_torchfix`` and ``doctor``."""
    kind, prefixes = env_trust()
    return {
        "env": os.environ.get(ENV_TRUST),
        "env_trusts": kind,
        "env_paths": list(prefixes),
        "context_scopes": [list(s) for s in _scopes.get()],
        "torch_force_weights_only": platform_forces_weights_only(),
    }


def _is_absolute(entry: str) -> bool:
    return "://" in entry or os.path.isabs(os.path.expanduser(entry))


def _normalise(path: str | os.PathLike) -> str:
    text = os.fspath(path)
    if "://" in text:
        return text.rstrip("/")
    # realpath: a symlink inside a trusted directory that points elsewhere is not trusted
    return os.path.realpath(os.path.expanduser(text))


def _under(target: str, prefix: str) -> bool:
    if "://" in prefix or "://" in target:
        return target == prefix or target.startswith(prefix + "/")
    return target == prefix or target.startswith(prefix.rstrip(os.sep) + os.sep)
