"""The package's layers, read from its code: imports flow one way, and no module imports itself in a circle.

Layers, lowest first: core, formats, policy, trust, load, integration, cli, then the package root (the public API).
A module may import its own layer and the layers below; every import is counted, including the ones inside
functions (a lazy import is still an edge).  Old flat module paths (``ag_torchfix.scanner``) still work for users
(``_moved``), but code inside the package must use the real paths.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import sys

import pytest

import ag_torchfix

PACKAGE = pathlib.Path(ag_torchfix.__file__).parent
LAYERS = ("core", "formats", "policy", "trust", "load", "integration", "cli")
ROOT_RANK = len(LAYERS)


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Every ag_torchfix module ``name`` imports (anywhere in its code); an unknown target is returned as is."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ag_torchfix"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "ag_torchfix":
                base = node.module
            else:
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known or not node.module and node.level else base)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) - {name} for name, path in found.items()}


def rank(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else ROOT_RANK


def problems(edges: dict[str, set[str]], rank=rank) -> list[str]:
    """Imports of modules that do not exist, upward imports, and circles (strongly connected components)."""
    out = [f"{a} imports {b}, which is no module of the package (an old path?)"
           for a, targets in edges.items() for b in targets if b not in edges]
    out += [f"{a} (layer {rank(a)}) imports {b} (layer {rank(b)}): an upward import"
            for a, targets in edges.items() for b in targets if b in edges and rank(b) > rank(a)]
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def visit(node):  # Tarjan's algorithm, recursive (the graph is small)
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append("an import circle: " + " -> ".join(sorted(component)))

    for node in edges:
        if node not in index:
            visit(node)
    return out


def test_the_package_has_no_import_circle_and_no_upward_import():
    assert problems(graph()) == []


def test_the_checker_finds_circles_upward_imports_and_old_paths():
    edges = {"ag_torchfix.core.a": {"ag_torchfix.load.b"}, "ag_torchfix.load.b": {"ag_torchfix.load.c"},
             "ag_torchfix.load.c": {"ag_torchfix.load.b", "ag_torchfix.scanner"}}
    found = problems(edges)
    assert any("upward" in p and p.startswith("ag_torchfix.core.a") for p in found)
    assert any("circle" in p and "load.b" in p and "load.c" in p for p in found)
    assert any("ag_torchfix.scanner" in p and "no module" in p for p in found)


def test_the_reader_sees_lazy_relative_and_absolute_imports(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("from ..core import errors, scopes as s\nfrom . import native\n"
                      "def f():\n    from ..formats.files import open_regular\n    import ag_torchfix.trust.rules\n")
    known = set(modules())
    assert imports("ag_torchfix.load.x", source, known) == {
        "ag_torchfix.core.errors", "ag_torchfix.core.scopes", "ag_torchfix.load.native", "ag_torchfix.formats.files",
        "ag_torchfix.trust.rules"}


def allowed(layer: str) -> set[str]:
    """The layers ``layer``'s ``__init__`` docstring says it may import (its own always)."""
    doc = importlib.import_module(f"ag_torchfix.{layer}").__doc__ or ""
    assert doc.startswith(f"Layer {LAYERS.index(layer)}, {layer}:") and "May import:" in doc, layer
    said = doc.split("May import:")[1].split(".\n")[0]
    below = LAYERS[:LAYERS.index(layer)]
    return {layer, *(below if "every layer below" in said else [lower for lower in below if f"``{lower}``" in said])}


def test_every_layer_says_what_it_may_import_and_imports_only_that():
    edges = graph()
    for name, targets in edges.items():
        if rank(name) == ROOT_RANK:
            continue
        layer = LAYERS[rank(name)]
        for target in targets:
            assert rank(target) == ROOT_RANK or LAYERS[rank(target)] in allowed(layer), f"{name} imports {target}"


@pytest.mark.parametrize("old", sorted(__import__("ag_torchfix._moved", fromlist=["MOVED"]).MOVED))
def test_old_module_paths_are_the_moved_modules_themselves(old):
    from ag_torchfix import _moved

    module = importlib.import_module(f"ag_torchfix.{old}")
    assert module is importlib.import_module(f"ag_torchfix.{_moved.MOVED[old]}")
    assert module.__spec__.name == module.__name__ == f"ag_torchfix.{_moved.MOVED[old]}"
    assert sys.modules[f"ag_torchfix.{old}"] is module


def test_the_old_policy_trust_and_cli_modules_keep_their_names():
    from ag_torchfix import cli, errors, policy, trust

    assert trust.trusted is ag_torchfix.trusted and callable(trust.normalise) and trust.LOCK_NAME == "ag_torchfix.lock"
    assert callable(policy.judge) and callable(policy.strict) and callable(cli.main)
    assert errors.SecureLoadError is ag_torchfix.SecureLoadError
    with pytest.raises(AttributeError):
        trust.no_such_name  # noqa: B018
