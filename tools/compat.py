"""The README's compatibility table, measured: ``make compat`` writes it, ``make test`` checks it.

For each environment (a Python interpreter) and each TORCH_FORCE_WEIGHTS_ONLY_LOAD setting, fresh
processes try what users do: fit a predictor with NeuralNetFastAI without and with ag_torchfix, save
it, load it and predict in a new process without and with ag_torchfix (the secure load must give the
fitting process's exact predictions), and load a tampered copy (it must be refused, payload not run).

Usage: python tools/compat.py [--write README.md | --check README.md] PYTHON...
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- compat:start -->", "<!-- compat:end -->"

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
            p = TabularPredictor(label="label", path=path, verbosity=2).fit(
                make_table(200, "binary"), hyperparameters={{"FASTAI": {{"epochs": 2}}}}, fit_weighted_ensemble=False)
            out["trained"] = "NeuralNetFastAI" in p.model_names()
            if out["trained"]:
                out["predictions"] = p.predict_proba(data, model="NeuralNetFastAI").to_numpy().tolist()
        else:
            p = TabularPredictor.load(path, verbosity=0)
            out["predictions"] = p.predict_proba(data, model="NeuralNetFastAI").to_numpy().tolist()
    except Exception as exc:
        out["error"] = f"{{type(exc).__module__}}.{{type(exc).__name__}}: {{exc}}"
    print("@@" + json.dumps(out))
    """
).format(tests=str(ROOT / "tests"))

VERSIONS = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "('autogluon.tabular', 'fastai', 'torch', 'numpy')}))")


def run_step(python: str, step: str, path: pathlib.Path, forced: bool) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "AG_TORCHFIX_TRUST")}
    env["AG_TORCHFIX_AUTOLOAD"] = "0"  # "without" means without: the package runs only where imported
    if forced:
        env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    proc = subprocess.run([python, "-c", STEP, step, str(path)], capture_output=True, text=True, env=env, timeout=900)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    result = json.loads(marker[-1][2:]) if marker else {"error": f"crashed: {proc.stderr.strip()[-300:]}"}
    return result, proc.stdout + proc.stderr


def why(log: str, result: dict) -> str:
    text = result.get("error", "") + "\n" + log
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"fails: `Unsupported global: GLOBAL {m.group(1)}`"
    if "explicit pickle_module" in text:
        return "fails: `Can not safely load weights when explicit pickle_module is specified`"
    first = (result.get("error") or "NeuralNetFastAI skipped").splitlines()[0]
    return f"fails: {first[:90]}"


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


def probe(python: str, forced: bool, work: pathlib.Path) -> dict:
    versions = json.loads(subprocess.run([python, "-c", VERSIONS], capture_output=True, text=True, check=True).stdout)
    row = {"versions": versions, "forced": forced}
    without, log = run_step(python, "fit-without", work / "without", forced)
    row["fit without"] = "yes" if without.get("trained") else why(log, without)
    fitted, log = run_step(python, "fit-with", work / "with", forced)
    row["fit"] = "yes" if fitted.get("trained") else why(log, fitted)
    saved = bool(list((work / "with").rglob("model-internals.pkl")))
    row["save"] = "yes" if saved else "no"
    if not saved:
        row["load without"] = row["load"] = row["refusal"] = "-"
        return row
    loaded, log = run_step(python, "load-without", work / "with", forced)
    row["load without"] = ("yes" if loaded.get("predictions") == fitted["predictions"] else why(log, loaded))
    loaded, log = run_step(python, "load-with", work / "with", forced)
    row["load"] = ("yes, identical predictions" if loaded.get("predictions") == fitted["predictions"]
                   else why(log, loaded))
    tampered = work / "tampered"
    shutil.copytree(work / "with", tampered)
    marker = work / "PWNED"
    tamper(tampered, python, marker)
    refused, _ = run_step(python, "load-with", tampered, forced)
    ok = "DisallowedGlobalsError" in refused.get("error", "") and not marker.exists()
    row["refusal"] = "yes, nothing ran" if ok else f"NO: {refused}"
    return row


COLUMNS = ("fit without", "load without", "fit", "save", "load", "refusal")


def render(rows: list[dict]) -> str:
    head = ("| AutoGluon | fastai | torch | numpy | `TORCH_FORCE_WEIGHTS_ONLY_LOAD` | without ag_torchfix: fit "
            "| without: load (full pickle) | with ag_torchfix: fit | save | secure load | tampered copy refused |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        v = r["versions"]
        cells = [v["autogluon.tabular"], v["fastai"], v["torch"].split("+")[0], v["numpy"],
                 "1" if r["forced"] else "unset", *(r[c] for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=pathlib.Path, help="replace the table in this file")
    group.add_argument("--check", type=pathlib.Path, help="fail if the table in this file differs")
    parser.add_argument("pythons", nargs="+")
    args = parser.parse_args()
    rows = []
    for python in args.pythons:
        for forced in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(probe(python, forced, pathlib.Path(tmp)))
                print(f"  {python} force={int(forced)}: " + ", ".join(f"{c}={rows[-1][c]}" for c in COLUMNS),
                      file=sys.stderr)
    table = render(rows)
    print(table)
    if args.write or args.check:
        doc = (args.write or args.check).read_text()
        start, end = doc.index(START) + len(START), doc.index(END)
        if args.write:
            args.write.write_text(doc[:start] + "\n" + table + "\n" + doc[end:])
        elif doc[start:end].strip() != table:
            print(f"\nThe compatibility table in {args.check} is not what this run measured; run `make compat`.",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
