#!/usr/bin/env python3
"""Summarise tests/goldens/ into tools/goldens/STATUS.md (stdlib only; any Python 3.9+).

tools/goldens/report.py [--globals]

Rewrites the part of STATUS.md between the `<!-- auto:begin -->` / `<!-- auto:end -->` markers (hand-written
notes outside them are kept): one row per golden (versions from writer.json, size, venv build seconds) and,
with --globals, per file role the pickle GLOBAL names (module.name, from GLOBAL and STACK_GLOBAL opcodes; for
model-internals.pkl, its data.pkl) that each writer's files hold and the reference writer's (py3.11.7) do not.
Zoo goldens (writer.json "kind": "zoo", WRITER-zoo) get their own table and are compared with py3.11.7-zoo, file
by file (every model's model.pkl is its own role).
"""

from __future__ import annotations

import json
import os
import pathlib
import pickletools
import re
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDENS = ROOT / "tests" / "goldens"
STATUS = ROOT / "tools" / "goldens" / "STATUS.md"
ENVS = pathlib.Path(os.environ.get("AG_TORCHFIX_ENVS", pathlib.Path.home() / ".cache" / "ag-torchfix" / "envs"))
REFERENCE = "py3.11.7"
ZOO_REFERENCE = "py3.11.7-zoo"
BEGIN, END = "<!-- auto:begin -->", "<!-- auto:end -->"

STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
GETATTR = {("G", "builtins.getattr"), ("G", "__builtin__.getattr")}


def pickle_globals(data: bytes) -> set[str]:
    """module.name of every GLOBAL / STACK_GLOBAL / INST opcode of one pickle stream, and `getattr(module.name, 'attr')`
    for every getattr call on a global (enum members before Python 3.12, bound methods)."""
    names: set[str] = set()
    memo: dict[int, object] = {}
    pushes: list[object] = []  # values of the recent pushes (strings, or None for anything else)
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, attr = arg.split(" ", 1)
            names.add(f"{module}.{attr}")
            pushes.append(("G", f"{module}.{attr}"))
        elif name == "STACK_GLOBAL":
            if len(pushes) >= 2 and isinstance(pushes[-2], str) and isinstance(pushes[-1], str):
                full = f"{pushes[-2]}.{pushes[-1]}"
                names.add(full)
                pushes[-2:] = [("G", full)]
            else:
                names.add("<unresolved STACK_GLOBAL>")
                pushes[-2:] = [None]
        elif name == "TUPLE2" and len(pushes) >= 3 and pushes[-3] in GETATTR and isinstance(pushes[-2], tuple) \
                and isinstance(pushes[-1], str):
            # getattr(<global>, "<name>"): how enum members (Python < 3.12) and bound methods are pickled
            names.add(f"getattr({pushes[-2][1]}, {pushes[-1]!r})")
            pushes.append(None)
        elif name in ("BINPERSID", "PERSID"):
            # torch: ('storage', <storage class>, key, location, numel): record the storage locations
            for value in pushes[-7:]:
                if isinstance(value, str) and re.fullmatch(r"cpu|cuda(:\d+)?|mps|meta|xpu(:\d+)?", value):
                    names.add(f"storage location {value!r}")
            pushes.append(None)
        elif name in STRING_OPS:
            pushes.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
        elif name in GET_OPS:
            pushes.append(memo.get(arg))
        elif name == "MEMOIZE":
            memo[len(memo)] = pushes[-1] if pushes else None
        elif name in PUT_OPS:
            memo[arg] = pushes[-1] if pushes else None
        elif name in ("FRAME", "PROTO", "STOP"):
            pass
        else:
            pushes.append(None)
        if len(pushes) > 64:
            del pushes[:-8]
    return names


def roles(predictor: pathlib.Path) -> dict[str, bytes]:
    out = {}
    for rel, role in (("predictor.pkl", "predictor.pkl"), ("learner.pkl", "learner.pkl"),
                      ("models/trainer.pkl", "trainer.pkl"), ("models/NeuralNetFastAI/model.pkl", "model.pkl")):
        if (predictor / rel).exists():
            out[role] = (predictor / rel).read_bytes()
    internals = sorted(predictor.rglob("model-internals.pkl"))
    if internals:
        with zipfile.ZipFile(internals[0]) as z:
            (name,) = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            out["model-internals data.pkl"] = z.read(name)
    others = [p for p in predictor.glob("models/*/model.pkl") if p.parent.name != "NeuralNetFastAI"]
    if others:
        out["other model.pkl"] = b"".join(p.read_bytes() for p in others[:1])
    return out


def zoo_roles(predictor: pathlib.Path) -> dict[str, bytes]:
    """Every pickle of a zoo predictor by its path, and the fastai internals' data.pkl."""
    out = {str(p.relative_to(predictor)): p.read_bytes() for p in sorted(predictor.rglob("*.pkl"))
           if p.name != "model-internals.pkl"}
    for internals in sorted(predictor.rglob("model-internals.pkl")):
        with zipfile.ZipFile(internals) as z:
            (name,) = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            out[f"{internals.parent.relative_to(predictor)}/model-internals data.pkl"] = z.read(name)
    return out


def is_zoo(golden: pathlib.Path) -> bool:
    return json.loads((golden / "writer.json").read_text()).get("kind") == "zoo"


def du(path: pathlib.Path) -> str:
    try:
        return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    except (subprocess.CalledProcessError, FileNotFoundError, IndexError):
        return "?"


def build_seconds() -> dict[str, str]:
    """Venv build durations (ENVS/golden-<id>/.build-seconds), remembered in build-seconds.json so that they
    survive deleting a writer's venv (the CUDA ones are several GB)."""
    cache = STATUS.parent / "build-seconds.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    for env in ENVS.glob("golden-*") if ENVS.exists() else []:
        if (env / ".build-seconds").exists():
            known[env.name[len("golden-"):]] = (env / ".build-seconds").read_text().strip()
    cache.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
    return known


def golden_rows() -> list[str]:
    lines = ["| writer | Python | torch | numpy | pandas | scikit-learn | fastai | fastcore | AutoGluon | trained with ag_torchfix "
             "| golden size | model-internals.pkl | venv build s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in sorted(p for p in GOLDENS.iterdir() if (p / "writer.json").exists()) if GOLDENS.exists() else []:
        w = json.loads((d / "writer.json").read_text())
        if w.get("kind") == "zoo":
            continue
        pk = w.get("packages", {})
        internals = sorted(d.rglob("model-internals.pkl"))
        size = f"{internals[0].stat().st_size / 1024:.0f} KiB" if internals else "-"
        build_s = build_seconds().get(d.name, "-")
        fastai = pk.get("fastai") or "-"
        if pk.get("fasttransform"):
            fastai += f" (fasttransform {pk['fasttransform']})"
        lines.append(f"| {d.name} | {w['python'].split()[0]} | {pk.get('torch')} | {pk.get('numpy')} | "
                     f"{pk.get('pandas')} | {pk.get('scikit-learn')} | {fastai} | {pk.get('fastcore')} | {pk.get('autogluon.tabular')} | "
                     f"{'yes' if w.get('trained_with_ag_torchfix') else 'no'} | {du(d)} | {size} | {build_s} |")
    return lines


def zoo_rows() -> list[str]:
    lines = ["| zoo golden | written by venv | Python | numpy | pandas | scikit-learn | LightGBM | CatBoost | XGBoost | "
             "torch | golden size | largest file |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in sorted(p for p in GOLDENS.iterdir() if (p / "writer.json").exists()) if GOLDENS.exists() else []:
        w = json.loads((d / "writer.json").read_text())
        if w.get("kind") != "zoo":
            continue
        pk = w.get("packages", {})
        largest = max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        env = w.get("env", "-") + (" (ag_torchfix installed, blocked)" if w.get("ag_torchfix_installed_blocked") else "")
        lines.append(f"| {d.name} | {env} | {w['python'].split()[0]} | {pk.get('numpy')} | {pk.get('pandas')} | "
                     f"{pk.get('scikit-learn')} | {pk.get('lightgbm')} | {pk.get('catboost')} | "
                     f"{pk.get('xgboost-cpu') or pk.get('xgboost')} | {pk.get('torch')} | {du(d)} | "
                     f"{largest.relative_to(d / 'predictor')} ({largest.stat().st_size / 1024:.0f} KiB) |")
    return lines


def globals_tables(zoo: bool = False) -> list[str]:
    reference = ZOO_REFERENCE if zoo else REFERENCE
    goldens = sorted(p for p in GOLDENS.iterdir() if (p / "predictor").is_dir() and is_zoo(p) == zoo) \
        if GOLDENS.exists() else []
    found = {d.name: {role: pickle_globals(data) for role, data in (zoo_roles if zoo else roles)(d / "predictor").items()}
             for d in goldens}
    if reference not in found:
        return [f"(no {reference} golden yet: GLOBAL differences not computed)"]
    ref = found[reference]
    all_roles = sorted({r for v in found.values() for r in v})
    lines = [f"GLOBAL names (plus `getattr(global, name)` calls and torch storage locations) in each writer's files "
             f"that {reference}'s files of the same role do not hold "
             f"(and, after `minus`, names {reference} holds that the writer does not):", ""]
    for role in all_roles:
        lines += [f"**{role}**", "", "| writer | not in " + reference + " | minus |", "| --- | --- | --- |"]
        base = ref.get(role, set())
        for writer, per_role in found.items():
            if writer == reference or role not in per_role:
                continue
            extra, missing = sorted(per_role[role] - base), sorted(base - per_role[role])
            if extra or missing:
                lines.append(f"| {writer} | {', '.join(f'`{n}`' for n in extra) or '-'} | "
                             f"{', '.join(f'`{n}`' for n in missing) or '-'} |")
        lines.append("")
    return lines


def main(argv: list[str]) -> int:
    body = ["## Goldens (generated by tools/goldens/report.py)", "", *golden_rows(), "",
            "## Zoo goldens (generated by tools/goldens/report.py)", "", *zoo_rows(), ""]
    if "--globals" in argv:
        body += ["## Pickled GLOBAL names that differ from " + REFERENCE, "", *globals_tables()]
        body += ["## Zoo goldens: pickled GLOBAL names that differ from " + ZOO_REFERENCE, "", *globals_tables(zoo=True)]
    text = STATUS.read_text() if STATUS.exists() else f"# Golden predictors: status\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    STATUS.write_text(head + BEGIN + "\n" + "\n".join(body) + "\n" + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
