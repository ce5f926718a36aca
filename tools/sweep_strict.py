"""Train AutoGluon predictors over the CPU model zoo and record what their plain pickles reference.

Candidates for the strict allowlist (``make sweep-strict``): every global in every pickle AutoGluon
reads when loading a predictor (predictor.pkl, learner.pkl, trainer.pkl, model.pkl files, utils/),
with how it is used and which files use it.  Like tools/sweep_exports.py, this only reads files it
has just written; each candidate is reviewed before it enters ag_torchfix/policy/allowlist.py (STRICT).

Usage: python tools/sweep_strict.py OUT.json [--quick]
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from helpers import fit_zoo  # noqa: E402  (the recipe the tests train too)
from sweep_exports import Recorder  # noqa: E402

def configs(quick: bool):
    yield dict(name="binary-stacked", problem_type="binary", bag=True, stack=True, refit=True)
    if quick:
        return
    yield dict(name="multiclass-stacked", problem_type="multiclass", bag=True, stack=True)
    yield dict(name="regression-stacked", problem_type="regression", bag=True, stack=True, refit=True)
    yield dict(name="quantile", problem_type="quantile", bag=False)
    yield dict(name="binary-plain", problem_type="binary", bag=False)


def fit(cfg: dict, path: pathlib.Path) -> None:
    fit_zoo(path, cfg["problem_type"], bag=cfg.get("bag", False), stack=cfg.get("stack", False),
            refit=cfg.get("refit", False))


def main() -> None:
    import ag_torchfix  # noqa: F401
    from ag_torchfix.formats import pickle_scan
    from ag_torchfix.cli import scanner

    out = pathlib.Path(sys.argv[1])
    report: dict = {"configs": {}, "globals": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in configs("--quick" in sys.argv):
            path = pathlib.Path(tmp) / cfg["name"]
            fit(cfg, path)
            files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.name != "model-internals.pkl"
                     and scanner._is_candidate(str(p))]
            models = sorted({scanner.model_of(str(p)) or "?" for p in files})
            report["configs"][cfg["name"]] = {"files": len(files), "models": models}
            recorder = Recorder()
            for file in files:
                with open(file, "rb") as fh:
                    result = pickle_scan.scan(fh)
                with open(file, "rb") as fh:  # our own file: record the dynamic facts the scan cannot see
                    recorder.pickle_module().Unpickler(fh).load()
                rel = str(file.relative_to(path))
                for name, uses in result.globals.items():
                    entry = report["globals"].setdefault(name, {"uses": [], "files": []})
                    entry["uses"] = sorted(set(entry["uses"]) | uses)
                    if len(entry["files"]) < 5 and rel not in entry["files"]:
                        entry["files"].append(rel)
                for problem in result.problems:
                    report.setdefault("problems", []).append(f"{rel}: {problem}")
            for key, counter in (("getattr_pairs", recorder.getattr_pairs),
                                 ("defaultdict_factories", recorder.factories), ("partial_funcs", recorder.partials)):
                report.setdefault(key, {})
                for name in counter:
                    report[key].setdefault(name, []).append(cfg["name"])
            print(f"{cfg['name']}: {len(files)} pickles, {len(report['globals'])} globals so far", flush=True)
    report["globals"] = dict(sorted(report["globals"].items()))
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{len(report['globals'])} distinct globals -> {out}")


if __name__ == "__main__":
    main()
