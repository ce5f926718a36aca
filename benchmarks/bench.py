"""make bench: ag_torchfix against the original, side by side in one run, as ratios.

Measures (alternating runs, medians):
1. import cost: a fresh interpreter importing ag_torchfix vs one that imports nothing;
2. model-internals.pkl: ag_torchfix.load_learner (first load of the bytes, and again: verdicts are remembered by
   digest) vs torch's own weights-only unpickling of the same file under the same allowlist, and vs fastai's
   full-pickle load_learner;
3. TabularPredictor.load + predict_proba in a fresh process, with vs without the package;
4. lock trust: hashing every file of a bagged predictor (``ag-torchfix verify``) on top of load + predict_proba;
5. ag-torchfix scan of a bagged predictor's fastai internals vs torch's get_unsafe_globals_in_checkpoint; a
   directory of pickles vs picklescan (fresh processes); one small pickle (fresh process);
6. strict vs ordinary TabularPredictor.load + predict_proba of a bagged, stacked zoo predictor, and the strict
   allowlist's size;
7. memory: peak RSS above the baseline while the loader and the scanner refuse adversarial inputs of <= 10 MB.
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


def wall(args: list[str], ok=(0,)) -> float:
    t = time.perf_counter()
    out = subprocess.run(args, capture_output=True, env=ENV)
    if out.returncode not in ok:
        raise RuntimeError(f"{args}: exit {out.returncode}: {out.stderr[-500:]}")
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
    from ag_torchfix.load import secure_load

    warnings.filterwarnings("ignore")
    file = next(predictor.rglob("model-internals.pkl"))
    ag_torchfix.load_learner(file), fastai_load_learner(file)  # warm imports and caches

    def timed(fn, cold=False):
        def run():
            if cold:
                secure_load._verdicts.clear()  # a file never seen before: the full check
            t = time.perf_counter()
            fn(file)
            return time.perf_counter() - t
        return run

    floor = _torch_weights_only_part()
    cold, floor_cold = alternate(timed(ag_torchfix.load_learner, cold=True), timed(floor), n)
    warm, floor_warm = alternate(timed(ag_torchfix.load_learner), timed(floor), n)
    secure, original = alternate(timed(ag_torchfix.load_learner, cold=True), timed(fastai_load_learner), n)
    return [("load model-internals.pkl, first time (full check) vs torch's own weights-only unpickling",
             f"{cold * 1e3:.1f} ms", f"{floor_cold * 1e3:.1f} ms", f"{cold / floor_cold:.2f}x", "<= 1.3x"),
            ("load model-internals.pkl again (same bytes: verdict remembered) vs torch's own",
             f"{warm * 1e3:.1f} ms", f"{floor_warm * 1e3:.1f} ms", f"{warm / floor_warm:.2f}x", "-"),
            ("load model-internals.pkl, first time, vs fastai's full-pickle load_learner", f"{secure * 1e3:.1f} ms",
             f"{original * 1e3:.1f} ms", f"{secure / original:.2f}x", "-")]


def _torch_weights_only_part():
    """torch.load(weights_only=True) under an already-built scope: the part ag_torchfix cannot speed up."""
    import torch

    from ag_torchfix.policy import verdicts as policy
    from ag_torchfix.load import secure_load, torch_scope

    def run(file):
        if file not in _scopes:
            with open(file, "rb") as fh:
                _scopes[file] = secure_load._scope_cached(frozenset(policy.check_internals(fh).scan.globals))
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


HASH_PREDICT = """
import sys, time
sys.path.insert(0, {tests!r})
import ag_torchfix
from ag_torchfix import lock
from autogluon.tabular import TabularPredictor
from helpers import make_table
data = make_table(200, "binary", seed=11).drop(columns=["label"])
t0, c0 = time.perf_counter(), time.process_time()
if sys.argv[2] == "verify":
    assert lock.verify(sys.argv[1]).ok
p = TabularPredictor.load(sys.argv[1], verbosity=0)
p.predict_proba(data)
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def bench_hashing(bagged: pathlib.Path, n: int) -> list[tuple]:
    """What content-bound trust costs: hashing every file of a bagged predictor against its lock."""
    from ag_torchfix.trust import lock

    lock.write(str(bagged))
    size = sum(f.stat().st_size for f in bagged.rglob("*") if f.is_file()) / 1e6
    return fresh_process_rows(HASH_PREDICT.format(tests=str(ROOT / "tests")), bagged, ("verify", "plain"),
                              f"hash every file ({size:.1f} MB) against its lock + load + predict_proba, bagged",
                              "<= 1.05x", n)


def bench_scan(bagged: pathlib.Path, n: int) -> list[tuple]:
    """ag-torchfix scan's per-file work vs torch's get_unsafe_globals_in_checkpoint, same files."""
    import torch

    from ag_torchfix.cli import scanner

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


def bench_scan_cli(zoo: pathlib.Path, n: int) -> list[tuple]:
    """The command users run in CI, fresh processes: a directory of pickles vs picklescan, one small pickle."""
    import shutil

    rows = []
    # An installed package has its bytecode compiled (pip compiles on install; picklescan's is): so does ours here,
    # even where PYTHONDONTWRITEBYTECODE keeps imports from writing it
    import compileall

    compileall.compile_dir(str(ROOT / "ag_torchfix"), quiet=1)
    small = zoo.parent / "small.pkl"
    small.write_bytes(__import__("pickle").dumps({"a": [1, 2, 3]}))
    ours_small = statistics.median(wall([sys.executable, "-m", "ag_torchfix", "scan", str(small)], ok=(0, 1))
                                   for _ in range(n))
    rows.append(("`ag-torchfix scan` of one small pickle (fresh process, wall)", f"{ours_small * 1e3:.0f} ms", "-",
                 "-", "< 300 ms"))
    picklescan = shutil.which("picklescan", path=os.path.dirname(sys.executable))
    pickles = [p for p in zoo.rglob("*.pkl")]
    if picklescan is None:
        rows.append((f"scan a directory of {len(pickles)} pickles vs picklescan", "-", "picklescan not installed",
                     "-", "<= 1x"))
        return rows
    a, b = alternate(lambda: wall([sys.executable, "-m", "ag_torchfix", "scan", str(zoo)], ok=(0, 1, 2, 3)),
                     lambda: wall([picklescan, "--path", str(zoo)], ok=(0, 1, 2)), n)
    rows.append((f"scan a directory of {len(pickles)} pickles (a zoo predictor) vs picklescan (fresh processes, wall)",
                 f"{a * 1e3:.0f} ms", f"{b * 1e3:.0f} ms", f"{a / b:.2f}x", "<= 1x"))
    # picklescan's own test material, when a checkout of it is at hand (it is not redistributed here):
    # AG_TORCHFIX_PEER_CORPUS=/path/to/picklescan/tests/data make bench
    corpus = os.environ.get("AG_TORCHFIX_PEER_CORPUS")
    if corpus and os.path.isdir(corpus):
        count = sum(1 for p in pathlib.Path(corpus).rglob("*") if p.is_file())
        a, b = alternate(lambda: wall([sys.executable, "-m", "ag_torchfix", "scan", corpus], ok=(0, 1, 2, 3)),
                         lambda: wall([picklescan, "--path", corpus], ok=(0, 1, 2)), n)
        rows.append((f"scan picklescan's own test material ({count} files) vs picklescan (fresh processes, wall)",
                     f"{a * 1e3:.0f} ms", f"{b * 1e3:.0f} ms", f"{a / b:.2f}x", "<= 1x"))
    # The same predictor's pickles without its fastai internals (before issue 21 judging internals imported fastai
    # and torch; now both rows should read alike).
    plain = zoo.parent / "plain-pickles"
    plain.mkdir(exist_ok=True)
    for i, p in enumerate(p for p in pickles if p.name != "model-internals.pkl"):
        shutil.copyfile(p, plain / f"{i}.pkl")
    a, b = alternate(lambda: wall([sys.executable, "-m", "ag_torchfix", "scan", str(plain)], ok=(0, 1, 2, 3)),
                     lambda: wall([picklescan, "--path", str(plain)], ok=(0, 1, 2)), n)
    rows.append((f"scan the {len(list(plain.iterdir()))} of them that are not fastai internals vs picklescan "
                 "(fresh processes, wall)", f"{a * 1e3:.0f} ms", f"{b * 1e3:.0f} ms", f"{a / b:.2f}x", "<= 1x"))
    return rows


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


def bench_strict_allowlist() -> list[tuple]:
    from ag_torchfix.policy import allowlist

    uses = {u: sum(e.use == u for e in allowlist.STRICT) for u in (allowlist.CONSTRUCT, allowlist.CALL,
                                                                    allowlist.REFERENCE)}
    return [("strict allowlist size (entries + shims)", f"{len(allowlist.STRICT)} + {len(allowlist.STRICT_SHIMS)} "
             f"({uses['construct']} construct, {uses['call']} call, {uses['reference']} reference)", "-", "-", "-")]


MEMORY = """
import sys, warnings
warnings.filterwarnings("ignore")
import ag_torchfix, torch
from ag_torchfix import scanner
import fastai.learner

def peak():  # this process's own high-water mark (ru_maxrss would carry the parent's across exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

before = peak()
if sys.argv[2] == "loader":
    try:
        ag_torchfix.load_learner(sys.argv[1])
    except ag_torchfix.SecureLoadError:
        pass
else:
    scanner.scan_file(sys.argv[1])
print(peak() - before)
"""


def adversarial_inputs(genuine: pathlib.Path, work: pathlib.Path) -> dict[str, pathlib.Path]:
    """Inputs of <= 10 MB built to make a loader or scanner allocate far more than they weigh."""
    import struct
    import zipfile

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import rewrite_archive

    proto = b"\x80\x02"
    size = (10 << 20) - (256 << 10)  # the payload, inside an archive that holds the genuine records too
    linear = b"ctorch.nn.modules.linear\nLinear\nq\x00"
    payloads = {
        "MARK flood": proto + b"(" * (size - 3) + b".",
        "EMPTY_DICT flood": proto + b"}" * (size - 3) + b".",
        "EMPTY_SET flood": proto + b"\x8f" * (size - 3) + b".",
        "memo flood": proto + b"]" + b"".join(b"r" + struct.pack("<I", i) for i in range(size // 5 - 2)) + b".",
        "module BUILD flood": proto + linear + b"0" + b"h\x00)\x81}b" * (size // 7 - 10) + b".",
        "object array list": proto + b"]" + b"(" + b"N" * (size - 10) + b"e.",
    }
    inputs = {}
    for name, payload in payloads.items():
        inputs[name] = work / f"{name.replace(' ', '-')}.pkl"
        rewrite_archive(genuine, inputs[name], payload)
    bomb = work / "deflate-bomb.pkl"
    with zipfile.ZipFile(genuine) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data/0"):  # 2 GiB of zeros, deflated to ~2 MB
                target = zipfile.ZipInfo(info.filename)
                target.compress_type = zipfile.ZIP_DEFLATED
                with zout.open(target, "w", force_zip64=True) as out:
                    out.write(data)
                    chunk = b"\0" * (1 << 24)
                    for _ in range(128):
                        out.write(chunk)
            else:
                zout.writestr(zipfile.ZipInfo(info.filename), data)
    inputs["deflate bomb (2 GiB record)"] = bomb
    return inputs


def bench_memory(predictor: pathlib.Path) -> list[tuple]:
    genuine = next(predictor.rglob("model-internals.pkl"))
    work = predictor.parent / "adversarial"
    work.mkdir(exist_ok=True)
    inputs = adversarial_inputs(genuine, work)
    worst = {"loader": (0, ""), "scanner": (0, "")}
    for name, path in inputs.items():
        assert path.stat().st_size <= 10 << 20, name
        for role in worst:
            out = subprocess.run([sys.executable, "-c", MEMORY, str(path), role], capture_output=True, text=True,
                                 env=ENV, timeout=900)
            peak = int(out.stdout.strip().splitlines()[-1]) // 1024 if out.returncode == 0 else 10 ** 6
            if peak >= worst[role][0]:
                worst[role] = (peak, name)
    return [(f"peak RSS above baseline, worst of {len(inputs)} adversarial inputs <= 10 MB: {role} ({name})",
             f"{peak} MiB", "-", "-", "<= 512 MiB") for role, (peak, name) in worst.items()]


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
                + bench_hashing(bagged, n_predict) + bench_scan(bagged, n_load) + bench_scan_cli(zoo, n_predict)
                + bench_strict(zoo, n_predict) + bench_strict_allowlist() + bench_memory(predictor))
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
