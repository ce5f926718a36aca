"""make bench: ag_torchfix against the original, side by side in one run, as ratios.

Measures (alternating runs, medians):
1. import cost: a fresh interpreter importing ag_torchfix vs one that imports nothing;
2. model-internals.pkl: ag_torchfix.load_learner vs fastai's load_learner (in process);
3. TabularPredictor.load + predict_proba in a fresh process, with vs without the package;
4. ag-torchfix scan of a bagged predictor's fastai internals vs torch's get_unsafe_globals_in_checkpoint;
5. strict vs ordinary TabularPredictor.load + predict_proba of a bagged, stacked zoo predictor.
Targets: import adds < 10 ms; internals load <= 2x; whole load+predict <= 1.10x; scan not slower;
strict <= 1.25x.
Writes the table to stdout and benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
ENV = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"}


def fresh(code: str) -> float:
    """Seconds a fresh interpreter reports for ``code`` (it prints the number)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def wall(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, capture_output=True, env=ENV, check=True)
    return time.perf_counter() - t


def alternate(a, b, n: int) -> tuple[float, float]:
    xs, ys = [], []
    for _ in range(n):
        xs.append(a())
        ys.append(b())
    return statistics.median(xs), statistics.median(ys)


def bench_import(n: int) -> list[tuple]:
    timed = "import time; t=time.perf_counter(); import ag_torchfix; print(time.perf_counter()-t)"
    in_process = statistics.median(fresh(timed) for _ in range(n))
    with_pkg, without = alternate(lambda: wall([sys.executable, "-c", "import ag_torchfix"]),
                                  lambda: wall([sys.executable, "-c", "pass"]), n)
    return [
        ("`import ag_torchfix` (in a fresh interpreter)", f"{in_process * 1e3:.2f} ms", "-", "-", "< 10 ms"),
        ("interpreter start + import vs bare start", f"{with_pkg * 1e3:.1f} ms", f"{without * 1e3:.1f} ms",
         f"+{(with_pkg - without) * 1e3:.1f} ms", "< 10 ms"),
    ]


def bench_internals(predictor: pathlib.Path, n: int) -> list[tuple]:
    import warnings

    from fastai.learner import load_learner as fastai_load_learner

    import ag_torchfix

    warnings.filterwarnings("ignore")
    file = next(predictor.rglob("model-internals.pkl"))
    ag_torchfix.load_learner(file), fastai_load_learner(file)  # warm imports and caches

    def timed(fn):
        def run():
            t = time.perf_counter()
            fn(file)
            return time.perf_counter() - t
        return run

    secure, original = alternate(timed(ag_torchfix.load_learner), timed(fastai_load_learner), n)
    floor, _ = alternate(timed(_torch_weights_only_part()), timed(fastai_load_learner), n)
    return [("load model-internals.pkl", f"{secure * 1e3:.1f} ms", f"{original * 1e3:.1f} ms",
             f"{secure / original:.2f}x", "<= 2x"),
            ("... of which torch's own weights-only unpickler", f"{floor * 1e3:.1f} ms", f"{original * 1e3:.1f} ms",
             f"{floor / original:.2f}x", "-")]


def _torch_weights_only_part():
    """torch.load(weights_only=True) under an already-built scope: the part ag_torchfix cannot speed up."""
    import io
    import zipfile

    import torch

    from ag_torchfix import pickle_scan, secure_load, torch_scope

    def run(file):
        if file not in _scopes:
            with zipfile.ZipFile(file) as z:
                (member,) = [m for m in z.namelist() if m.endswith("/data.pkl")]
                _scopes[file] = secure_load._scope_for(pickle_scan.scan(io.BytesIO(z.read(member))), {})
        with torch_scope.active(_scopes[file]):
            return torch.load(file, map_location="cpu", weights_only=True)

    _scopes: dict = {}
    return run


PREDICT = """
import sys, time
if sys.argv[2] == "with":
    import ag_torchfix
sys.path.insert(0, {tests!r})
from autogluon.tabular import TabularPredictor
from helpers import make_table
data = make_table(200, "binary", seed=11).drop(columns=["label"])
t0, c0 = time.perf_counter(), time.process_time()
p = TabularPredictor.load(sys.argv[1], verbosity=0)
p.predict_proba(data, model="NeuralNetFastAI")
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def fresh_process_rows(code: str, predictor: pathlib.Path, modes: tuple[str, str], title: str, target: str,
                       n: int) -> list[tuple]:
    """Wall and CPU time a fresh process reports for ``code`` in two modes, alternating (CPU is steadier)."""
    samples: dict[str, list] = {mode: [] for mode in modes}
    for _ in range(n):
        for mode in modes:
            out = subprocess.run([sys.executable, "-c", code, str(predictor), mode], capture_output=True, text=True,
                                 env=ENV, check=True).stdout.strip().splitlines()[-1]
            samples[mode].append(tuple(float(x) for x in out.split()))
    rows = []
    for label, k in (("wall", 0), ("CPU", 1)):
        ours, theirs = (statistics.median(x[k] for x in samples[mode]) for mode in modes)
        rows.append((f"{title} ({label})", f"{ours * 1e3:.0f} ms", f"{theirs * 1e3:.0f} ms", f"{ours / theirs:.2f}x",
                     target))
    return rows


def bench_predictor(predictor: pathlib.Path, n: int) -> list[tuple]:
    return fresh_process_rows(PREDICT.format(tests=str(ROOT / "tests")), predictor, ("with", "without"),
                              "TabularPredictor.load + predict_proba, fresh process", "<= 1.10x", n)


def bench_scan(bagged: pathlib.Path, n: int) -> list[tuple]:
    """ag-torchfix scan's per-file work vs torch's get_unsafe_globals_in_checkpoint, same files."""
    import torch

    from ag_torchfix import scanner

    files = sorted(bagged.rglob("model-internals.pkl"))
    size_mb = sum(f.stat().st_size for f in files) / 1e6

    def ours():
        t = time.perf_counter()
        reports = [scanner.scan_file(str(f)) for f in files]
        assert all(r.verdict == "allowed" for r in reports)
        return time.perf_counter() - t

    def theirs():
        t = time.perf_counter()
        for f in files:
            torch.serialization.get_unsafe_globals_in_checkpoint(f)
        return time.perf_counter() - t

    ours(), theirs()
    a, b = alternate(ours, theirs, n)
    return [(f"scan {len(files)} fastai internals files ({size_mb:.1f} MB) of a bagged predictor",
             f"{a * 1e3:.1f} ms ({size_mb / a:.0f} MB/s)", f"{b * 1e3:.1f} ms ({size_mb / b:.0f} MB/s)",
             f"{a / b:.2f}x", "<= 1x (torch's get_unsafe_globals_in_checkpoint)")]


STRICT_PREDICT = """
import sys, time
import ag_torchfix
sys.path.insert(0, {tests!r})
from autogluon.tabular import TabularPredictor
from helpers import make_table
data = make_table(200, "binary", seed=11).drop(columns=["label"])
t0, c0 = time.perf_counter(), time.process_time()
with ag_torchfix.strict(sys.argv[2] == "strict"):
    p = TabularPredictor.load(sys.argv[1], verbosity=0)
    p.predict_proba(data)
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def bench_strict(zoo: pathlib.Path, n: int) -> list[tuple]:
    """Strict vs ordinary TabularPredictor.load + predict_proba of the bagged, stacked zoo predictor."""
    return fresh_process_rows(STRICT_PREDICT.format(tests=str(ROOT / "tests")), zoo, ("strict", "ordinary"),
                              "strict vs ordinary load + predict_proba, bagged stacked zoo, fresh process",
                              "<= 1.25x", n)


def train_zoo(dest: pathlib.Path) -> pathlib.Path:
    from helpers import fit_zoo

    import ag_torchfix  # noqa: F401

    fit_zoo(dest, "binary", bag=True, stack=True)
    return dest


def train_bagged(dest: pathlib.Path) -> pathlib.Path:
    from autogluon.tabular import TabularPredictor
    from helpers import make_table

    import ag_torchfix  # noqa: F401

    TabularPredictor(label="label", path=str(dest), verbosity=0).fit(
        make_table(400, "binary"), hyperparameters={"FASTAI": [{"epochs": 2}, {"epochs": 2, "layers": [50, 25]}]},
        num_bag_folds=4, num_bag_sets=1, fit_weighted_ensemble=False)
    return dest


def train(dest: pathlib.Path) -> pathlib.Path:
    from autogluon.tabular import TabularPredictor
    from helpers import make_table

    import ag_torchfix  # noqa: F401

    TabularPredictor(label="label", path=str(dest), verbosity=0).fit(
        make_table(400, "binary"), hyperparameters={"FASTAI": {"epochs": 3}}, fit_weighted_ensemble=False)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    n_import, n_load, n_predict = (10, 10, 3) if args.quick else (40, 30, 15)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = train(pathlib.Path(tmp) / "predictor")
        bagged = train_bagged(pathlib.Path(tmp) / "bagged")
        zoo = train_zoo(pathlib.Path(tmp) / "zoo")
        rows = (bench_import(n_import) + bench_internals(predictor, n_load) + bench_predictor(predictor, n_predict)
                + bench_scan(bagged, n_load) + bench_strict(zoo, n_predict))
    versions = {}
    for name in ("torch", "fastai", "autogluon.tabular"):
        from importlib.metadata import version

        versions[name] = version(name)
    header = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in versions.items())
              + f"; medians of alternating runs (import {n_import}, internals {n_load}, predictor {n_predict}).")
    lines = [header, "", "| measurement | ag_torchfix | original | ratio | target |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    table = "\n".join(lines)
    print(table)
    (ROOT / "benchmarks" / "results.md").write_text(table + "\n")
    print(json.dumps({"rows": rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
