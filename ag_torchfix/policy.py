"""Judge a scanned pickle against an allowlist: the one verdict the loader and the scanner share.

Each global is *allowed* (in the allowlist, a shim, or torch's own weights-only defaults),
*dangerous* (on the denylist) or *unknown* (would need trust).  Constructs the secure loader refuses
whatever the names (BUILD/SETITEM on a class object, calling a value-only entry, opcodes torch's
unpickler does not execute, ...) are listed too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from . import allowlist, denylist, pickle_scan

ALLOWED, UNKNOWN, DANGEROUS = "allowed", "unknown", "dangerous"


@dataclass(frozen=True)
class Profile:
    """An allowlist and the loader that enforces it."""

    name: str
    entries: dict[str, allowlist.Entry]
    shims: frozenset[str]
    builtin: frozenset[str] = frozenset()  # allowed by the loader itself (torch's defaults)
    torch_opcodes_only: bool = True  # torch's weights-only unpickler executes a subset of opcodes


@dataclass
class Judgement:
    globals: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (status, reason)
    constructs: list[str] = field(default_factory=list)

    def names(self, status: str) -> list[str]:
        return sorted(n for n, (s, _) in self.globals.items() if s == status)

    @property
    def ok(self) -> bool:
        return not self.constructs and all(s == ALLOWED for s, _ in self.globals.values())

    def disallowed_labels(self) -> list[str]:
        """'name' or 'name (dangerous: why)' for every global that is not allowed."""
        return [f"{n} (dangerous: {r})" if s == DANGEROUS else n
                for n, (s, r) in sorted(self.globals.items()) if s != ALLOWED]


@functools.lru_cache(maxsize=1)
def fastai_internals() -> Profile:
    """The profile of AutoGluon's ``model-internals.pkl``: loaded by torch's weights-only unpickler."""
    try:
        from torch import _weights_only_unpickler as wou

        builtin = frozenset(wou._get_allowed_globals())
    except Exception:  # no torch here: its defaults cannot be named, so they count as unknown
        builtin = frozenset()
    return Profile("fastai-internals", {e.name: e for e in allowlist.FASTAI_INTERNALS}, frozenset(allowlist.SHIMS),
                   builtin)


def judge(scan: pickle_scan.ScanResult, profile: Profile) -> Judgement:
    verdict = Judgement(constructs=[str(p) for p in scan.problems])
    if profile.torch_opcodes_only:
        unsupported = scan.unsupported_by_torch()
        if unsupported:
            verdict.constructs.append("opcodes torch's weights-only unpickler does not execute: "
                                      + ", ".join(unsupported))
    for name, uses in sorted(scan.globals.items()):
        entry = profile.entries.get(name)
        if name in profile.builtin:
            verdict.globals[name] = (ALLOWED, "torch's weights-only default")
        elif name in profile.shims:
            verdict.globals[name] = (ALLOWED, "served by a narrow shim: " + allowlist.SHIMS.get(name, ""))
        elif entry is not None:
            verdict.globals[name] = (ALLOWED, entry.reason)
            if entry.use == allowlist.REFERENCE and uses - {pickle_scan.REFERENCED}:
                verdict.constructs.append(f"{name} is allowlisted as a value only, but the file calls it")
        else:
            reason = denylist.danger(name)
            verdict.globals[name] = (DANGEROUS, reason) if reason else (UNKNOWN, "not in the allowlist")
    return verdict
