#!/usr/bin/env python3
"""Import the GPU-written golden (shared/goldens/gpu-py3.12.3-torch2.11.0-cu130, see its ../README.md) into the
golden layout: tools/goldens/import_gpu.py SRC OUTDIR WRITER_ID

Run it with a writer venv's Python (upstream AutoGluon, no ag_torchfix: AG_TORCHFIX_AUTOLOAD=0), e.g.
  AG_TORCHFIX_AUTOLOAD=0 ~/.cache/ag-torchfix/envs/golden-py3.11.7/bin/python tools/goldens/import_gpu.py \
      /work/shared/goldens/gpu-py3.12.3-torch2.11.0-cu130 tests/goldens py3.12.3-torch2.11-cu130

- predictor/: SRC/pred trimmed like write_golden.py's (each utils/ folder removed if load+predict don't change)
- test.csv: SRC/test.pkl (a pickled DataFrame) written with to_csv(index=False)
- expected.json: SRC/ref.npy (predict_proba in the training process), predict = argmax over the predictor's
  class_labels; checked against this stack's upstream load+predict on pd.read_csv(test.csv) (and on test.pkl)
- writer.json: the README's facts, plus the predictor's metadata.json versions
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import stat
import sys
import tempfile

import numpy as np
import pandas as pd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from write_golden import install_atomically, load_predictor, reference, trim, versions  # noqa: E402

README_FACTS = {
    "python": "3.12.3",
    "packages": {"torch": "2.11.0+cu130", "fastai": "2.8.7", "fastcore": "1.14.5", "autogluon.tabular": "1.6.3",
                 "autogluon.core": "1.6.3", "numpy": "2.5.2", "pandas": "2.3.3", "scikit-learn": "1.9.1"},
    "trained_with_ag_torchfix": True,
    "hardware": "NVIDIA H200, num_gpus=1; model-internals.pkl holds storages at locations cuda, cuda:0 and cpu",
}
TOL = 1e-5


def writable(path: pathlib.Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR | (stat.S_IXUSR if p.is_dir() else 0))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, outdir, writer_id = pathlib.Path(argv[0]), pathlib.Path(argv[1]), argv[2]
    if os.environ.get("AG_TORCHFIX_AUTOLOAD") != "0" or "ag_torchfix" in sys.modules:
        raise SystemExit("run with AG_TORCHFIX_AUTOLOAD=0 and without ag_torchfix")
    ref = np.load(src / "ref.npy")
    test = pd.read_pickle(src / "test.pkl")
    notes = []
    with tempfile.TemporaryDirectory(prefix=f"golden-{writer_id}-") as tmp:
        work = pathlib.Path(tmp) / writer_id
        work.mkdir()
        shutil.copytree(src / "pred", work / "predictor")
        writable(work / "predictor")
        test.to_csv(work / "test.csv", index=False)
        removed = trim(work / "predictor", work / "test.csv")
        predictor = load_predictor(str(work / "predictor"))
        labels = [str(c) for c in predictor.class_labels]
        # this stack, upstream loader, on the frame read back from test.csv and on test.pkl's own frame
        here_csv = reference(work / "predictor", work / "test.csv")
        csv_values = np.asarray(here_csv["predict_proba"]["values"])
        pkl_values = predictor.predict_proba(test).to_numpy(dtype=np.float64)
        if ref.shape != csv_values.shape:
            raise SystemExit(f"ref.npy has shape {ref.shape}, predict_proba on test.csv {csv_values.shape}")
        d_csv, d_pkl = float(np.abs(csv_values - ref).max()), float(np.abs(pkl_values - ref).max())
        print(f"import_gpu: max |predict_proba - ref.npy|: {d_csv:.3g} on test.csv, {d_pkl:.3g} on test.pkl")
        if d_csv > TOL:
            notes.append(f"test.csv differs from test.pkl's frame: max |d| {d_csv:.3g} on test.csv vs {d_pkl:.3g}")
            shutil.copy2(src / "test.pkl", work / "test.pkl")
        expected = {
            "predict": [labels[i] for i in ref.argmax(axis=1)],
            "predict_proba": {"columns": labels, "values": [[float(v) for v in row] for row in ref.astype(np.float64)]},
        }
        if expected["predict"] != here_csv["predict"]:
            notes.append("argmax of ref.npy differs from this stack's predict on test.csv")
        (work / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        metadata = json.loads((work / "predictor" / "metadata.json").read_text())
        info = {
            "writer_id": writer_id,
            **README_FACTS,
            "metadata_json_packages": {k: metadata.get("packages", {}).get(k) for k in
                                       ("torch", "fastai", "fastcore", "fasttransform", "autogluon.tabular",
                                        "autogluon.core", "numpy", "pandas", "scikit-learn", "ag-torchfix")},
            "source": str(src),
            "trimmed": removed,
            "imported_with": {"python": sys.version, "packages": versions()},
            "max_abs_diff_vs_ref": {"test.csv": d_csv, "test.pkl": d_pkl},
            "notes": notes,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (work / "writer.json").write_text(json.dumps(info, indent=1) + "\n")
        install_atomically(work, outdir / writer_id)
    print(f"import_gpu: {outdir / writer_id} (removed: {', '.join(removed) or 'nothing'}; notes: {notes or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
