"""Coverage-guided fuzzing of the readers that see untrusted bytes (issue 11 item 5): ``make fuzz``.

    python tools/fuzz.py TARGET --seconds N [--predictor DIR ...]
    python tools/fuzz.py TARGET --reproduce FILE       # run one saved input and print what it does
    python tools/fuzz.py TARGET --line-coverage [--verbose]   # replay the corpus: lines of the package reached
    python tools/fuzz.py TARGET --outcomes             # replay the corpus: how the inputs ended (refusal reasons)

Targets and what each may raise for bad input (anything else is a finding):

    archive    archive.open_archive + read_record of every record         archive.ArchiveError
    scan       pickle_scan.scan (bytes and stream) and scan_all            nothing (errors go to result.error)
    internals  policy.check_internals                                      policy.Unreadable
    loader     secure_load.load_learner(BytesIO)                           errors.SecureLoadError subclasses
    strict     strict_mode.load_pickle                                     errors.SecureLoadError subclasses
               and StrictUnpickler(BytesIO).load()                         pickle.UnpicklingError or any Exception
    scanner    scanner.scan_file on a temporary file                       nothing
    materialize  materialize.materialize of a genuine learner's records     materialize.SchemaError
               after the input's edits (each 3 bytes: a position of the
               records graph, a replacement from a pool of hostile values)

A finding is also: a hang (an input using more than --timeout seconds of CPU; a Python-level hang is
interrupted by a SIGPROF timer, a native one by libFuzzer's own -timeout), a memory blow-up (peak RSS
more than --rss-mb above the RSS before the input, or a MemoryError anywhere in the exception chain:
the address space is capped with RLIMIT_AS), a crash (signal, abort), anything the file runs (an audit
hook watches for processes, sockets, file deletions) and, for ``scan``, a bytes/stream divergence.

Each finding is kept once per signature (target, kind, exception type, innermost package frame), with
its smallest input, under .cache/fuzz/findings/TARGET/: ``<sig>.bin`` is the fuzzer input, ``<sig>.json``
says what happened (and, for the targets whose first byte picks a file name, which one).

The work runs in a child process (atheris + libFuzzer) that the parent restarts after a crash, hang or
out-of-memory kill until the time is spent (libFuzzer writes that input as crash-*/timeout-*/oom-*); the
parent prints the summary (executions, coverage and features, findings) and writes it to
.cache/fuzz/summary-TARGET.json.  A crash-* file the worker did not die on was written by a forked child:
native.py's CatBoost sandbox forks and inherits libFuzzer's signal handlers, so a blob that crashes CatBoost
leaves one while the package refuses the file as designed; those are listed apart, not as findings.  Seeds are built from genuine
predictors: the ``--predictor`` directories, or the test suite's cached predictors (trained on first use
with tests/conftest.py ``cached_predictor``).  The corpus grows in .cache/fuzz/corpus/TARGET/ across runs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pathlib
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "fuzz"
TARGETS = ("archive", "scan", "internals", "loader", "strict", "scanner", "materialize")
GENUINE = WORK / "materialize-genuine"  # the genuine internals the materialize target edits
ARCHIVE_TARGETS = ("archive", "internals", "loader")
MAX_LEN = {"archive": 400_000, "internals": 400_000, "loader": 400_000, "scan": 200_000, "strict": 200_000,
           "scanner": 400_000, "materialize": 64}
MAX_SEED_PICKLE = 64 << 10  # AutoGluon pickles larger than this are not used as seeds (slow to mutate)

# strict: the first input byte picks the path below a predictor root that load_pickle is told about
STRICT_PATHS = ("predictor.pkl", "learner.pkl", "models/trainer.pkl", "models/M/model.pkl", "models/M/S1F1/model.pkl",
                "models/M/utils/model_template.pkl", "models/M/utils/oof.pkl", "models/M/info.pkl",
                "utils/attr/M/y_pred_proba_val.pkl", "elsewhere.pkl")
# scanner: the first byte picks the file name (bits 0-2) and strict=True (bit 3)
SCANNER_PATHS = ("predictor/models/M/model-internals.pkl", "predictor/models/M/model.pkl", "predictor/predictor.pkl",
                 "predictor/models/trainer.pkl", "loose/weights.pt", "loose/x.pkl", "predictor/models/M/utils/oof.pkl",
                 "predictor/learner.pkl")


# ==== seeds ============================================================================================

def default_predictors() -> list[pathlib.Path]:
    """The test suite's cached predictors (trained once per library stack, shared with ``make test``)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # noqa: E402  (tests/conftest.py: cached_predictor trains with the project's recipe)

    dirs = [conftest.cached_predictor("binary")]
    try:
        import catboost, lightgbm, xgboost  # noqa: F401,E401
    except ImportError:
        return dirs
    dirs.append(conftest.cached_predictor("zoo-multiclass"))  # every CPU model family: strict mode's seeds
    return dirs


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def collect_seeds(predictors: list[pathlib.Path]) -> tuple[list[bytes], list[tuple[str, bytes]]]:
    """(distinct model-internals.pkl archives, distinct (relative path, bytes) of other AutoGluon pickles)."""
    internals: dict[str, bytes] = {}
    pickles: dict[str, tuple[str, bytes]] = {}
    for root in predictors:
        for path in sorted(root.rglob("*.pkl")):
            data = path.read_bytes()
            if path.name == "model-internals.pkl":
                internals.setdefault(_digest(data), data)
            elif data[:1] == b"\x80" and len(data) <= MAX_SEED_PICKLE:
                pickles.setdefault(_digest(data), (path.relative_to(root).as_posix(), data))
    # a few dozen: every kind of file (by its name with the model replaced), smallest first
    by_kind: dict[str, list[tuple[str, bytes]]] = {}
    for rel, data in sorted(pickles.values(), key=lambda item: len(item[1])):
        kind = re.sub(r"models/[^/]+/", "models/M/", rel)
        kind = re.sub(r"/S\d+F\d+/", "/F/", kind) + ":" + rel.split("/")[1].split("_")[0] if "/" in rel else rel
        by_kind.setdefault(kind, []).append((rel, data))
    chosen = [items[0] for items in by_kind.values()]
    return list(internals.values())[:4], sorted(chosen, key=lambda item: item[0])[:32]


def strict_selector(rel: str) -> int:
    parts = rel.split("/")
    if rel in STRICT_PATHS[:3]:
        return STRICT_PATHS.index(rel)
    if parts[0] == "models" and parts[-1] == "model.pkl":
        return 3 if len(parts) == 3 else 4
    if parts[-1] in ("model_template.pkl", "oof.pkl"):
        return 5 if parts[-1] == "model_template.pkl" else 6
    if parts[-1] == "info.pkl":
        return 7
    if parts[0] == "utils":
        return 8
    return 9


def scanner_selector(rel: str, strict: bool) -> int:
    if rel.endswith("model-internals.pkl"):
        index = 0
    elif rel in ("predictor.pkl", "learner.pkl"):
        index = 2 if rel == "predictor.pkl" else 7
    elif rel == "models/trainer.pkl":
        index = 3
    elif rel.endswith("oof.pkl"):
        index = 6
    elif rel.startswith("models/"):
        index = 1
    else:
        index = 5
    return index | (8 if strict else 0)


def small_archives(internals: bytes) -> list[bytes]:
    """Torch-layout archives rebuilt from a genuine one with a few structural variations (all valid zips)."""
    records = parse_zip(internals)
    if not records:
        return []
    out = [write_torch_zip(records, deflate={"archive/version"})]
    data_pkl = [r for r in records if r[0].endswith("/data.pkl")]
    out.append(write_torch_zip(data_pkl + [r for r in records if r[0].endswith(("/version", "/byteorder"))],
                               descriptor=False, zip64=False))
    return out


def build_seeds(target: str, predictors: list[pathlib.Path], dest: pathlib.Path) -> int:
    internals, pickles = collect_seeds(predictors)
    if not internals and target in ARCHIVE_TARGETS + ("scanner",):
        raise SystemExit(f"no model-internals.pkl under {', '.join(map(str, predictors))}: the seeds need one")
    seeds: list[bytes] = []
    if target in ARCHIVE_TARGETS:
        seeds = internals[:3] + small_archives(internals[0])
    elif target == "scan":
        seeds = [data_pkl_of(a) for a in internals[:3]] + [data for _, data in pickles]
    elif target == "strict":
        seeds = [bytes([strict_selector(rel)]) + data for rel, data in pickles]
    elif target == "materialize":
        if GENUINE.exists():
            shutil.rmtree(GENUINE)
        GENUINE.mkdir(parents=True)
        for i, archive_bytes in enumerate(internals[:8]):
            (GENUINE / f"{i}.pkl").write_bytes(archive_bytes)
        rng = random.Random(0)
        seeds = [bytes([i]) for i in range(len(internals[:8]))]
        seeds += [bytes(rng.randrange(256) for _ in range(1 + 3 * n)) for n in (1, 1, 2, 3, 5, 8) for _ in range(4)]
    elif target == "scanner":
        seeds = [bytes([scanner_selector("model-internals.pkl", False)]) + a for a in internals[:2]]
        seeds += [bytes([scanner_selector(rel, i % 2 == 0)]) + data for i, (rel, data) in enumerate(pickles[:20])]
        seeds.append(bytes([scanner_selector("x.pkl", False)]) + gzip_bytes(pickles[0][1]))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for seed in seeds:
        (dest / _digest(seed)).write_bytes(seed)
    return len(seeds)


def gzip_bytes(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


def data_pkl_of(archive_bytes: bytes) -> bytes:
    return next(data for name, data in parse_zip(archive_bytes) if name.endswith("/data.pkl"))


def _slots(root, records) -> list:
    """Every (container, key) of a records graph: record states' attributes, list items, dict values."""
    out, seen, stack = [], set(), [root]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, records.Record) and isinstance(value.state, dict):
            value = value.state
        if isinstance(value, dict):
            out.extend((value, k) for k in value)
            stack.extend(value.values())
        elif isinstance(value, list):
            out.extend((value, i) for i in range(len(value)))
            stack.extend(value)
        elif isinstance(value, tuple):
            stack.extend(value)
    return out


def _hostile_pool(root, slots, records, materialize) -> list:
    """Replacement values (each a zero-argument factory): wrong types, functions, records of other classes, cycles,
    deep nesting, bad tensors, values from elsewhere in the graph."""
    import collections

    import torch

    from ag_torchfix.policy import learner_schema

    def deep(n):
        value = []
        for _ in range(n):
            value = [value]
        return value

    def record(name, state):
        r = records.record_type(name).__new__(records.record_type(name))
        r.__setstate__(state)
        return r

    plain = [None, True, 0, -1, 2**40, 1.5, float("nan"), "x", "y" * 70_000, b"bytes", (), set(),
             torch.empty(1).expand(1000), torch.zeros(3), root, print, type]
    plain += [records.ref(name) for name in learner_schema.FUNCTIONS]
    some = [c[k] for c, k in slots[:: max(1, len(slots) // 64)]]
    plain += some  # values from elsewhere in the graph: sharing across positions
    made = [lambda: [], lambda: {}, lambda: deep(300), lambda: collections.OrderedDict(a=print), lambda: {1: 2},
            lambda: {"k": records.ref("builtins.print")}, lambda: torch.nn.Parameter(torch.zeros(2)),
            lambda: [root], lambda: {"items": [root]}]
    made += [(lambda n=name: record(n, {})) for name in learner_schema.CLASSES]
    made += [(lambda n=name: record(n, {"training": True, "forward": records.ref("fastai.data.load._wif")}))
             for name in list(learner_schema.CLASSES)[:8]]
    made += [lambda r=r: records.BoundRef(r, "dataloaders") for r in some if isinstance(r, records.Record)][:4]
    return [lambda v=v: v for v in plain] + made


# ==== zip archives: read loosely, write the way torch does =============================================

def parse_zip(data: bytes) -> list[tuple[str, bytes]] | None:
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if len(infos) > 200:
                return None
            return [(i.filename, z.read(i)) for i in infos]
    except Exception:
        return None


def write_torch_zip(records: list[tuple[str, bytes]], *, align: int = 64, descriptor: bool = True, zip64: bool = True,
                    deflate: frozenset | set = frozenset(), flags_extra: int = 0, declare: dict | None = None,
                    local_sizes: tuple | None = None) -> bytes:
    """A zip archive laid out as torch's writer (miniz) lays it: stored records aligned to 64 bytes with
    'FB' padding, data descriptors, a zip64 end record and locator before the end record."""
    out = bytearray()
    central = bytearray()
    for name, data in records:
        raw_name = name.encode("ascii", "replace")
        method = 8 if name in deflate else 0
        payload = data
        if method == 8:
            co = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = co.compress(data) + co.flush()
        crc = zlib.crc32(data)
        usize = (declare or {}).get(name, len(data))  # a declared size that may lie (ratio checks, bombs)
        flags = (0x808 if descriptor else 0x800) | flags_extra
        offset = len(out)
        header_len = 30 + len(raw_name)
        pad = (-(header_len + 4)) % align if align else 0
        extra = (b"FB" + struct.pack("<H", pad) + b"Z" * pad) if align else b""
        sizes = (0, 0, 0) if descriptor else (crc, len(payload), usize)
        if local_sizes is not None and name == records[0][0]:
            sizes = (sizes[0], *local_sizes)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 0 if descriptor else 20, flags, method, 0, 0x21,
                           *sizes, len(raw_name), len(extra))
        out += raw_name + extra + payload
        if descriptor:
            out += struct.pack("<4sIII", b"PK\x07\x08", crc, len(payload), usize)
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0x31E, 0 if descriptor else 20, flags, method, 0,
                               0x21, crc, len(payload), usize, len(raw_name), 0, 0, 0, 0, 0, offset)
        central += raw_name
    cd_offset = len(out)
    out += central
    n = len(records)
    if zip64:
        z64 = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 0x31E, 45, 0, 0, n, n, len(central), cd_offset)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), cd_offset, 0)
    return bytes(out)


# ==== mutators ==========================================================================================

GLOBALS = [
    "builtins\ngetattr", "builtins\neval", "builtins\nexec", "posix\nsystem", "os\nsystem", "builtins\nbytearray",
    "builtins\nset", "builtins\nslice", "builtins\nbytes", "builtins\nlist", "__builtin__\nset", "copy_reg\n_reconstructor",
    "collections\nOrderedDict", "collections\ndefaultdict", "functools\npartial", "torch._utils\n_rebuild_tensor_v2",
    "torch._utils\n_rebuild_parameter", "torch\nFloatStorage", "torch\nLongStorage", "torch\nByteStorage",
    "torch.storage\n_load_from_bytes", "torch._tensor\n_rebuild_from_type_v2", "torch\nSize", "torch\nfloat32",
    "numpy.core.multiarray\n_reconstruct", "numpy\ndtype", "numpy\nndarray", "numpy.core.multiarray\nscalar",
    "numpy._core.multiarray\n_reconstruct", "pandas.core.indexes.base\n_new_Index", "pathlib\nPosixPath",
    "fastai.tabular.core\nCategorify", "fastai.learner\nLearner", "random\nRandom",
]
STRINGS = ["__setstate__", "__class__", "__dict__", "__reduce_ex__", "__getattr__", "_handle", "__model", "storage",
           "cpu", "data", "0", "", "a" * 300, "__init__", "default_factory", "__slots__", "names", "fields"]
SNIPPETS = [b"(", b"0", b"1", b"2", b"t", b")", b"]", b"}", b"R", b"b", b"s", b"u", b"a", b"e", b"\x81", b"\x85",
            b"\x86", b"\x87", b"N", b"\x88", b"\x89", b"\x94", b"h\x00", b"h\x01", b"q\x00", b"q\x01", b"Q", b"d",
            b"l", b"j\xff\xff\xff\xff", b"r\xff\xff\xff\x7f", b"J\xff\xff\xff\x7f", b"J\x00\x00\x00\x80", b"K\x00",
            b"M\xff\xff", b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f", b"\x8a\x00", b"\x8b\xff\xff\xff\x7f",
            b"\x8f", b"\x90", b"\x91", b"\x92", b"\x93", b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x96\xff\xff\xff\xff\x00\x00\x00\x00", b"B\xff\xff\xff\x7f", b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x97", b"\x98", b"\x82\x01", b"\x83\x01\x00", b"P1\n", b"g0\n", b"p0\n", b"p-1\n", b"I01\n",
            b"I99999999999999999999999999999999999999999999\n", b"L123L\n", b"F1.5\n", b"Fnan\n", b"S'a'\n",
            b"S'\\x41'\n", b"V\\u0041\n", b"U\x01a", b"T\x01\x00\x00\x00a", b"C\x01a", b"G" + b"\x00" * 8,
            b"\x80\x02", b"\x80\x05", b"\x80\x06", b"\x8c\x00", b"\x8d" + b"\x00" * 8, b"(\x8c\x05dtype", b"."]


class _OpList:
    """A pickle as a list of raw opcode chunks (pickletools' reading), cached for the last inputs."""

    cache: dict[bytes, list[tuple[str, object, bytes]] | None] = {}

    @classmethod
    def parse(cls, data: bytes):
        hit = cls.cache.get(data, False)
        if hit is not False:
            return hit
        import pickletools

        ops = []
        try:
            positions = [(op.name, arg, pos) for op, arg, pos in pickletools.genops(data)]
            for k, (name, arg, pos) in enumerate(positions):
                end = positions[k + 1][2] if k + 1 < len(positions) else len(data)
                ops.append((name, arg, data[pos:end]))
            if ops and ops[-1][0] == "STOP":
                ops[-1] = ("STOP", None, data[positions[-1][2]:])  # keep bytes after STOP with it
        except Exception:
            ops = None
        if len(cls.cache) > 64:
            cls.cache.clear()
        cls.cache[data] = ops
        return ops


_INT_VALUES = (0, 1, 2, 3, 255, 256, 65535, -1, 2**31 - 1, -2**31, 2**30, 1000)


def _int_chunk(name: str, rng: random.Random) -> bytes | None:
    v = rng.choice(_INT_VALUES)
    if name == "BININT1":
        return b"K" + bytes([v & 0xFF])
    if name == "BININT2":
        return b"M" + struct.pack("<H", v & 0xFFFF)
    if name == "BININT":
        return b"J" + struct.pack("<i", max(-2**31, min(2**31 - 1, v)))
    if name in ("BINGET", "BINPUT"):
        return (b"h" if name == "BINGET" else b"q") + bytes([rng.randrange(8) if rng.random() < .7 else v & 0xFF])
    if name in ("LONG_BINGET", "LONG_BINPUT"):
        return (b"j" if name == "LONG_BINGET" else b"r") + struct.pack("<I", (rng.randrange(64) if rng.random() < .7
                                                                              else v) & 0xFFFFFFFF)
    return None


_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "SHORT_BINSTRING", "BINSTRING"})
_SCALARS = frozenset({"NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "BINFLOAT", "SHORT_BINUNICODE",
                      "BINUNICODE", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "SHORT_BINBYTES", "LONG1"})


def _strict_dictionary() -> tuple[list[str], list[bytes]]:
    """Attribute names that dispatch.py's table and the AutoGluon classes it names use, and memo-free pickles
    of values AutoGluon files hold (arrays, frames, dtypes): what a mutation can put in an object's state."""
    import pickle
    import pickletools

    words: set[str] = set()
    try:
        from ag_torchfix.policy import dispatch, shims

        for key in list(dispatch.SLOTS) + list(dispatch.NAMES):
            attr = key.split(".", 1)[1].split("[")[0]
            words.add(attr)
            words.update(re.findall(r"\[([A-Za-z_]\w*)\]", key))
        for name in dispatch.ALL_MODELS + (dispatch.PREDICTOR, dispatch.LEARNER, dispatch.TRAINER):
            try:
                cls = shims.resolve(name)
            except LookupError:
                continue
            for klass in cls.__mro__:
                words.update(k for k, v in vars(klass).items() if not k.startswith("__") and not callable(v))
    except Exception:  # noqa: BLE001  (an older package: no dictionary)
        pass
    values = []
    try:
        import numpy as np
        import pandas as pd

        samples = [np.array([1, 2]), np.array(["a", None], dtype=object), np.float64(1.5), np.dtype("f4"),
                   pd.Series([1.0, 2.0]), pd.DataFrame({"a": [1, 2]}), pd.Index(["a", "b"]), [1, "a"], {"k": None},
                   ("x", 1), {1, 2}, b"xy", 10**30, "model.pkl", "../../x"]
        for sample in samples:
            buf = io.BytesIO()
            pickler = pickle.Pickler(buf, protocol=4)
            pickler.fast = True  # no memo: the run can go anywhere
            pickler.dump(sample)
            ops = [(op.name, pos) for op, _, pos in pickletools.genops(buf.getvalue())]
            raw = buf.getvalue()
            run = b"".join(raw[pos:ops[k + 1][1]] for k, (name, pos) in enumerate(ops[:-1])
                           if name not in ("PROTO", "FRAME", "STOP", "MEMOIZE"))
            values.append(run)
    except Exception:  # noqa: BLE001
        pass
    return sorted(words), values


def _string_chunk(rng: random.Random, words: list[str]) -> bytes:
    s = rng.choice(words if words and rng.random() < .7 else STRINGS).encode("utf-8", "surrogatepass")
    if len(s) < 256 and rng.random() < .7:
        return b"\x8c" + bytes([len(s)]) + s
    return b"X" + struct.pack("<I", len(s)) + s


class Mutator:
    """Byte-level (libFuzzer's own) and opcode-level mutations of pickles, and archive-level ones."""

    def __init__(self, target: str, seeds_dir: pathlib.Path):
        import atheris

        self.atheris = atheris
        self.target = target
        self.globals = list(GLOBALS)
        self.words: list[str] = []
        self.attr_words: list[str] = []  # attribute names the package's post-load checks look at
        self.values: list[bytes] = []  # memo-free opcode runs that push one value (replace a scalar with them)
        if target in ("strict", "scanner"):
            self.attr_words, self.values = _strict_dictionary()
        for path in sorted(seeds_dir.iterdir()) if seeds_dir.exists() else []:
            self._learn(path.read_bytes())

    def _learn(self, data: bytes) -> None:
        body = data[1:] if self.target in ("strict", "scanner") else data
        if body[:4] == b"PK\x03\x04":
            records = parse_zip(body) or []
            body = next((d for n, d in records if n.endswith("/data.pkl")), b"")
        for name, arg, _raw in _OpList.parse(body) or []:
            if name == "GLOBAL" and isinstance(arg, str) and arg.replace(" ", "\n") not in self.globals:
                self.globals.append(arg.replace(" ", "\n", 1))
            elif name in ("SHORT_BINUNICODE", "BINUNICODE") and isinstance(arg, str) and len(self.words) < 400:
                if arg not in self.words:
                    self.words.append(arg)

    # -- pickles --
    def mutate_pickle(self, data: bytes, max_size: int, rng: random.Random) -> bytes:
        ops = _OpList.parse(data) if rng.random() < 0.6 else None
        if not ops:
            return self.atheris.Mutate(data, max_size)
        chunks = [raw for _, _, raw in ops]
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            k = rng.randrange(len(chunks))
            name = ops[k][0] if k < len(ops) else ""
            choice = rng.random()
            if choice < 0.15:  # delete an opcode
                del chunks[k]
            elif choice < 0.30:  # duplicate one
                chunks.insert(k, chunks[k])
            elif choice < 0.40 and k + 1 < len(chunks):  # swap two neighbours
                chunks[k], chunks[k + 1] = chunks[k + 1], chunks[k]
            elif choice < 0.60:  # insert a snippet
                chunks.insert(k, rng.choice(SNIPPETS))
            elif choice < 0.72:  # replace or insert a global
                chunk = b"c" + rng.choice(self.globals).encode() + b"\n"
                if name == "GLOBAL":
                    chunks[k] = chunk
                else:
                    chunks.insert(k, chunk)
            elif choice < 0.78 and self.values and name in _SCALARS:  # a scalar becomes an object
                chunks[k] = rng.choice(self.values)
                if self.attr_words and k > 0 and k - 1 < len(ops) and ops[k - 1][0] in _STRINGS and rng.random() < .5:
                    chunks[k - 1] = _string_chunk(rng, self.attr_words)  # ... under a name the checks look at
            elif choice < 0.84:  # replace or insert a string
                chunk = _string_chunk(rng, self.attr_words if self.attr_words and rng.random() < .25 else self.words)
                if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINSTRING", "SHORT_BINSTRING"):
                    chunks[k] = chunk
                else:
                    chunks.insert(k, chunk)
            elif choice < 0.94:  # an integer argument or memo index
                chunk = _int_chunk(name, rng)
                if chunk is None:
                    chunks.insert(k, _int_chunk(rng.choice(("BININT1", "BININT2", "BININT", "BINGET")), rng))
                else:
                    chunks[k] = chunk
            else:  # copy a run of opcodes elsewhere
                j = rng.randrange(len(chunks))
                run = chunks[j:j + rng.randint(1, 8)]
                chunks[k:k] = run
            if not chunks:
                return data
        out = b"".join(chunks)
        if rng.random() < 0.2:
            out = self.atheris.Mutate(out, max(max_size, len(out)))
        return out[:max_size]

    # -- archives --
    def mutate_archive(self, data: bytes, max_size: int, rng: random.Random) -> bytes:
        roll = rng.random()
        records = parse_zip(data) if roll < 0.6 else None
        if not records:
            return self.atheris.Mutate(data, max_size)
        records = list(records)
        options: dict = {}
        if roll < 0.45:  # the pickle inside, with a correct CRC
            k = next((i for i, (n, _) in enumerate(records) if n.endswith("/data.pkl")), None)
            if k is None:
                records.insert(0, ("archive/data.pkl", b"\x80\x02}q\x00."))
                k = 0
            records[k] = (records[k][0], self.mutate_pickle(records[k][1], max(len(records[k][1]) * 2, 4096), rng))
        else:  # the archive's structure
            op = rng.randrange(14)
            k = rng.randrange(len(records))
            name, body = records[k]
            if op == 0:
                del records[k]
            elif op == 1:
                records.insert(rng.randrange(len(records) + 1), (name.upper() if rng.random() < .5 else name, body))
            elif op == 2:
                new = rng.choice(["archive/data.pkl", "archive/constants.pkl", "other/data.pkl", "archive/../x",
                                  "archive/DATA.PKL", "/archive/data.pkl", "archive\\data.pkl", "archive/data/999",
                                  "archive/data/0", "archive/" + "a" * 1100, "archivé/data.pkl", "archive/data"])
                records[k] = (new, body)
            elif op == 3 and body:  # storage sizes that disagree with the pickle
                records[k] = (name, body[: rng.randrange(len(body))] if rng.random() < .5 else body + body[:8])
            elif op == 4:
                options["deflate"] = {name}
            elif op == 5:
                options["descriptor"] = False
            elif op == 6:
                options["zip64"] = False
            elif op == 7:
                options["align"] = rng.choice((0, 1, 4096))
            elif op == 8:
                options["flags_extra"] = rng.choice((0x1, 0x40, 0x2, 0x4))
            elif op == 9:
                rng.shuffle(records)
            elif op == 10:
                records.append((f"archive/data/{rng.randrange(40)}", bytes(rng.randrange(64))))
            elif op == 11:  # a size that lies (stored: mismatch; deflated: ratio and zip-bomb bounds)
                if rng.random() < .5:
                    options["deflate"] = {name}
                options["declare"] = {name: rng.choice((0, len(body) + 1, len(body) * 21 + 1, 2**31, 0xFFFFFFFF,
                                                        0xFFFFFFFE))}
            elif op == 12:  # zip64 markers in the local header
                options["descriptor"] = False
                options["local_sizes"] = rng.choice(((0xFFFFFFFF, 0xFFFFFFFF), (0, 0xFFFFFFFF), (0xFFFFFFFF, 0)))
            else:
                records = [] if rng.random() < .3 else records[:1]
        try:
            out = write_torch_zip(records, **options)
        except Exception:
            return self.atheris.Mutate(data, max_size)
        if rng.random() < 0.1:
            out = self.atheris.Mutate(out, max(max_size, len(out)))
        return out[:max_size]

    def __call__(self, data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if self.target == "materialize":  # edit lists: change, add or drop one 3-byte edit
            data = bytearray(data or b"\x00")
            choice = rng.random()
            if choice < 0.5 and len(data) >= 4:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif choice < 0.8 or len(data) < 4:
                data += bytes(rng.randrange(256) for _ in range(3))
            else:
                cut = 1 + 3 * rng.randrange((len(data) - 1) // 3)
                del data[cut:cut + 3]
            return bytes(data[:max_size])
        if self.target in ("strict", "scanner"):
            head, body = (data[:1] or b"\x00"), data[1:]
            if rng.random() < 0.05:
                head = bytes([rng.randrange(256)])
            is_zip = body[:4] == b"PK\x03\x04"
            body = (self.mutate_archive if is_zip else self.mutate_pickle)(body, max(max_size - 1, 1), rng)
            return (head + body)[:max_size]
        if self.target in ARCHIVE_TARGETS:
            return self.mutate_archive(data, max_size, rng)
        return self.mutate_pickle(data, max_size, rng)

    def crossover(self, a: bytes, b: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if self.target == "materialize":
            return (a[:1 + 3 * rng.randrange(len(a) // 3 + 1)] + b[1:])[:max_size]
        head = b""
        if self.target in ("strict", "scanner"):
            head, a, b = a[:1], a[1:], b[1:]
        if a[:4] == b"PK\x03\x04" and b[:4] == b"PK\x03\x04":
            ra, rb = parse_zip(a), parse_zip(b)
            if ra and rb:
                pa = next((d for n, d in ra if n.endswith("/data.pkl")), None)
                pb = next((d for n, d in rb if n.endswith("/data.pkl")), None)
                if pa is not None and pb is not None:
                    mixed = _splice(pa, pb, rng)
                    ra = [(n, mixed if n.endswith("/data.pkl") else d) for n, d in ra]
                    return (head + write_torch_zip(ra))[:max_size]
        return (head + _splice(a, b, rng))[:max_size]


def _splice(a: bytes, b: bytes, rng: random.Random) -> bytes:
    oa, ob = _OpList.parse(a), _OpList.parse(b)
    if oa and ob:
        i, j = rng.randrange(len(oa)), rng.randrange(len(ob))
        return b"".join(r for _, _, r in oa[:i]) + b"".join(r for _, _, r in ob[j:])
    i, j = rng.randrange(len(a) + 1), rng.randrange(len(b) + 1)
    return a[:i] + b[j:]


# ==== the worker: targets, guards, findings ==============================================================

class Hang(BaseException):
    """Raised by the CPU timer in the middle of an input that ran too long (a BaseException, so that the
    code under test's ``except Exception`` does not turn it into a typed refusal)."""


DANGEROUS_EVENTS = ("os.system", "subprocess.Popen", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.kill",
                    "os.remove", "os.unlink", "os.rmdir", "shutil.rmtree", "os.rename", "socket.connect",
                    "socket.bind", "ctypes.dlopen", "os.putenv", "os.chmod", "webbrowser.open")


def _tmp_dir(workdir: pathlib.Path, pid: int) -> pathlib.Path:
    """Where the scanner target writes its files (memory-backed when possible); the parent removes it."""
    shm = pathlib.Path("/dev/shm")
    base = os.environ.get("FUZZ_TMP") or (shm if shm.is_dir() and os.access(shm, os.W_OK) else workdir / "tmp")
    return pathlib.Path(base) / f"ag-fuzz-{pid}"


class Worker:
    def __init__(self, target: str, workdir: pathlib.Path, timeout: float, rss_mb: int):
        self.target = target
        self.workdir = workdir
        self.timeout = timeout
        self.rss_limit = rss_mb << 20
        self.findings_dir = workdir / "findings" / target
        self.findings_dir.mkdir(parents=True, exist_ok=True)
        self.known: dict[str, int] = {}
        for path in self.findings_dir.glob("*.json"):
            try:
                self.known[path.stem] = json.loads(path.read_text())["input_size"]
            except (ValueError, KeyError, OSError):
                pass
        self.execs = 0
        self.events: list[str] = []
        self.in_input = False
        self.fake_root = workdir / "root"
        (self.fake_root / "predictor").mkdir(parents=True, exist_ok=True)
        (self.fake_root / "predictor.pkl").touch()
        self.tmp = _tmp_dir(workdir, os.getpid())
        if target == "scanner":
            (self.tmp / "predictor").mkdir(parents=True, exist_ok=True)
            (self.tmp / "predictor" / "predictor.pkl").write_bytes(b"\x80\x04N.")
        self._clear_refs = None

    # -- importing the code under test, instrumented --
    def import_code(self) -> None:
        import atheris

        with atheris.instrument_imports(include=["ag_torchfix", "pickle"]):
            import pickle  # noqa: F401  (StrictUnpickler is pickle's Python unpickler)

            import ag_torchfix  # noqa: F401
            from ag_torchfix.formats import archive, pickle_scan
            from ag_torchfix.core import errors
            from ag_torchfix.policy import verdicts as policy
            from ag_torchfix.cli import scanner
            from ag_torchfix.load import secure_load, strict_mode
            from ag_torchfix.policy import dispatch
            from ag_torchfix.load import native  # noqa: F401  (loaded lazily by strict mode)
        self.archive, self.errors, self.pickle_scan = archive, errors, pickle_scan
        self.policy, self.scanner, self.secure_load, self.strict_mode = policy, scanner, secure_load, strict_mode
        import torch

        torch.set_num_threads(1)
        if self.target == "materialize":
            with atheris.instrument_imports(include=["ag_torchfix"]):
                from ag_torchfix.load import materialize
                from ag_torchfix.formats import records
            self.materialize, self.records = materialize, records
            self.genuine = [p.read_bytes() for p in sorted(GENUINE.glob("*.pkl"))]
        if self.target in ("loader", "strict", "scanner", "materialize"):
            import fastai.tabular.all  # noqa: F401
            import autogluon.tabular  # noqa: F401

        if self.target in ("strict", "scanner"):  # import every allowlisted module now, not during an input
            from ag_torchfix.policy import allowlist, shims

            for entry in allowlist.STRICT:
                try:
                    shims.resolve(entry.name)
                except Exception:  # noqa: BLE001  (not installed here)
                    pass

        def refuse_full_pickle(stream):  # the secure loader must never fall back for an untrusted file
            raise _Executed("secure_load fell back to full pickle for an untrusted file")

        secure_load._load_full_pickle = refuse_full_pickle
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args) -> None:
        if self.in_input and event.startswith(DANGEROUS_EVENTS) and not _sanctioned(sys._getframe(1)):
            self.events.append(f"{event}{str(args)[:200]}")

    # -- targets: each is a list of (step, callable, allowed exception types) --
    def steps(self, data: bytes):
        import pickle

        t = self.target
        if t == "archive":
            return [("open_archive+read_record", lambda: self._archive(data), (self.archive.ArchiveError,))]
        if t == "scan":
            return [("scan", lambda: self._scan(data), ())]
        if t == "internals":
            return [("check_internals", lambda: self._internals(data), (self.policy.Unreadable,))]
        if t == "loader":
            return [("load_learner", lambda: self.secure_load.load_learner(io.BytesIO(data)),
                     (self.errors.SecureLoadError,))]
        if t == "strict":
            rel = STRICT_PATHS[data[0] % len(STRICT_PATHS)] if data else STRICT_PATHS[0]
            body = data[1:]
            path = str(self.fake_root / rel)
            return [("load_pickle", lambda: self.strict_mode.load_pickle(body, path=path, model="M"),
                     (self.errors.SecureLoadError,)),
                    ("StrictUnpickler", lambda: self.strict_mode.StrictUnpickler(io.BytesIO(body)).load(),
                     (pickle.UnpicklingError, Exception))]
        if t == "materialize":
            return [("materialize", lambda: self._materialize(data), (self.materialize.SchemaError,))]
        if t == "scanner":
            selector = data[0] if data else 0
            path = self.tmp / SCANNER_PATHS[selector & 7]
            return [("scan_file", lambda: self._scanner(path, data[1:], bool(selector & 8)), ())]
        raise ValueError(t)

    def _materialize(self, data: bytes) -> None:
        """Edit a genuine learner's records as the input says, then materialize them: a SchemaError or a learner."""
        import torch

        genuine = self.genuine[data[0] % len(self.genuine)] if data else self.genuine[0]
        check = self.policy.check_internals(io.BytesIO(genuine))
        torch_scope = sys.modules["ag_torchfix.load.torch_scope"]
        torch_scope.patch()
        with torch_scope.active(self.secure_load._inert_scope(frozenset(check.scan.globals))):
            root = torch.load(io.BytesIO(genuine), map_location="cpu", weights_only=True)
        slots = _slots(root, self.records)
        pool = _hostile_pool(root, slots, self.records, self.materialize)
        for i in range(1, len(data) - 2, 3):
            (container, key) = slots[int.from_bytes(data[i:i + 2], "little") % len(slots)]
            value = pool[data[i + 2] % len(pool)]
            container[key] = value()
        learner = self.materialize.materialize(root)
        from fastai.learner import Learner

        assert isinstance(learner, Learner)

    def _archive(self, data: bytes) -> None:
        stream = io.BytesIO(data)
        arch = self.archive.open_archive(stream)
        for name in sorted(arch.records)[:64]:
            self.archive.read_record(stream, arch, arch.records[name], limit=self.archive.MAX_PICKLE)
        arch.find("data.pkl")

    def _scan(self, data: bytes) -> None:
        ps = self.pickle_scan
        limits = ps.DEFAULT_LIMITS if len(data) % 2 else self.policy.TORCH_LIMITS
        a = ps.scan(data, limits=limits)
        b = ps.scan(io.BytesIO(data), limits=limits)
        self._check_result(a)
        if (a.error is None) != (b.error is None) or a.globals != b.globals or (a.error is None and a.end != b.end):
            raise _Divergence(f"scan(bytes) and scan(stream) disagree: error {a.error!r} vs {b.error!r}, "
                              f"end {a.end} vs {b.end}")
        for result in ps.scan_all(io.BytesIO(data), limits=limits):
            self._check_result(result)
        self.policy.judge(a, self.policy.strict())
        self.policy.judge(a, self.policy.fastai_internals())

    def _check_result(self, result) -> None:
        if result.error and ("MemoryError" in result.error):
            raise _Memory(f"scan ran out of memory: {result.error}")

    def _internals(self, data: bytes) -> None:
        check = self.policy.check_internals(io.BytesIO(data))
        check.judgement.ok, check.judgement.disallowed_labels()

    def _scanner(self, path: pathlib.Path, body: bytes, strict: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        report = self.scanner.scan_file(str(path), strict=strict)
        if report.error and "MemoryError" in report.error:
            raise _Memory(f"scan_file ran out of memory: {report.error}")

    # -- one input --
    def run(self, data: bytes) -> list[dict]:
        """Run every step on one input; the findings it made (also recorded on disk)."""
        found = []
        for step, func, allowed in self.steps(data):
            result = self._guarded(step, func, allowed)
            if result is not None:
                found.append(result)
                self._record(data, result)
        return found

    def _guarded(self, step: str, func, allowed) -> dict | None:
        self.events.clear()
        before = self._rss_reset()
        self.in_input = True
        signal.setitimer(signal.ITIMER_PROF, self.timeout)
        started = time.process_time()
        exc = None
        try:
            func()
        except Hang as e:
            exc = e
        except BaseException as e:  # classified below
            exc = e
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            self.in_input = False
        cpu = time.process_time() - started
        grown = self._rss_peak() - before
        if self.events or isinstance(exc, _Executed):
            return _finding("execution", step, exc, "; ".join(self.events) or str(exc))
        if isinstance(exc, Hang):
            return _finding("hang", step, exc, f"more than {self.timeout:g} s of CPU")
        if isinstance(exc, _Memory) or _in_chain(exc, MemoryError) or _bad_alloc(exc):
            return _finding("memory", step, exc, "ran out of the address space (RLIMIT_AS) or MemoryError")
        if grown > self.rss_limit:
            return _finding("memory", step, exc, f"peak RSS grew by {grown >> 20} MiB")
        if isinstance(exc, _Divergence):
            return _finding("divergence", step, exc, str(exc))
        if exc is not None and not (allowed and isinstance(exc, allowed)) and not isinstance(exc, KeyboardInterrupt):
            return _finding("exception", step, exc, f"{type(exc).__name__}: {str(exc)[:300]}")
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        del cpu
        return None

    def _rss_reset(self) -> int:
        if self._clear_refs is None:
            try:
                self._clear_refs = open("/proc/self/clear_refs", "w")  # noqa: SIM115
            except OSError:
                self._clear_refs = False
        if self._clear_refs:
            try:
                self._clear_refs.write("5")
                self._clear_refs.flush()
            except OSError:
                self._clear_refs = False
        return _status_kb("VmRSS") << 10

    def _rss_peak(self) -> int:
        if self._clear_refs:
            return _status_kb("VmHWM") << 10
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10  # monotonic: a rough bound only

    def _record(self, data: bytes, finding: dict) -> None:
        sig = finding["signature"]
        name = f"{finding['kind']}-{hashlib.sha1(sig.encode()).hexdigest()[:12]}"
        finding["name"] = name
        finding["target"] = self.target
        finding["input_size"] = len(data)
        if self.target == "strict":
            finding["path"] = STRICT_PATHS[data[0] % len(STRICT_PATHS)] if data else None
        elif self.target == "scanner" and data:
            finding["path"] = SCANNER_PATHS[data[0] & 7]
            finding["strict"] = bool(data[0] & 8)
        previous = self.known.get(name)
        if previous is not None and previous <= len(data):
            return
        self.known[name] = len(data)
        finding["new"] = previous is None
        (self.findings_dir / f"{name}.bin").write_bytes(data)
        (self.findings_dir / f"{name}.json").write_text(json.dumps(finding, indent=1, default=str))
        if previous is None:
            sys.stderr.write(f"\n== FINDING {name}: {finding['summary']} ({finding['where']})\n")
            sys.stderr.flush()

    # -- the fuzzing loop --
    def limit_memory(self) -> None:
        import resource

        vm = _status_kb("VmSize") << 10
        cap = vm + (self.rss_limit * 3) // 2 + (512 << 20)  # allocations far past --rss-mb fail with MemoryError
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def fuzz(self, argv: list[str], seeds_dir: pathlib.Path) -> None:
        import atheris

        warnings_off()
        mutator = Mutator(self.target, seeds_dir)
        signal.signal(signal.SIGPROF, _on_timer)
        for seed in sorted(seeds_dir.iterdir())[:8]:  # warm up: lazy imports and caches before the clock
            self.run(seed.read_bytes())
        self.limit_memory()
        baseline = _status_kb("VmRSS") >> 10
        argv = argv + [f"-rss_limit_mb={baseline + (self.rss_limit >> 20) * 2 + 256}", "-malloc_limit_mb=0"]

        def test_one_input(data: bytes) -> None:
            self.execs += 1
            self.run(data)

        atheris.Setup(argv, test_one_input, custom_mutator=mutator, custom_crossover=mutator.crossover)
        atheris.Fuzz()


def _sanctioned(frame) -> bool:
    """An event the package causes by design (native.py's CatBoost sandbox forks, kills and runs a fresh
    interpreter) or an import does (a library's shared object is dlopen'ed), not the file."""
    for _ in range(80):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_filename.startswith("<frozen importlib"):
            return True
        if code.co_filename.endswith("ag_torchfix/load/native.py") and code.co_name in ("_catboost_fork",
                                                                                   "_catboost_subprocess"):
            return True
        frame = frame.f_back
    return False


class _Executed(Exception):
    pass


class _Memory(Exception):
    pass


class _Divergence(Exception):
    pass


def _on_timer(signum, frame):
    raise Hang()


def _in_chain(exc, kind) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _bad_alloc(exc) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        text = str(exc)
        if "can't allocate memory" in text or "bad_alloc" in text or "Cannot allocate memory" in text:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _where(exc) -> str:
    """The innermost frame of the package (or of anything, if none) where the exception was raised."""
    if exc is None:
        return "-"
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in tb if "/ag_torchfix/" in f.filename]
    frame = (ours or tb or [None])[-1]
    if frame is None:
        return "-"
    return f"{pathlib.Path(frame.filename).name}:{frame.lineno}:{frame.name}"


def _finding(kind: str, step: str, exc, summary: str) -> dict:
    where = _where(exc)
    etype = type(exc).__name__ if exc is not None else "-"
    if kind in ("hang", "memory"):
        signature = f"{kind}|{step}|{where}"
    else:
        signature = f"{kind}|{step}|{etype}|{where}"
    tb = "".join(traceback.format_exception(exc))[-4000:] if exc is not None else ""
    return {"kind": kind, "step": step, "exception": etype, "summary": summary[:500], "where": where,
            "signature": signature, "traceback": tb, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def warnings_off() -> None:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)


# ==== the parent: seeds, restarts, summary ===============================================================

STAT = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/(\S+))?")
FINAL = re.compile(r"^stat::(\w+):\s+(\d+)")
ARTIFACT = re.compile(r"(?:Test unit written to|artifact_prefix=.*; Test unit written to) (\S+)")


def campaign(args) -> int:
    target = args.target
    workdir = pathlib.Path(args.workdir)
    seeds_dir = workdir / "seeds" / target
    corpus = workdir / "corpus" / target
    artifacts = workdir / "findings" / target
    for d in (corpus, artifacts):
        d.mkdir(parents=True, exist_ok=True)
    predictors = [pathlib.Path(p) for p in args.predictor] if args.predictor else default_predictors()
    n_seeds = build_seeds(target, predictors, seeds_dir)
    before = {p.name for p in artifacts.iterdir()}
    log_path = workdir / f"log-{target}.txt"
    started = time.monotonic()
    deadline = started + args.seconds
    execs = cov = ft = corp = 0
    runs = restarts = 0
    crashes: list[dict] = []
    print(f"fuzz {target}: {n_seeds} seeds from {', '.join(map(str, predictors))}; corpus {corpus}; "
          f"{args.seconds} s", flush=True)
    with open(log_path, "a") as log:
        while True:
            remaining = int(deadline - time.monotonic())
            if remaining < 5 or restarts > args.max_restarts:
                break
            runs += 1
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", target, "--workdir", str(workdir),
                   "--timeout", str(args.timeout), "--rss-mb", str(args.rss_mb), "--",
                   str(corpus), str(seeds_dir), f"-max_total_time={remaining}", f"-max_len={MAX_LEN[target]}",
                   f"-timeout={int(args.timeout * 3)}", "-len_control=0", "-print_final_stats=1",
                   f"-artifact_prefix={artifacts}/", "-reload=0", f"-seed={args.seed + runs}"]
            env = dict(os.environ, PYTHONHASHSEED="0", AG_TORCHFIX_AUTOLOAD="1")
            env.pop("AG_TORCHFIX_TRUST", None)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                    errors="replace", cwd=ROOT)
            run_execs = run_cov = run_ft = 0
            artifact = None
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                m = STAT.match(line)
                if m:
                    run_execs, run_cov, run_ft = int(m[1]), int(m[2]), int(m[3])
                    corp = int(m[4]) if m[4] else corp
                    if args.verbose or "pulse" in line or "DONE" in line or "INITED" in line:
                        print(f"  [{target} {int(time.monotonic() - started)}s] {line.strip()}", flush=True)
                m = FINAL.match(line)
                if m and m[1] == "number_of_executed_units":
                    run_execs = max(run_execs, int(m[2]))
                m = ARTIFACT.search(line)
                if m:
                    artifact = m[1]
                if line.startswith("== FINDING"):
                    print("  " + line.strip(), flush=True)
            rc = proc.wait()
            shutil.rmtree(_tmp_dir(workdir, proc.pid), ignore_errors=True)
            execs += run_execs
            cov, ft = max(cov, run_cov), max(ft, run_ft)
            if rc != 0:
                restarts += 1
                crashes.append({"exit_code": rc, "artifact": artifact, "after_execs": run_execs})
                if artifact and os.path.exists(artifact):
                    pathlib.Path(artifact + ".worker-died").write_text(f"exit code {rc}\n")
                print(f"  worker exited with {rc} (artifact {artifact}); restarting", flush=True)
    wall = time.monotonic() - started
    findings = []
    for path in sorted(artifacts.glob("*.json")):  # what the worker recorded itself (exceptions, hangs, memory)
        info = json.loads(path.read_text())
        findings.append({k: info.get(k) for k in ("name", "kind", "step", "exception", "where", "summary", "path",
                                                  "strict", "input_size")}
                        | {"reproducer": str(path.with_suffix(".bin")), "new_this_run": path.name not in before})
    unattributed = any(not c.get("artifact") for c in crashes)  # a death without a named input: count them all
    sandboxed = []
    for path in sorted(artifacts.iterdir()):
        if not path.name.startswith(("crash-", "timeout-", "oom-", "slow-unit-", "leak-")) or "." in path.name:
            continue
        if path.name.startswith("crash-") and not (artifacts / (path.name + ".worker-died")).exists() \
                and not (unattributed and path.name not in before):
            # written by a forked child (native.py's CatBoost sandbox inherits libFuzzer's signal handlers):
            # the worker lived on and the package refused the file, as designed; kept for the record
            if path.name not in before:
                sandboxed.append(str(path))
            continue
        findings.append({"name": path.name, "kind": path.name.split("-")[0], "reproducer": str(path),
                         "new_this_run": path.name not in before, "input_size": path.stat().st_size})
    summary = {"target": target, "seconds": round(wall, 1), "executions": execs, "coverage": cov, "features": ft,
               "corpus": corp, "worker_runs": runs, "worker_deaths": crashes, "findings": findings, "seeds": n_seeds,
               "sandboxed_crashes": sandboxed, "log": str(log_path)}
    (workdir / f"summary-{target}.json").write_text(json.dumps(summary, indent=1))
    print(f"\n== fuzz {target}: {execs} executions in {wall:.0f} s ({execs / max(wall, 1):.1f}/s), "
          f"cov {cov}, ft {ft}, corpus {corp}, worker runs {runs}")
    if sandboxed:
        print(f"   {len(sandboxed)} crash(es) inside native.py's forked CatBoost sandbox (the worker lived on and the "
              "file was refused, as designed; not findings): " + ", ".join(pathlib.Path(p).name for p in sandboxed[:5]))
    if not findings:
        print("   no findings")
    for f in findings:
        mark = "NEW " if f.get("new_this_run") else ""
        print(f"   {mark}{f['kind']}: {f.get('exception') or ''} at {f.get('where') or '-'} "
              f"[{f.get('step') or ''}{' path=' + f['path'] if f.get('path') else ''}] -> {f['reproducer']}")
        if f.get("summary"):
            print(f"      {f['summary'][:240]}")
    print(f"   summary: {workdir / f'summary-{target}.json'}", flush=True)
    return 1 if any(f.get("new_this_run") for f in findings) else 0


def reproduce(args) -> int:
    worker = Worker(args.target, pathlib.Path(args.workdir), args.timeout, args.rss_mb)
    worker.import_code()
    warnings_off()
    signal.signal(signal.SIGPROF, _on_timer)
    data = pathlib.Path(args.reproduce).read_bytes()
    worker._record = lambda data, finding: None  # reproducing records nothing
    found = worker.run(data)
    for f in found:
        print(f"{f['kind']} in {f['step']}: {f['summary']}\n{f['traceback']}")
    shutil.rmtree(worker.tmp, ignore_errors=True)
    print("no finding" if not found else f"{len(found)} finding(s)")
    return 1 if found else 0


def _replay(args) -> tuple[Worker, list[pathlib.Path]]:
    """A worker that records nothing, and the target's corpus and seeds to replay through it."""
    workdir = pathlib.Path(args.workdir)
    worker = Worker(args.target, workdir, args.timeout, args.rss_mb)
    worker.import_code()
    warnings_off()
    signal.signal(signal.SIGPROF, _on_timer)
    worker._record = lambda data, finding: None
    inputs = sorted((workdir / "corpus" / args.target).iterdir()) + sorted((workdir / "seeds" / args.target).iterdir())
    return worker, inputs


def line_coverage(args) -> int:
    """Replay the target's corpus (and seeds) under a line tracer: which lines of the package ran."""
    import dis

    worker, inputs = _replay(args)
    package = str(ROOT / "ag_torchfix") + os.sep
    hit: dict[str, set[int]] = {}

    def tracer(frame, event, arg):
        filename = frame.f_code.co_filename
        if not filename.startswith(package):
            return None
        lines = hit.setdefault(filename, set())

        def local(frame, event, arg):
            if event == "line":
                lines.add(frame.f_lineno)
            return local
        lines.add(frame.f_lineno)
        return local

    sys.settrace(tracer)
    try:
        for path in inputs:
            worker.run(path.read_bytes())
    finally:
        sys.settrace(None)
        shutil.rmtree(worker.tmp, ignore_errors=True)
    print(f"{args.target}: {len(inputs)} inputs replayed; lines in the package's functions that ran:")
    for filename in sorted(hit):
        relative = pathlib.Path(filename).relative_to(ROOT).with_suffix("")
        module = sys.modules.get(".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts))
        code_lines: set[int] = set()
        todo = [compile(pathlib.Path(filename).read_text(), filename, "exec")]
        while todo:  # lines inside functions (module and class bodies ran at import time)
            code = todo.pop()
            if code.co_flags & 0x1:  # CO_OPTIMIZED: a function body
                code_lines.update(line for _, line in dis.findlinestarts(code) if line)
            todo.extend(c for c in code.co_consts if hasattr(c, "co_code"))
        ran = hit[filename] & code_lines
        print(f"  {str(pathlib.Path(filename).relative_to(package)):30} {len(ran):5} / {len(code_lines):5} lines "
              f"({100 * len(ran) / max(len(code_lines), 1):.0f}%)" + ("" if module else " (not imported)"))
        if args.verbose:
            print("      not reached: " + _ranges(sorted(code_lines - ran)))
    return 0


def outcomes(args) -> int:
    """Replay the target's corpus and tally how each step ended (the refusal's reason, cut before details)."""
    import collections

    worker, inputs = _replay(args)
    tally: collections.Counter = collections.Counter()
    for path in inputs:
        for step, func, _allowed in worker.steps(path.read_bytes()):
            try:
                func()
                tally[(step, "returned")] += 1
            except BaseException as exc:  # noqa: BLE001  (tallied)
                reason = getattr(exc, "reason", None) or str(exc).split("\n")[0]
                reason = re.sub(r"[\d]+", "N", re.split(r"[:(]", reason)[0])[:70]
                tally[(step, f"{type(exc).__name__}: {reason}")] += 1
    shutil.rmtree(worker.tmp, ignore_errors=True)
    print(f"{args.target}: {len(inputs)} inputs replayed")
    for (step, outcome), n in tally.most_common():
        print(f"  {n:6}  {step}: {outcome}")
    return 0


def _ranges(lines: list[int]) -> str:
    out: list[str] = []
    for line in lines:
        if out and out[-1].split("-")[-1] == str(line - 1):
            out[-1] = out[-1].split("-")[0] + f"-{line}"
        else:
            out.append(str(line))
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        k = argv.index("--")
        argv, extra = argv[:k], argv[k + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--predictor", action="append", default=[], help="a predictor directory to take seeds from "
                        "(repeatable); default: the test suite's cached predictors")
    parser.add_argument("--workdir", default=str(WORK))
    parser.add_argument("--timeout", type=float, default=10.0, help="CPU seconds an input may take")
    parser.add_argument("--rss-mb", type=int, default=512, help="RSS growth an input may cause")
    parser.add_argument("--max-restarts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--reproduce", metavar="FILE", help="run one input and report what it does")
    parser.add_argument("--line-coverage", action="store_true", help="replay the corpus and report which lines "
                        "of the package it reaches")
    parser.add_argument("--outcomes", action="store_true", help="replay the corpus and tally how each input ended")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker = Worker(args.target, pathlib.Path(args.workdir), args.timeout, args.rss_mb)
        worker.import_code()
        worker.fuzz([sys.argv[0]] + extra, pathlib.Path(extra[1]))
        return 0
    if args.reproduce:
        return reproduce(args)
    if args.line_coverage:
        return line_coverage(args)
    if args.outcomes:
        return outcomes(args)
    return campaign(args)


if __name__ == "__main__":
    sys.exit(main())
