"""Measured version facts shared by the loaders' warning and ``doctor``: the releases the compatibility matrix
measured, the oldest torch supported, AutoGluon's own torch requirement, and version parsing.  Read from package
metadata only: nothing heavy is imported."""

from __future__ import annotations

# re, os and importlib.metadata are imported where used: `import ag_torchfix` imports this module for __version__

PACKAGE_VERSION = "0.2.0"  # ag_torchfix.__version__ (pyproject.toml says the same)

MIN_TORCH = (2, 6)
# Releases the compatibility matrix measured (README "Compatibility"); other releases get a VersionWarning.
TESTED: dict[str, tuple[str, ...]] = {
    "autogluon.tabular": ("1.1", "1.2", "1.3", "1.4", "1.6"),
    "fastai": ("2.7.18", "2.7.19", "2.8"),
    "torch": ("2.13", "2.14"),
}


def installed_version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


_found_versions: dict[tuple[str, ...], dict[str, str]] = {}


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """The installed versions of ``packages``, from the dist-info directory names on sys.path (what
    ``importlib.metadata.version`` answers, without parsing every distribution's metadata: this is on the scanner's
    start-up path).  The first entry on sys.path wins, as for imports."""
    known = _found_versions.get(packages)
    if known is not None:
        return known
    import os
    import re
    import sys

    wanted = {_normal(n): n for n in packages}
    dist = re.compile(r"(?P<name>[^-]+)-(?P<version>[^-]+?)\.dist-info")
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            match = dist.fullmatch(name)
            if match:
                package = wanted.get(_normal(match["name"]))
                if package is not None and package not in found:
                    found[package] = match["version"]
    _found_versions[packages] = found
    return found


def _normal(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "_", name).lower()


def autogluon_torch_range() -> str | None:
    import re

    from importlib.metadata import PackageNotFoundError, requires

    try:
        for requirement in requires("autogluon.tabular") or []:
            match = re.match(r"torch\s*([^;]+?)\s*;\s*(.*)$", requirement)
            if match and "fastai" in match.group(2) and "Darwin" not in match.group(2):
                return match.group(1).replace(" ", "")
    except PackageNotFoundError:
        pass
    return None


def satisfies(version: str, spec: str) -> bool:
    import re

    have = parse(version) or ()
    for clause in spec.split(","):
        match = re.match(r"(<=|>=|<|>|==|!=)(.+)", clause.strip())
        if not match:
            continue
        op, want = match.group(1), parse(match.group(2)) or ()
        size = max(len(want), 1)
        ok = {"<": have[:size] < want, "<=": have[:size] <= want, ">": have[:size] > want,
              ">=": have[:size] >= want, "==": have[:size] == want, "!=": have[:size] != want}[op]
        if not ok:
            return False
    return True


def outside_autogluon_torch_range(torch_version: str | None) -> str | None:
    declared = autogluon_torch_range()
    if declared and torch_version and not satisfies(torch_version, declared):
        return f"torch {torch_version} is outside autogluon.tabular's own requirement torch{declared}"
    return None


def untested_versions(versions: dict[str, str | None]) -> list[str]:
    return [f"{name} {versions[name]}" for name in TESTED if versions.get(name) and not is_tested(name, versions[name])]


def is_tested(name: str, version: str) -> bool:
    base = version.split("+")[0]
    return any(base == v or base.startswith(v + ".") for v in TESTED[name])


def parse(version: str | None) -> tuple[int, ...] | None:
    import re

    if not version:
        return None
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])
