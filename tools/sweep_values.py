"""Survey genuine predictors for strict mode's value tables: the argument tuples every call passes
(``allowlist.STRICT_CALLS``) and the attributes every AutoGluon object holds (``dispatch.REQUIRED_ATTRIBUTES``).

Reads the pickles AutoGluon loads through load_pkl.load under each directory given (never model-internals.pkl),
with strict mode's own unpickler (nothing from the files runs), and prints:
- each (opcode, callee, argument shape) with its count: a shape not covered by STRICT_CALLS is a false refusal;
- per AutoGluon base class, the attributes present in every instance: candidates for REQUIRED_ATTRIBUTES (keep
  only what every supported AutoGluon version writes: run it over the writers' goldens too).

Usage: python tools/sweep_values.py DIR [DIR ...]   (e.g. .cache/predictors/<key> tests/goldens)
"""

from __future__ import annotations

import collections
import pathlib
import pickle
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from ag_torchfix.load import strict_unpickler
from ag_torchfix.policy import value_invariants  # noqa: E402

BASES = ("TabularPredictor", "AbstractLearner", "AbstractTrainer", "AbstractModel", "AbstractFeatureGenerator")


def shape(value, depth: int = 0) -> str:
    if type(value) in (int, float, bool, str, bytes, type(None)):
        return type(value).__name__
    if type(value) in (tuple, list) and depth < 2:
        return f"{type(value).__name__}({','.join(shape(v, depth + 1) for v in value[:6])}{'...' if len(value) > 6 else ''})"
    if isinstance(value, type):
        return f"class:{value.__module__}.{value.__qualname__}"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def main(roots: list[str]) -> None:
    warnings.simplefilter("ignore")
    calls: collections.Counter = collections.Counter()
    names = strict_unpickler._objects.name_of

    class Recorder(strict_unpickler.StrictUnpickler):
        dispatch = dict(strict_unpickler.StrictUnpickler.dispatch)

        def load_reduce(self):
            calls[("REDUCE", names(self.stack[-2]) or repr(self.stack[-2]), shape(self.stack[-1]))] += 1
            strict_unpickler.StrictUnpickler.load_reduce(self)
        dispatch[pickle.REDUCE[0]] = load_reduce

        def load_newobj(self):
            calls[("NEWOBJ", names(self.stack[-2]) or repr(self.stack[-2]), shape(self.stack[-1]))] += 1
            strict_unpickler.StrictUnpickler.load_newobj(self)
        dispatch[pickle.NEWOBJ[0]] = load_newobj

    present: dict[str, set[str]] = {}
    counts: collections.Counter = collections.Counter()

    def visit(obj, seen: set[int]) -> None:
        stack = [obj]
        while stack:
            value = stack.pop()
            if id(value) in seen:
                continue
            seen.add(id(value))
            state = getattr(value, "__dict__", None)
            if type(value).__module__.startswith("autogluon.") and isinstance(state, dict):
                for base in set(BASES) & {k.__qualname__ for k in type(value).__mro__}:
                    present[base] = set(state) if base not in present else present[base] & set(state)
                    counts[base] += 1
                stack.extend(state.values())
            elif isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, (list, tuple)):
                stack.extend(value)

    files = refused = 0
    for root in roots:
        for path in sorted(pathlib.Path(root).rglob("*.pkl")):
            if path.name == "model-internals.pkl":
                continue
            files += 1
            try:
                with open(path, "rb") as fh:
                    visit(Recorder(fh).load(), set())
            except (pickle.UnpicklingError, value_invariants.ValueRefused) as exc:
                refused += 1
                print(f"REFUSED {path}: {exc}")
    print(f"\n# calls over {files} files ({refused} refused)")
    for (op, name, args), n in sorted(calls.items()):
        print(f"{n:6d} {op} {name} {args}")
    print("\n# attributes present in every instance")
    for base in BASES:
        print(f"{base} ({counts[base]} objects): {sorted(present.get(base, ()))}")


if __name__ == "__main__":
    main(sys.argv[1:])
