"""make demo: the failure, the fix, and a refusal, each in a fresh process.

1. A predictor with NeuralNetFastAI, loaded under TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 without ag_torchfix: fails.
2. The same with ag_torchfix: loads through the secure loader and predicts.
3. A tampered copy (its model-internals.pkl runs a shell command under full pickle): refused, nothing runs.
4. The same tampered copy without ag_torchfix (upstream, unforced): the payload runs.
Each step checks its own outcome; the demo exits non-zero when any of them does not hold.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PROBE = textwrap.dedent(
    """
    import sys
    if sys.argv[2] == "with":
        import ag_torchfix
    sys.path.insert(0, {tests!r})
    from autogluon.tabular import TabularPredictor
    from helpers import make_table
    try:
        predictor = TabularPredictor.load(sys.argv[1], verbosity=0)
        proba = predictor.predict_proba(make_table(5, "binary", seed=7).drop(columns=["label"]), model="NeuralNetFastAI")
        print("OK: loaded and predicted; P(yes) =", [round(float(v), 3) for v in proba["yes"]])
    except Exception as exc:
        print(f"FAILED: {{type(exc).__module__}}.{{type(exc).__name__}}: {{exc}}")
    """
).format(tests=str(ROOT / "tests"))


def run(title: str, predictor: pathlib.Path, with_package: bool, expect: str, **env) -> list[str]:
    """Run one step in a fresh process; the problems with its outcome (none when it shows what it should)."""
    print(f"\n=== {title}")
    full_env = {k: v for k, v in os.environ.items() if k not in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "AG_TORCHFIX_TRUST")}
    full_env.update({"AG_TORCHFIX_AUTOLOAD": "0", **env})
    out = subprocess.run([sys.executable, "-c", PROBE, str(predictor), "with" if with_package else "without"],
                         capture_output=True, text=True, env=full_env, timeout=600)
    print(textwrap.indent((out.stdout + out.stderr[-2000:] if out.returncode else out.stdout).strip(), "    "))
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines or not lines[0].startswith(expect):
        return [f"step '{title}': expected a line starting with {expect!r}"]
    return []


def main() -> None:
    from autogluon.tabular import TabularPredictor
    from helpers import make_table, plant_os_system

    import ag_torchfix  # noqa: F401  (needed to train NeuralNetFastAI on legacy fastai stacks)

    work = pathlib.Path(tempfile.mkdtemp(prefix="ag-torchfix-demo-"))
    predictor = work / "predictor"
    print(f"Training a small predictor with NeuralNetFastAI in {predictor} ...")
    TabularPredictor(label="label", path=str(predictor), verbosity=0).fit(
        make_table(300, "binary"), hyperparameters={"FASTAI": {"epochs": 3}}, fit_weighted_ensemble=False)

    problems = run("1. TORCH_FORCE_WEIGHTS_ONLY_LOAD=1, without ag_torchfix", predictor, False, "FAILED:",
                   TORCH_FORCE_WEIGHTS_ONLY_LOAD="1")
    problems += run("2. TORCH_FORCE_WEIGHTS_ONLY_LOAD=1, with ag_torchfix", predictor, True, "OK:",
                    TORCH_FORCE_WEIGHTS_ONLY_LOAD="1")

    tampered = work / "tampered"
    shutil.copytree(predictor, tampered)
    marker = work / "PWNED"
    # hide `touch PWNED` in the fastai internals: it runs if the file is ever unpickled with full pickle
    plant_os_system(tampered / "models" / "NeuralNetFastAI" / "model-internals.pkl", marker)
    problems += run("3. a tampered copy, with ag_torchfix", tampered, True,
                    "FAILED: ag_torchfix.errors.DisallowedGlobalsError")
    print(f"\n    payload ran: {marker.exists()}")
    if marker.exists():
        problems.append("step 3: the payload ran with ag_torchfix")
    problems += run("4. the same tampered copy, without ag_torchfix (upstream AutoGluon)", tampered, False, "")
    print(f"\n    payload ran: {marker.exists()}")
    if not marker.exists():
        problems.append("step 4: the payload did not run upstream, so step 3 showed nothing")
    shutil.rmtree(work, ignore_errors=True)
    if problems:
        sys.exit("make demo: what it demonstrates does not hold:\n- " + "\n- ".join(problems))
    print("\nmake demo: every step showed what it should.")


if __name__ == "__main__":
    main()
