"""Survey genuine fastai internals against the learner schema (ag_torchfix/policy/learner_schema.py).

Loads each file as a secure load does (the static pass, then torch's weights-only unpickler with every class an
inert record), walks the records and writes, per class, every attribute and the kinds of values genuine files hold
there; then prints what genuine files hold that the schema lacks (a genuine file the loader would refuse) and what
the schema allows that no file held (candidates to review).  Run it in every stack's environment (a fastai 2.7
learner has other attributes than a fastai 2.8 one) over the golden predictors and the test cache:

    .venv/bin/python tools/sweep_schema.py OUT.json tests/goldens ~/.cache/ag-torchfix/predictors
"""

from __future__ import annotations

import collections
import io
import json
import os
import pathlib
import sys

os.environ.setdefault("AG_TORCHFIX_AUTOLOAD", "0")

from ag_torchfix.policy import learner_schema, verdicts as policy
from ag_torchfix.formats import records
from ag_torchfix.load import secure_load, torch_scope  # noqa: E402


def kind(value) -> str:
    if isinstance(value, records.Record):
        return "record " + value.name
    if isinstance(value, records.Ref):
        return "function " + value.name
    if isinstance(value, records.BoundRef):
        return f"bound {value.record.name}.{value.attr}"
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}"


def survey(paths: list[pathlib.Path]) -> dict[str, dict[str, set[str]]]:
    import torch

    table: dict[str, dict[str, set[str]]] = collections.defaultdict(lambda: collections.defaultdict(set))
    for path in paths:
        data = path.read_bytes()
        check = policy.check_internals(io.BytesIO(data))
        if not check.judgement.ok:
            print(f"skipped (refused by the static pass): {path}", file=sys.stderr)
            continue
        try:
            scope = secure_load._inert_scope(frozenset(check.scan.globals))
        except LookupError as exc:
            print(f"skipped (names this stack cannot import: {exc}): {path}", file=sys.stderr)
            continue
        torch_scope.patch()
        with torch_scope.active(scope):
            root = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        seen: set[int] = set()
        stack = [root]
        while stack:
            value = stack.pop()
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, records.Record):
                state = value.state if isinstance(value.state, dict) else {}
                for key, item in state.items():
                    table[value.name][key].add(kind(item))
                    stack.append(item)
            elif isinstance(value, (list, tuple, set)):
                stack.extend(value)
            elif isinstance(value, dict):
                stack.extend(value.values())
    return table


def main() -> int:
    out, *roots = sys.argv[1:]
    paths = sorted(p for root in roots for p in pathlib.Path(root).expanduser().rglob("model-internals.pkl"))
    table = survey(paths)
    pathlib.Path(out).write_text(json.dumps({c: {k: sorted(v) for k, v in a.items()} for c, a in table.items()},
                                            indent=1, sort_keys=True))
    missing = [(c, k) for c, attrs in table.items() for k in attrs
               if c not in learner_schema.CLASSES or k not in learner_schema.CLASSES[c].attrs]
    unseen = [(c, k) for c, cls in learner_schema.CLASSES.items() for k in cls.attrs
              if k not in table.get(c, {})]
    print(f"{len(paths)} files, {len(table)} classes")
    print("held by genuine files, missing from the schema (the loader would refuse these):")
    for c, k in missing:
        print(f"  {c}.{k}: {sorted(table[c][k])}")
    print(f"allowed by the schema, held by none of these files ({len(unseen)}; other stacks may hold them):")
    for c, k in unseen:
        print(f"  {c}.{k}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
