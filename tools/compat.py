"""The compatibility table (docs/compatibility.md), measured: ``make compat`` writes it, ``make test`` checks it.

For each environment (a Python interpreter) and each TORCH_FORCE_WEIGHTS_ONLY_LOAD setting, fresh
processes try what users do: fit a predictor with NeuralNetFastAI without and with ag_torchfix, save
it, load it and predict in a new process without and with ag_torchfix (the secure load must give the
fitting process's exact predictions), and load a tampered copy (it must be refused, payload not run).

One table holds every stack, one row per stack and force setting, each with its exact versions and the
date it was measured. A stack is named by ``NAME=PYTHON`` or, from a bare PYTHON, by its environment's
directory (``.venv`` is ``current``; the others are ``tools/env.sh NAME``).

  --check FILE        fail unless the rows of the measured stacks are in FILE's table as measured (the
                      measurement date aside); rows of other stacks (the wide matrix) are not checked.
  --write FILE        replace the rows of the measured stacks in FILE's table (in place; new stacks at the
                      end), keeping the other stacks' rows and the closing note.
  --write FILE --all  rewrite the whole table, in the order given, and its closing note (the date, the
                      machine, each stack's build time and the measurement's duration): `make compat-wide`.
  --json FILE         also write every step's outcome, first error line and log tail (facts for `doctor`),
                      and load each predictor fitted without ag_torchfix in a process without it.

Usage: python tools/compat.py [--write FILE [--all] | --check FILE] [--json FILE] [NAME=]PYTHON...
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- compat:start -->", "<!-- compat:end -->"
CI_STACKS = ("current", "legacy-ag11", "legacy-fastai27")  # `make test` re-measures and checks these rows

STEP = textwrap.dedent(
    """
    import json, sys, traceback
    step, path = sys.argv[1], sys.argv[2]
    if step.endswith("-with"):
        import ag_torchfix
    sys.path.insert(0, {tests!r})
    from helpers import make_table
    out = {{}}
    try:
        from autogluon.tabular import TabularPredictor
        data = make_table(30, "binary", seed=4, unseen=True).drop(columns=["label"])
        if step.startswith("fit"):
            p = TabularPredictor(label="label", path=path, verbosity=2)
            try:
                p.fit(make_table(200, "binary"), hyperparameters={{"FASTAI": {{"epochs": 2}}}}, fit_weighted_ensemble=False)
            except RuntimeError as exc:  # AutoGluon skipped NeuralNetFastAI, its only model: say why, below
                if "No models were trained" not in str(exc):
                    raise
            out["trained"] = "NeuralNetFastAI" in p.model_names()
            if out["trained"]:
                out["predictions"] = p.predict_proba(data, model="NeuralNetFastAI").to_numpy().tolist()
            else:
                try:  # why AutoGluon skipped the model: the exception as the traceback's last line names it
                    failure = p.model_failures().set_index("model").loc["NeuralNetFastAI"]
                    tb = [l for l in str(failure["exc_traceback"]).splitlines() if l and not l.startswith(" ")]
                    named = [l for l in tb if l.split(":")[0].split(".")[-1] == failure["exc_type"]]
                    out["failure"] = named[-1] if named else f"{{failure['exc_type']}}: {{failure['exc_str']}}"
                    out["failure_detail"] = str(failure["exc_str"])[:3000]
                except Exception as exc:
                    out["failure"] = f"(no model_failures: {{type(exc).__name__}}: {{exc}})"
        else:
            p = TabularPredictor.load(path, verbosity=0)
            out["predictions"] = p.predict_proba(data, model="NeuralNetFastAI").to_numpy().tolist()
    except Exception as exc:
        out["error"] = f"{{type(exc).__module__}}.{{type(exc).__name__}}: {{exc}}"
    print("@@" + json.dumps(out))
    """
).format(tests=str(ROOT / "tests"))

PACKAGES = ("autogluon.tabular", "fastai", "fastcore", "torch", "numpy", "fastprogress", "fasttransform",
            "setuptools", "pandas", "scikit-learn")
VERSIONS = ("import importlib.metadata as m, json, platform\n"
            "def v(n):\n"
            "    try:\n"
            "        return m.version(n)\n"
            "    except m.PackageNotFoundError:\n"
            "        return '-'\n"
            f"d = {{n: v(n) for n in {PACKAGES!r}}}\n"
            "d['python'] = platform.python_version()\n"
            "print(json.dumps(d))")


def run_step(python: str, step: str, path: pathlib.Path, forced: bool) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "AG_TORCHFIX_TRUST")}
    env["AG_TORCHFIX_AUTOLOAD"] = "0"  # "without" means without: the package runs only where imported
    if forced:
        env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    proc = subprocess.run([python, "-c", STEP, step, str(path)], capture_output=True, text=True, env=env, timeout=900)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    result = json.loads(marker[-1][2:]) if marker else {"error": f"crashed: {proc.stderr.strip()[-300:]}"}
    return result, proc.stdout + proc.stderr


def skip_reason(log: str) -> str | None:
    """The message AutoGluon logs right after it skips NeuralNetFastAI (the exception's first line)."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "to fail during training" in line and "Skipping this model" in line:
            for nxt in lines[i + 1:]:
                if nxt.strip():
                    return nxt.strip()
    return None


def first_error(log: str, result: dict) -> str | None:
    """The exact first error line of a failed step: the exception raised, or the one AutoGluon skipped on."""
    for k in ("error", "failure"):
        if result.get(k):
            return result[k].splitlines()[0]
    return skip_reason(log)


def why(log: str, result: dict) -> str:
    text = result.get("error", "") + "\n" + log
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"fails: `Unsupported global: GLOBAL {m.group(1)}`"
    if "explicit pickle_module" in text:
        return "fails: `Can not safely load weights when explicit pickle_module is specified`"
    first = (result.get("error") or result.get("failure") or skip_reason(log) or "NeuralNetFastAI skipped")
    first = first.splitlines()[0].replace("`", "'").strip()
    return f"fails: `{first[:90]}{'...' if len(first) > 90 else ''}`"


def tamper(predictor: pathlib.Path, python: str, marker: pathlib.Path) -> None:
    """Hide an os.system payload in the predictor's fastai internals (with the environment's own torch)."""
    code = textwrap.dedent(
        f"""
        import os, sys, torch
        class P:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        path = sys.argv[1]
        learner = torch.load(path, map_location="cpu", weights_only=False)
        learner.recorder.note = P()
        torch.save(learner, path, pickle_protocol=2)
        """
    )
    (internals,) = predictor.rglob("model-internals.pkl")
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_WEIGHTS_ONLY_LOAD"}
    subprocess.run([python, "-c", code, str(internals)], check=True, capture_output=True, timeout=300,
                   env={**env, "AG_TORCHFIX_AUTOLOAD": "0"})


def probe(python: str, forced: bool, work: pathlib.Path, details: dict | None) -> dict:
    versions = json.loads(subprocess.run([python, "-c", VERSIONS], capture_output=True, text=True, check=True).stdout)
    row = {"versions": versions, "forced": forced}

    def note(step: str, result: dict, log: str) -> None:
        if details is not None:
            ok = result.get("trained", "predictions" in result) and not result.get("error")
            details[step] = {"ok": bool(ok), "error": None if ok else first_error(log, result),
                             "skipped": None if ok else skip_reason(log),
                             "detail": result.get("failure_detail") or result.get("error"),
                             "log_tail": None if ok else log.splitlines()[-60:]}

    without, log = run_step(python, "fit-without", work / "without", forced)
    note("fit without", without, log)
    row["fit without"] = "yes" if without.get("trained") else why(log, without)
    if details is not None and without.get("trained"):
        # facts for `doctor`: does a predictor fitted without the package load without it?
        loaded, log = run_step(python, "load-without", work / "without", forced)
        note("load without (predictor fitted without)", loaded, log)
    fitted, log = run_step(python, "fit-with", work / "with", forced)
    note("fit with", fitted, log)
    # fitted and predicted in the fitting process: the reference for the loads below
    row["fit"] = "yes" if fitted.get("trained") and "predictions" in fitted else why(log, fitted)
    saved = bool(list((work / "with").rglob("model-internals.pkl")))
    row["save"] = "yes" if saved else "no"
    if not saved:
        row["load without"] = row["load"] = row["refusal"] = "-"
        return row
    reference = fitted.get("predictions")

    def compared(loaded: dict, log: str, ok: str) -> str:
        if "predictions" not in loaded:
            return why(log, loaded)
        if reference is None:
            return "predicts (no reference: the fitting process could not predict)"
        return ok if loaded["predictions"] == reference else "fails: predictions differ from the fitting process's"

    loaded, log = run_step(python, "load-without", work / "with", forced)
    note("load without", loaded, log)
    row["load without"] = compared(loaded, log, "yes")
    loaded, log = run_step(python, "load-with", work / "with", forced)
    note("load with", loaded, log)
    row["load"] = compared(loaded, log, "yes, identical predictions")
    tampered = work / "tampered"
    shutil.copytree(work / "with", tampered)
    marker = work / "PWNED"
    tamper(tampered, python, marker)
    refused, _ = run_step(python, "load-with", tampered, forced)
    ok = "DisallowedGlobalsError" in refused.get("error", "") and not marker.exists()
    row["refusal"] = "yes, nothing ran" if ok else f"NO: {refused}"
    if details is not None:
        details["tampered"] = {"ok": ok, "error": refused.get("error"), "payload ran": marker.exists()}
    return row


COLUMNS = ("fit without", "load without", "fit", "save", "load", "refusal")
HEAD = ("| stack | Python | AutoGluon | fastai | fastcore | torch | numpy | `TORCH_FORCE_WEIGHTS_ONLY_LOAD` "
        "| without ag_torchfix: fit | without: load (full pickle) | with ag_torchfix: fit | save | secure load "
        "| tampered copy refused | measured |")
NCOLS = HEAD.count("|") - 1
DATE = NCOLS - 1  # the last cell: not compared by --check


def cells(stack: str, r: dict, date: str) -> list[str]:
    v = r["versions"]
    row = [f"`{stack}`", v["python"], v["autogluon.tabular"], v["fastai"], v["fastcore"], v["torch"], v["numpy"],
           "1" if r["forced"] else "unset", *(r[c] for c in COLUMNS), date]
    return [" ".join(c.split()) for c in row]


def line(row: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"


def parse(block: str) -> tuple[list[list[str]], str]:
    """The table rows (cells) and the closing note of the text between the markers."""
    rows, note = [], []
    for text in block.strip().splitlines():
        if text.startswith("|"):
            row = [c.strip().replace("\\|", "|") for c in text.strip().strip("|").split(" | ")]
            if len(row) == NCOLS and row[0] != "stack" and not set(text) <= set("|-: "):  # others: older layout
                rows.append(row)
        else:
            note.append(text)
    return rows, "\n".join(note).strip()


FORCE = HEAD.strip().strip("|").split(" | ").index("`TORCH_FORCE_WEIGHTS_ONLY_LOAD`")


def key(row: list[str]) -> tuple[str, str]:
    return row[0], row[FORCE]


def build_seconds(python: str) -> int | None:
    """How long the stack's environment took to build from scratch, as its build recorded it (tools/env.sh, the
    Makefile's venv recipe); None when unrecorded (an environment updated in place has no build time)."""
    record = pathlib.Path(python).absolute().parent.parent / ".build-seconds"
    if record.is_file():
        return int(record.read_text().split()[0])
    return None


def stack_name(arg: str) -> tuple[str, str]:
    if "=" in arg and not arg.startswith(("/", ".")):
        name, python = arg.split("=", 1)
        return name, python
    prefix = pathlib.Path(arg).absolute().parent.parent
    return ("current" if prefix.name == ".venv" else prefix.name), arg


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def closing_note(stacks: list[str], builds: dict, versions: dict, date: str, took: float) -> str:
    v = next(iter(versions.values()))
    built = ", ".join(f"`{s}` {builds[s]} s" if builds[s] is not None else f"`{s}` not recorded" for s in stacks)
    ci = ", ".join(f"`{s}`" for s in stacks if s in CI_STACKS)
    return (f"Measured by `make compat-wide` on {date} ({platform.machine()}, {os.cpu_count()} cores, "
            f"Python {v['python']}) in {minutes(took)}. Each stack is a virtual environment, `current` the "
            f"project's `.venv` (`make venv`, requirements/current.txt), the others `tools/env.sh NAME`; time to "
            f"build each from scratch: {built}. "
            f"`make test` re-measures the rows of {ci} and checks them against this table (the date aside); "
            f"`make compat` rewrites only those rows.")


def main() -> int:
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=pathlib.Path, help="replace the measured stacks' rows in this file")
    group.add_argument("--check", type=pathlib.Path, help="fail if the measured stacks' rows in this file differ")
    parser.add_argument("--all", action="store_true", help="with --write: rewrite the whole table and its note")
    parser.add_argument("--json", type=pathlib.Path, help="write every step's outcome and errors to this file")
    parser.add_argument("pythons", nargs="+", metavar="[NAME=]PYTHON")
    args = parser.parse_args()
    if args.all and not args.write:
        parser.error("--all needs --write")
    date = datetime.date.today().isoformat()
    began = time.monotonic()
    measured, builds, versions, facts, broken = [], {}, {}, [], []
    stacks = [stack_name(a) for a in args.pythons]
    for name, python in stacks:
        builds[name] = build_seconds(python)
        for forced in (False, True):
            t0 = time.monotonic()
            details = {} if args.json else None
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    row = probe(python, forced, pathlib.Path(tmp), details)
                except Exception as exc:  # a broken stack or harness: report it, measure the others, write nothing
                    traceback.print_exc()
                    broken.append(f"{name} force={int(forced)}: {type(exc).__name__}: {exc}")
                    continue
            versions[name] = row["versions"]
            measured.append(cells(name, row, date))
            print(f"  {name} force={int(forced)} ({time.monotonic() - t0:.0f} s): "
                  + ", ".join(f"{c}={row[c]}" for c in COLUMNS), file=sys.stderr)
            if args.json:
                facts.append({"stack": name, "python": python, "forced": forced, "versions": row["versions"],
                              "build_seconds": builds[name],
                              "row": dict(zip([h.strip() for h in HEAD.strip().strip("|").split("|")], measured[-1])),
                              "steps": details, "seconds": round(time.monotonic() - t0)})
                args.json.write_text(json.dumps(facts, indent=1))
    took = time.monotonic() - began
    print(f"  measured {len(stacks)} stacks in {took:.0f} s", file=sys.stderr)
    print("\n".join([HEAD, "|" + "---|" * NCOLS, *map(line, measured)]))
    if broken:
        print("\nNot measured (nothing written):\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
    if not (args.write or args.check):
        return 0
    doc = (args.write or args.check).read_text()
    start, end = doc.index(START) + len(START), doc.index(END)
    rows, note = parse(doc[start:end])
    if args.check:
        have = {key(r): r[:DATE] for r in rows}
        stale = [m for m in measured if have.get(key(m)) != m[:DATE]]
        for m in stale:
            old = have.get(key(m))
            print(f"\n{m[0]} force={m[FORCE]}:\n  table:    {line(old) if old else '(no row)'}\n  measured: {line(m[:DATE])}",
                  file=sys.stderr)
        if stale:
            print(f"\nThe compatibility table in {args.check} is not what this run measured; run `make compat`.",
                  file=sys.stderr)
            return 1
        return 0
    if args.all:
        rows = measured
        note = closing_note([n for n, _ in stacks], builds, versions, date, took)
    else:
        fresh = {key(m): m for m in measured}
        names = {m[0] for m in measured}
        kept = [fresh.pop(key(r)) if key(r) in fresh else r for r in rows if r[0] not in names or key(r) in fresh]
        rows = kept + [m for m in measured if key(m) in fresh]
    table = "\n".join([HEAD, "|" + "---|" * NCOLS, *map(line, rows)])
    args.write.write_text(doc[:start] + "\n" + table + "\n" + ("\n" + note + "\n" if note else "") + doc[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
