"""Trust policy: when, and only when, a file may fall back to full-pickle loading.

Trust never replaces the secure load: it only permits the full-pickle fallback after the secure (or
strict) load refused a file.  It comes from three places:

- ``with ag_torchfix.trusted(...)``: in this thread or async task, and only while the block is open
  (``scopes``: per context, a shared object closes exactly its own entry).  A copy of the context made
  inside the block (an asyncio task, ``contextvars.copy_context``) shares the block's entry, which is
  closed when the block exits: a closed entry trusts nothing.
- AG_TORCHFIX_TRUST, read at each load: ``1/true/yes/on`` (every file), unset/empty/``0/false/no/off``
  (nothing), or entries joined by ``os.pathsep``: absolute directories or files, ``s3://`` prefixes,
  and ``sha256:<64 hex>`` lock digests.  Anything else trusts nothing and warns once per value.
- Lock digests (``ag-torchfix lock``): a file is trusted when the predictor directory it belongs to
  holds an ``ag_torchfix.lock`` whose own SHA-256 is the trusted digest, the lock lists the file, and
  the bytes being loaded hash to the listed value (``fallback.open_door``: the caller hashes exactly the
  bytes it unpickles, so there is no gap between the check and the use).

Paths are compared after one normalisation (``normalise``): a path is a URL exactly where AutoGluon's own
loader reads it remotely (``remote_kind``: s3 prefixes, and http(s) with a host); every other path is made absolute and ``realpath``-resolved; a prefix matches whole components; a
local path never matches a URL prefix or the reverse.
TORCH_FORCE_WEIGHTS_ONLY_LOAD always wins: when torch forces weights-only loading, trust never
enables full pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass

from ..formats import files
from ..core import scopes
from ..core.errors import ConfigurationWarning

ENV_TRUST = "AG_TORCHFIX_TRUST"
LOCK_NAME = "ag_torchfix.lock"
LOCK_SCHEMA = "ag_torchfix.lock/1"
MAX_LOCK_BYTES = 16 << 20
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})\Z")


@dataclass(frozen=True)
class _Scope:
    """What one ``trusted()`` manager trusts (the value of its entries in ``_scopes``)."""

    everything: bool
    prefixes: tuple[str, ...]
    locks: tuple[str, ...]

    def describe(self) -> str:
        if self.everything:
            return "ag_torchfix.trusted()"
        parts = list(self.prefixes) + [f"lock=sha256:{d}" for d in self.locks]
        return f"ag_torchfix.trusted({', '.join(parts)})"


_scopes = scopes.Stack("ag_torchfix_trust")  # trust loosens: a closed entry counts nowhere
_warned_values: set[str] = set()


class trusted(scopes.Manager):
    """Trust files for loads made inside this ``with`` block (in this thread or async task).

    With no argument every file is trusted; otherwise only files under the given directories (or the
    given files), or files of a predictor locked by ``ag-torchfix lock`` whose lock digest is ``lock``
    (``"sha256:<hex>"``), while their bytes match the lock.  Trust only permits the full-pickle fallback
    after the secure load has failed; the secure load is always tried first.  One object may be entered by
    any number of threads and tasks at once: each exit ends exactly the trust its own ``with`` began.
    """

    _stack = _scopes

    def __init__(self, *paths: str | os.PathLike, lock: str | None = None):
        super().__init__()
        locks = ()
        if lock is not None:
            match = _DIGEST.match(str(lock).strip().lower())
            if not match:
                raise ValueError(f"lock must be 'sha256:<64 hex digits>' (what `ag-torchfix lock` prints), not {lock!r}")
            locks = (match.group(1),)
        self._value = _Scope(not paths and not locks, tuple(normalise(p) for p in paths), locks)


# --- paths ----------------------------------------------------------------------------------------------

def remote_kind(path: str) -> str | None:
    """"s3" or "url" exactly where AutoGluon reads ``path`` remotely, None for a local file: AutoGluon's
    ``s3_utils.is_s3_url`` ("s3" then "://" within the first six characters: s3://, s3a://, s3n://) and, since
    AutoGluon 1.6, ``load_pkl._is_web_url`` (http or https with a host).  Everything else, "a://b" and
    "file:///x" included, is a local path to AutoGluon and to trust.  (A test checks this against AutoGluon's
    own functions.)"""
    if path[:2] == "s3" and "://" in path[:6]:
        return "s3"
    from urllib.parse import urlparse

    try:
        parsed = urlparse(path)
    except ValueError:
        return None
    return "url" if parsed.scheme in ("http", "https") and parsed.netloc else None


def is_url(path: str) -> bool:
    return remote_kind(path) is not None


def normalise(path: str | os.PathLike) -> str:
    """The one spelling trust compares: S3 URLs as given (botocore sends the key literally), web URLs as the server
    will see them (``_web_url``), both without a trailing slash; every other path absolute and with symlinks
    resolved (a link inside a trusted directory that points elsewhere is not trusted)."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    kind = remote_kind(text)
    if kind == "url":
        return _web_url(text).rstrip("/")
    if kind is not None:
        return text.rstrip("/")
    return os.path.realpath(os.path.abspath(os.path.expanduser(text)))


def _web_url(url: str) -> str:
    """An http(s) URL with its path as the request will reach the server: backslashes as slashes, ``%2e`` as a dot,
    and dot segments removed (requests and urllib3 remove ``/../`` before sending: ``/models/../uploads/x`` is
    ``/uploads/x``, which a prefix ``/models`` must not cover); the host in lower case."""
    import posixpath
    import re
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    raw = re.sub("%2e", ".", parts.path.replace("\\", "/"), flags=re.IGNORECASE)
    path = posixpath.normpath(raw) if raw else ""
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if path == ".":
        path = ""
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def under(target: str, prefix: str) -> bool:
    """Whether normalised ``target`` is ``prefix`` or inside it, comparing whole components."""
    if is_url(target) != is_url(prefix):
        return False
    sep = "/" if is_url(prefix) else os.sep
    return target == prefix or target.startswith(prefix.rstrip(sep) + sep)


# --- what is trusted --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnvTrust:
    kind: str  # "none" | "all" | "entries" | "invalid"
    prefixes: tuple[str, ...] = ()
    locks: tuple[str, ...] = ()


def env_trust() -> EnvTrust:
    """Parse AG_TORCHFIX_TRUST."""
    raw = os.environ.get(ENV_TRUST)
    if raw is None:
        return EnvTrust("none")
    value = raw.strip()
    if value.lower() in _TRUE:
        return EnvTrust("all")
    if value.lower() in _FALSE:
        return EnvTrust("none")
    entries = _split_entries(value)
    prefixes, locks = [], []
    for entry in entries:
        match = _DIGEST.match(entry.lower())
        if match:
            locks.append(match.group(1))
        elif is_url(entry) or os.path.isabs(os.path.expanduser(entry)):
            prefixes.append(normalise(entry))
        else:
            break
    else:
        if entries:
            return EnvTrust("entries", tuple(prefixes), tuple(locks))
    if raw not in _warned_values:
        _warned_values.add(raw)
        warnings.warn(
            f"{ENV_TRUST}={raw!r} is not understood, so nothing is trusted. Use 1/true/yes/on to trust every "
            f"file, 0/false/no/off for none, or entries joined by {os.pathsep!r}: absolute directories, s3:// "
            "prefixes, or sha256:<digest> of an ag_torchfix.lock.",
            ConfigurationWarning,
            stacklevel=3,
        )
    return EnvTrust("invalid")


def _split_entries(value: str) -> list[str]:
    """Split on os.pathsep, keeping ``s3://...`` and ``sha256:...`` whole when os.pathsep is ':'."""
    if os.pathsep != ":":
        return [e.strip() for e in value.split(os.pathsep) if e.strip()]
    parts, out, i = value.split(":"), [], 0
    while i < len(parts):
        part = parts[i].strip()
        if part in ("s3", "sha256") and i + 1 < len(parts):
            out.append(f"{part}:{parts[i + 1].strip()}")
            i += 2
            continue
        if part:
            out.append(part)
        i += 1
    return out


def trust_source(path: str | os.PathLike | None, *, resolved: bool = False) -> str | None:
    """Why ``path`` is trusted by location (a block or AG_TORCHFIX_TRUST), or None (``resolved``: ``path`` is
    already ``normalise``'s result, not to be resolved again).  Lock trust is content trust: see ``locked_file``."""
    target = (os.fspath(path) if resolved else normalise(path)) if path is not None else None
    for scope in reversed(_scopes.active()):
        if scope.everything:
            return scope.describe()
        if target is not None and any(under(target, prefix) for prefix in scope.prefixes):
            return scope.describe()
    env = env_trust()
    if env.kind == "all":
        return f"{ENV_TRUST}={os.environ.get(ENV_TRUST)}"
    if env.kind == "entries" and target is not None:
        for prefix in env.prefixes:
            if under(target, prefix):
                return f"{ENV_TRUST} ({prefix})"
    return None


def trusted_locks() -> list[tuple[str, str]]:
    """(digest, where it comes from) for every lock digest trusted here and now."""
    found = [(d, scope.describe()) for scope in _scopes.active() for d in scope.locks]
    env = env_trust()
    found += [(d, f"{ENV_TRUST} (sha256:{d[:12]}...)") for d in env.locks]
    return found


@dataclass(frozen=True)
class LockedFile:
    """A file a trusted lock lists: where the lock is, and what the file's bytes must be."""

    source: str
    lock_path: str
    relative: str
    size: int
    sha256: str


def locked_file(path: str | os.PathLike | None) -> LockedFile | None:
    """The entry of a trusted lock that covers ``path``, if a trusted digest and its lock say so.

    The lock is found at the predictor's root: the nearest ancestor directory of ``path`` that holds an
    ``ag_torchfix.lock`` whose bytes hash to a trusted digest.  The caller must still hash the bytes it
    loads and compare them (``fallback.open_door``)."""
    locks = trusted_locks()
    if not locks or path is None or is_url(os.fspath(path)):
        return None
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    while True:
        candidate = os.path.join(directory, LOCK_NAME)
        data = _read_bounded(candidate)
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
        for trusted_digest, source in locks:
            if digest == trusted_digest:
                files = parse_lock(data).get("files", {})  # the very bytes that were hashed
                relative = os.path.relpath(target, directory).replace(os.sep, "/")
                entry = files.get(relative) if isinstance(files, dict) else None
                if isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str):
                    return LockedFile(source, candidate, relative, entry["size"], entry["sha256"])
                return None
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def parse_lock(data: bytes) -> dict:
    """The lock document in ``data`` (the very bytes that were hashed); {} if it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser recurses
        return {}
    return doc if isinstance(doc, dict) and doc.get("schema") == LOCK_SCHEMA else {}


def _read_bounded(path: str) -> bytes | None:
    return files.read_bounded(path, MAX_LOCK_BYTES)  # never blocks on a FIFO named like a lock


def platform_forces_weights_only() -> bool:
    """True when torch itself forces weights-only loading (same parsing as torch.load)."""
    return os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true")


def describe() -> dict[str, object]:
    """The trust settings in force, for ``python -m ag_torchfix`` and ``doctor``."""
    env = env_trust()
    return {
        "env": os.environ.get(ENV_TRUST),
        "env_trusts": env.kind,
        "env_paths": list(env.prefixes),
        "env_locks": [f"sha256:{d}" for d in env.locks],
        "context_scopes": [scope.describe() for scope in _scopes.active()],
        "torch_force_weights_only": platform_forces_weights_only(),
    }
