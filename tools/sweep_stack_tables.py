"""Measure this environment's stack tables (``ag_torchfix/policy/stack_tables.py``) and merge them into the shipped
``stack_tables.json``: run it with each measured stack's Python (``make stack-tables`` runs every cached one).

    python tools/sweep_stack_tables.py [TABLE.json]

Methods are computed exactly as ``policy.verdicts._shadows`` asks: after importing ``fastai.tabular.all``, a name
is a method of a class when ``inspect.getattr_static(cls, name)`` is a non-data descriptor (``verdicts.is_method``);
the candidate names are every name in the class's MRO dictionaries and its metaclass's (anything else is absent,
hence no method).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ag_torchfix.policy import allowlist, shims, stack_tables  # noqa: E402
from ag_torchfix.policy import verdicts  # noqa: E402


def method_names(cls: type) -> list[str]:
    names = set()
    for klass in (*inspect.getmro(cls), *inspect.getmro(type(cls))):
        names.update(vars(klass))
    return sorted(n for n in names if verdicts.is_method(inspect.getattr_static(cls, n, None)))


def measure() -> dict:
    for module in verdicts._CLASS_CONTEXT:
        importlib.import_module(module)
    methods, importable = {}, []
    for entry in allowlist.FASTAI_INTERNALS:
        try:
            obj = shims.resolve(entry.name)
        except LookupError:
            continue  # not importable on this stack: the loader refuses the name, the table says so by omission
        importable.append(entry.name)
        if entry.use == allowlist.CONSTRUCT and isinstance(obj, type):
            methods[entry.name] = method_names(obj)
    from torch import _weights_only_unpickler as wou

    return {"methods": methods, "importable": sorted(importable), "torch_defaults": sorted(wou._get_allowed_globals())}


def merge(table: dict, key: str, measured: dict) -> dict:
    sets = [list(s) for s in table.get("sets", [])]
    index = {tuple(s): i for i, s in enumerate(sets)}

    def ref(names: list[str]) -> int:
        found = index.get(tuple(names))
        if found is None:
            found = index[tuple(names)] = len(sets)
            sets.append(list(names))
        return found

    stacks = dict(table.get("stacks", {}))
    stacks[key] = {"methods": {cls: ref(names) for cls, names in sorted(measured["methods"].items())},
                   "importable": ref(measured["importable"]), "torch_defaults": ref(measured["torch_defaults"])}
    used = sorted({i for s in stacks.values() for i in (*s["methods"].values(), s["importable"], s["torch_defaults"])})
    renumber = {old: new for new, old in enumerate(used)}
    for s in stacks.values():
        s["methods"] = {cls: renumber[i] for cls, i in s["methods"].items()}
        s["importable"], s["torch_defaults"] = renumber[s["importable"]], renumber[s["torch_defaults"]]
    return {"schema": 1, "stacks": dict(sorted(stacks.items())), "sets": [sets[i] for i in used]}


def main() -> int:
    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else stack_tables.TABLE)
    table = json.loads(path.read_text()) if path.exists() else {}
    key = stack_tables.stack_key()
    path.write_text(json.dumps(merge(table, key, measure()), separators=(",", ":"), sort_keys=False) + "\n")
    print(f"{key}: measured into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
