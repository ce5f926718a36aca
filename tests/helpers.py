"""Shared test helpers: the training table, predictions, archive surgery, payloads, deep equality."""

from __future__ import annotations

import contextlib
import os
import pathlib
import pickle
import struct
import types
import zipfile

import numpy as np
import pandas as pd

WORDS = ["red", "green", "blue", "big", "small", "fast", "slow", "cat", "dog", "tree"]


def make_table(n: int, problem_type: str, seed: int = 0, unseen: bool = False) -> pd.DataFrame:
    """Numeric with NaN, int, categorical, high-cardinality, bool, datetime and text columns."""
    rng = np.random.default_rng(seed)
    cats = ["a", "b", "c", "d"] + (["never-seen"] if unseen else [])
    df = pd.DataFrame(
        {
            "num_nan": rng.normal(size=n),
            "int": rng.integers(0, 50, n),
            "cat": rng.choice(cats, n),
            "hicard": [f"id{i}" for i in rng.integers(0, 150 if not unseen else 400, n)],
            "flag": rng.random(n) > 0.5,
            "date": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D"),
            "text": [" ".join(rng.choice(WORDS, 8)) for _ in range(n)],
        }
    )
    df.loc[::7, "num_nan"] = np.nan
    signal = df["num_nan"].fillna(0) + (df["cat"] == "a") + 0.02 * df["int"]
    if problem_type == "binary":
        df["label"] = np.where(signal > 0.6, "yes", "no")
    elif problem_type == "multiclass":
        df["label"] = pd.cut(signal, [-np.inf, 0.2, 0.9, 1.5, np.inf], labels=["w", "x", "y", "z"]).astype(str)
    else:
        df["label"] = signal + rng.normal(scale=0.1, size=n)
    return df


# Small, fast settings for every CPU model family of autogluon.tabular[all] (strict mode's zoo).
ZOO = {
    "GBM": {"num_boost_round": 20},
    "CAT": {"iterations": 20},
    "XGB": {"n_estimators": 20},
    "RF": {"n_estimators": 20},
    "XT": {"n_estimators": 20},
    "KNN": {},
    "LR": {},
    "NN_TORCH": {"num_epochs": 2},
    "FASTAI": {"epochs": 2},
}


def fit_zoo(path: pathlib.Path, problem_type: str, *, bag: bool, stack: bool = False, refit: bool = False):
    """A medium_quality predictor over the CPU model zoo, optionally bagged and stacked."""
    from autogluon.tabular import TabularPredictor

    kwargs = {"quantile_levels": [0.1, 0.5, 0.9]} if problem_type == "quantile" else {}
    predictor = TabularPredictor(label="label", problem_type=problem_type, path=str(path), verbosity=0, **kwargs)
    fit_kwargs = dict(presets="medium_quality", hyperparameters=ZOO)
    if bag:
        fit_kwargs.update(num_bag_folds=2, num_bag_sets=1, num_stack_levels=1 if stack else 0, dynamic_stacking=False)
    predictor.fit(make_table(300, problem_type, seed=1), **fit_kwargs)
    if refit:
        predictor.refit_full()
    return predictor


def predict_all(predictor_dir: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Load a predictor and predict with each of its models on data with unseen categories."""
    from autogluon.tabular import TabularPredictor

    predictor = TabularPredictor.load(str(predictor_dir), verbosity=0)
    data = make_table(60, predictor.problem_type, seed=99, unseen=True).drop(columns=["label"])
    out = {}
    for model in predictor.model_names():
        pred = predictor.predict(data, model=model).to_numpy()
        proba = (predictor.predict_proba(data, model=model).to_numpy()
                 if predictor.problem_type in ("binary", "multiclass") else None)
        out[model] = (pred, proba)
    return out


@contextlib.contextmanager
def package_uninstalled():
    """Run a block with ag_torchfix fully uninstalled (AutoGluon's original loader), then reinstall."""
    import ag_torchfix

    ag_torchfix.uninstall()
    try:
        yield
    finally:
        ag_torchfix.install()


def rewrite_archive(src: pathlib.Path, dst: pathlib.Path, data_pkl: bytes) -> None:
    """Copy a torch zip archive, replacing its data.pkl record."""
    with zipfile.ZipFile(src) as zin:
        records = [(i.filename, zin.read(i)) for i in zin.infolist()]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name, data in records:
            zout.writestr(name, data_pkl if name.endswith("/data.pkl") else data)


def data_pkl(path: pathlib.Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
        return z.read(name)


@contextlib.contextmanager
def unforced():
    """Lift TORCH_FORCE_WEIGHTS_ONLY_LOAD for a block: the tests' own files are trusted test material."""
    saved = os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = saved


def full_pickle_learner(path: pathlib.Path):
    """Our own genuine file, loaded the original way (it is trusted: the tests just wrote it)."""
    import torch

    with unforced():
        return torch.load(path, map_location="cpu", weights_only=False)


def save_learner(learner, dst: pathlib.Path) -> None:
    """Write a learner the way AutoGluon's export does (plain pickle, protocol 2)."""
    import torch

    torch.save(learner, dst, pickle_protocol=2)


# --- payloads: each leaves its marker file if it ever runs ------------------------------------------

class OsSystem:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Exec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class Subprocess:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import subprocess

        return (subprocess.call, (["touch", self.marker],))


class NestedPickle:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pickle.loads, (pickle.dumps(OsSystem(self.marker), protocol=2),))


class NestedPandas:
    def __init__(self, evil_pickle_path):
        self.path = str(evil_pickle_path)

    def __reduce__(self):
        return (pd.read_pickle, (self.path,))


class NestedLoadLearner:
    def __init__(self, evil_path):
        self.path = str(evil_path)

    def __reduce__(self):
        from fastai.learner import load_learner

        return (load_learner, (self.path,))


def plant(internals: pathlib.Path, **payloads) -> None:
    """Hide payload objects in a genuine fastai internals file, as attributes of its Recorder callback."""
    learner = full_pickle_learner(internals)
    for name, payload in payloads.items():
        setattr(learner.recorder, name, payload)
    save_learner(learner, internals)


def plant_os_system(internals: pathlib.Path, marker) -> None:
    """Hide ``os.system('touch marker')`` in a genuine fastai internals file."""
    plant(internals, note=OsSystem(marker))


def stream_payload(marker) -> bytes:
    """A whole data.pkl that is nothing but ``os.system('touch marker')``."""
    cmd = f"touch {marker}".encode()
    return (b"\x80\x02cposix\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R.")


def build_on_class_payload() -> bytes:
    """BUILD with slot state on fastai's Categorify *class*: setattr(Categorify, 'encodes', print)."""
    return (b"\x80\x02cfastai.tabular.core\nCategorify\n"
            b"N}X\x07\x00\x00\x00encodescbuiltins\nprint\ns\x86b.")


def find_instances(root, cls, limit=100_000) -> list:
    """Every object of type ``cls`` reachable from ``root`` through attributes and containers."""
    found, seen, todo = [], set(), [root]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, cls):
            found.append(obj)
        if isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            todo.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (types.FunctionType, types.MethodType, types.ModuleType)):
            todo.extend(vars(obj).values())
    return found


# --- deep equality of two object graphs -----------------------------------------------------------

def assert_same_graph(a, b, path="learner", seen=None, max_depth=60):
    """Same types everywhere, equal values: tensors, arrays, frames, dicts, lists, attributes."""
    import torch

    seen = set() if seen is None else seen
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if (id(a), id(b)) in seen or max_depth == 0:
        return
    seen.add((id(a), id(b)))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{path}: tensors differ"
        if type(a) is torch.nn.Parameter:
            assert a.requires_grad == b.requires_grad, path
        state_a, state_b = getattr(a, "__dict__", {}), getattr(b, "__dict__", {})
        assert_same_graph(dict(state_a), dict(state_b), path + ".__dict__", seen, max_depth - 1)
        return
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{path}: arrays differ"
        return
    if isinstance(a, (pd.DataFrame, pd.Series, pd.Index)):
        assert a.equals(b), f"{path}: pandas objects differ"
        return
    if isinstance(a, (str, bytes, int, float, complex, bool, type(None), pathlib.PurePath, np.generic)):
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"
        return
    if isinstance(a, type) or callable(a) and not hasattr(a, "__dict__") or type(a).__name__ in (
            "function", "builtin_function_or_method", "method"):
        if type(a).__name__ == "method":
            assert a.__func__ is b.__func__, path
            return
        assert a is b, f"{path}: {a!r} is not {b!r}"
        return
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys differ"
        if hasattr(a, "default_factory"):
            assert a.default_factory is b.default_factory, f"{path}: default_factory differs"
        for k in a:
            assert_same_graph(a[k], b[k], f"{path}[{k!r}]", seen, max_depth - 1)
        return
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_graph(x, y, f"{path}[{i}]", seen, max_depth - 1)
        return
    if isinstance(a, (set, frozenset)):
        assert a == b, path
        return
    if hasattr(a, "__dict__"):
        skip = {"lock"}  # a fresh threading.Lock per load
        da = {k: v for k, v in vars(a).items() if k not in skip}
        db = {k: v for k, v in vars(b).items() if k not in skip}
        assert sorted(da) == sorted(db), f"{path}: attributes differ {sorted(set(da) ^ set(db))}"
        for k in da:
            assert_same_graph(da[k], db[k], f"{path}.{k}", seen, max_depth - 1)
        return
    assert a == b, f"{path}: {a!r} != {b!r}"


# --- hand-written pickle opcodes (protocol 2, as torch and AutoGluon files spell them) ----------------------

PROTO = b"\x80\x02"


def G(module: str, name: str) -> bytes:
    """GLOBAL module.name"""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def S(text: str) -> bytes:
    """BINUNICODE text"""
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def I(n: int) -> bytes:  # noqa: E743
    """BININT n"""
    return b"J" + struct.pack("<i", n)


def B(data: bytes) -> bytes:
    """bytes as protocol 2 (and torch) spell them: _codecs.encode(text, 'latin1')."""
    return G("_codecs", "encode") + S(data.decode("latin1")) + S("latin1") + b"\x86R"


def load_obj(path: pathlib.Path):
    with open(path, "rb") as fh:  # our own genuine file
        return pickle.load(fh)


def dump_obj(obj, path: pathlib.Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)  # as AutoGluon writes them


# --- strict mode's genuine golden set (tests/test_strict_genuine.py) --------------------------------------
# Real predictors as users train them: every CPU model family, every problem type, bagging, stacking, refit_full,
# categorical + text (n-gram) + datetime features, cached training data, model classes as hyperparameter keys, a
# LightGBM tree with a single leaf, hyperparameter tuning (plain and bagged), and the TabPFN family member AutoGluon
# can train offline (TabPFNMix from a random initialization: every other TabPFN-family model needs weights from a
# model hub).

FAMILY_NAMES = {"GBM": "LightGBM", "CAT": "CatBoost", "XGB": "XGBoost", "RF": "RandomForest", "XT": "ExtraTrees",
                "KNN": "KNeighbors", "LR": "LinearModel", "NN_TORCH": "NeuralNetTorch", "FASTAI": "NeuralNetFastAI",
                "TABPFNMIX": "TabPFNMix"}

# TabPFNMix without pre-trained weights (model_path_* None: "fitting model from random initialization"), tiny.
TABPFNMIX_OFFLINE = {"model_path_classifier": None, "model_path_regressor": None, "n_layers": 1, "n_heads": 2,
                     "dim": 32, "max_epochs": 1, "n_ensembles": 1}

# name -> (problem_type, what it covers); fit_genuine holds each recipe.
GENUINE = {
    "binary-bagged-stacked-refit": ("binary", "every CPU family, 2-fold bagging, one stack level, refit_full"),
    "multiclass-cache-data": ("multiclass", "every CPU family, tuning data, cache_data=True (utils/data)"),
    "regression": ("regression", "every CPU family, sample weights"),
    "quantile": ("quantile", "every family that supports quantiles"),
    "model-class-keys": ("binary", "hyperparameters keyed by the model classes themselves"),
    "lightgbm-single-leaf": ("regression", "a LightGBM model whose trees have a single leaf"),
    "tabpfnmix": ("binary", "TabPFNMix (TabPFN family) trained offline from a random initialization"),
    "hpo": ("binary", "hyperparameter tuning (search spaces, trials named <model>/T<n>)"),
    "hpo-bagged": ("binary", "hyperparameter tuning of a bagged model (trials are bags, HPO datasets on disk)"),
    "dummy-bagged": ("binary", "AutoGluon's DUMMY model (the constant predictor its own tests fit), bagged"),
}


def zoo_classes() -> dict[str, type]:
    """The model class behind each key of ZOO: what a user passes to fit instead of the key."""
    from autogluon.tabular.registry import ag_model_registry

    return {key: ag_model_registry.key_to_cls(key) for key in ZOO}


def fit_genuine(name: str, path: pathlib.Path):
    """Train the genuine predictor ``name`` of GENUINE at ``path`` (strict mode off: it is genuine)."""
    from autogluon.tabular import TabularPredictor

    problem_type = GENUINE[name][0]
    kwargs = {"quantile_levels": [0.1, 0.5, 0.9]} if problem_type == "quantile" else {}
    seed = sorted(GENUINE).index(name)
    data = make_table(240, problem_type, seed=seed)
    fit = dict(hyperparameters=ZOO)
    expected = set(FAMILY_NAMES[k] for k in ZOO)
    if name == "binary-bagged-stacked-refit":
        fit.update(num_bag_folds=2, num_bag_sets=1, num_stack_levels=1, dynamic_stacking=False)
    elif name == "multiclass-cache-data":
        fit.update(tuning_data=make_table(120, problem_type, seed=seed + 100))
    elif name == "regression":
        data["weight"] = np.linspace(0.5, 1.5, len(data))
        kwargs["sample_weight"] = "weight"
    elif name == "quantile":
        expected = {"LightGBM", "CatBoost", "RandomForest", "ExtraTrees", "NeuralNetTorch", "NeuralNetFastAI"}
        expected &= set(FAMILY_NAMES.values())
    elif name == "model-class-keys":
        fit["hyperparameters"] = {cls: dict(ZOO[key]) for key, cls in zoo_classes().items()}
    elif name == "lightgbm-single-leaf":
        # min_data_in_leaf above the row count: no split is possible, every tree is a single leaf (LightGBM
        # writes num_leaves=1 and an empty leaf_weight); a second, ordinary LightGBM beside it
        fit["hyperparameters"] = {"GBM": [
            {"num_boost_round": 5, "min_data_in_leaf": 10_000, "ag_args": {"name_suffix": "SingleLeaf"}},
            {"num_boost_round": 5}]}
        expected = {"LightGBMSingleLeaf", "LightGBM"}
    elif name == "tabpfnmix":
        fit["hyperparameters"] = {"TABPFNMIX": TABPFNMIX_OFFLINE}
        expected = {"TabPFNMix"}
    elif name in ("hpo", "hpo-bagged"):
        from autogluon.common import space

        # AutoGluon's own local HPO (no Ray Tune): two random trials over a search space
        fit["hyperparameters"] = {"GBM": {"num_boost_round": 20, "num_leaves": space.Int(4, 16)}}
        fit["hyperparameter_tune_kwargs"] = {"searcher": "random", "scheduler": "local", "num_trials": 2}
        if name == "hpo-bagged":
            fit.update(num_bag_folds=2, num_bag_sets=1, fit_weighted_ensemble=False)
        expected = {"LightGBM/T1", "LightGBM/T2"} if name == "hpo" else {"LightGBM_BAG_L1/T1", "LightGBM_BAG_L1/T2"}
    elif name == "dummy-bagged":
        fit.update(hyperparameters={"DUMMY": {}}, num_bag_folds=2, num_bag_sets=1)
        expected = {"Dummy_BAG_L1"}
    predictor = TabularPredictor(label="label", problem_type=problem_type, path=str(path), verbosity=0,
                                 learner_kwargs={"cache_data": True}, **kwargs)  # AutoGluon's default, explicit
    predictor.fit(data, **fit)
    if name == "binary-bagged-stacked-refit":
        predictor.refit_full()
    trained = {m.split("_")[0] for m in predictor.model_names()} | set(predictor.model_names())
    missing = expected - trained
    assert not missing, f"{name}: {sorted(missing)} failed to train (got {sorted(trained)})"
    return predictor


def genuine_recipe_source() -> str:
    """Everything the genuine predictors depend on in this file (their cache key hashes it)."""
    import inspect

    return "\n".join([inspect.getsource(make_table), repr(WORDS), repr(ZOO), repr(FAMILY_NAMES),
                      repr(TABPFNMIX_OFFLINE), repr(GENUINE), inspect.getsource(zoo_classes),
                      inspect.getsource(fit_genuine)])


# --- fitted AutoGluon feature generators (strict mode's value tests) -----------------------------------------

TEXT_FRAME = {"text": ["hello world! it is a test.", "another short text? yes @ home"] * 20}


def fitted_generator(cls, frame, **kwargs):
    """A real AutoGluon feature generator fitted on ``frame`` (a DataFrame)."""
    generator = cls(verbosity=0, **kwargs)
    generator.fit_transform(frame)
    return generator
