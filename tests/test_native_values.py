"""Issue 18: native state the libraries trust, found by the red team in strict mode.

1. LightGBM trees with a single leaf, written as LightGBM writes them, load (they were refused).
2. XGBoost: categorical splits, the categorical re-coder (``cats``) and ``num_feature`` are held to what XGBoost's
   own loader and predictor assume; genuine categorical models load.
3. CatBoost: every prediction of a model from an untrusted file runs in a forked sandbox (``native_sandbox``).
4. sklearn: the value invariants of ``native.SKLEARN_INVARIANTS``.

Every model here is trained for the test with the real library.  Each attack is first shown to be live against
the real library without the package (run in a forked child of a separate interpreter, with a timeout and a 1 GiB
address-space allowance, so a crash, hang or allocation costs nothing), then refused with a typed error.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import ag_torchfix
from ag_torchfix.load import native, native_sandbox
from ag_torchfix.core.errors import NativeSandboxError, SecureLoadError
from ag_torchfix.load.native import NativeStateError, UBJArray
from ag_torchfix.load.strict_unpickler import StrictUnpickler

HANG = 4.0   # seconds a case may run in the harness before it counts as hung (genuine ones take milliseconds)
RUNS = 2     # runs an attack gets to show its harm (out-of-bounds accesses depend on the heap's layout)


def strict_load(data: bytes):
    return StrictUnpickler(io.BytesIO(data)).load()


# ------------------------------------------------------------------------------------------------
# the harness: each case in a forked child of a fresh interpreter, with a timeout and a memory allowance
# ------------------------------------------------------------------------------------------------

HARNESS = textwrap.dedent(r'''
    import json, os, pickle, resource, signal, sys, time
    import numpy as np
    cases_file, hang = sys.argv[1], float(sys.argv[2])

    def run(kind, payload):  # what AutoGluon's predict path does with the state, with plain pickle / no checks
        if kind == "sklearn":
            blob, method, X = payload
            import scipy.sparse
            out = getattr(pickle.loads(blob), method)(X)
            if scipy.sparse.issparse(out):
                out.toarray()   # TextNgramFeatureGenerator: transform_matrix.toarray()
        elif kind == "xgboost":
            import xgboost
            data, X, how = payload
            if how == "sklearn":   # AutoGluon's XGBoostModel: XGBClassifier.load_model, predict_proba
                model = xgboost.XGBClassifier()
                model.load_model(bytearray(data))
                model.predict_proba(X)
            else:                  # the Booster on a DMatrix
                booster = xgboost.Booster()
                booster.load_model(bytearray(data))
                booster.predict(xgboost.DMatrix(X))
        elif kind == "lightgbm":
            import lightgbm
            text, X = payload
            lightgbm.Booster(model_str=text).predict(X)
        elif kind == "catboost":
            from catboost import CatBoost
            blob, X = payload
            model = CatBoost()
            model._load_from_string(blob)
            model.predict(X, prediction_type="Probability", thread_count=1)  # as the sandbox predicts: one
            # thread (CatBoost's thread stacks under the harness's 1 GiB address-space allowance aborted it once)

    def vm_size():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))

    import sklearn, scipy.sparse, xgboost, lightgbm, catboost  # imported before the forks, used after
    results = {}
    with open(cases_file, "rb") as f:
        cases = pickle.load(f)
    for name, kind, payload in cases:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            limit = vm_size() + (1 << 30)   # "allocates more than 1 GiB" fails here instead of on the machine
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                run(kind, payload)
                code = 0
            except BaseException as exc:
                os.write(write_fd, f"{type(exc).__name__}: {str(exc)[:300]}".encode())
                code = 3
            os._exit(code)
        os.close(write_fd)
        start = time.monotonic()
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - start > hang:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.005)
        message = os.read(read_fd, 4000).decode(errors="replace") if status is not None else ""
        os.close(read_fd)
        if status is None:
            results[name] = ["timeout", ""]
        elif os.WIFSIGNALED(status):
            results[name] = ["signal", signal.Signals(os.WTERMSIG(status)).name]
        elif os.WEXITSTATUS(status) == 0:
            results[name] = ["ok", ""]
        else:
            results[name] = ["exception", message]
    print(json.dumps(results))
''')


def _seen(result: list) -> set[str]:
    """What a harness outcome shows: its kind, the exception's type, and bad_alloc / MemoryError."""
    outcome, detail = result
    seen = {outcome, detail.split(":", 1)[0]} if outcome == "exception" else {outcome}
    if "bad_alloc" in detail or detail.startswith("MemoryError"):
        seen.add("bad_alloc")
    return seen


def run_harness(cases: list[tuple[str, str, object]], expected: dict[str, set[str]], tmp_path) -> dict:
    """{case: [outcome, detail]}; an attack that did no visible harm is run again, up to RUNS times."""
    outcomes: dict = {}
    pending = list(cases)
    for attempt in range(RUNS):
        path = tmp_path / f"cases-{attempt}.pkl"
        path.write_bytes(pickle.dumps(pending))
        env = dict(os.environ, AG_TORCHFIX_AUTOLOAD="0", OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-c", HARNESS, str(path), str(HANG)], capture_output=True,
                              text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outcomes.update(json.loads(proc.stdout))
        pending = [c for c in pending if c[0] in expected and not _seen(outcomes[c[0]]) & expected[c[0]]]
        if not pending:
            break
    return outcomes


class Outcomes(dict):
    """{case: [outcome, detail]}, with the payloads the harness ran (``payloads[case]``)."""

    payloads: dict


@pytest.fixture(scope="module")
def live(lgb_single_leaf, xgb_models, sk_fitted, cb_models, tmp_path_factory) -> Outcomes:
    """Every attack and control of this module, run once through one harness interpreter."""
    cases, expected = [], {}
    for more, hoped in (lgb_cases(lgb_single_leaf), xgb_cases(xgb_models), sk_cases(sk_fitted), cb_cases(cb_models)):
        cases += more
        expected |= hoped
    outcomes = Outcomes(run_harness(cases, expected, tmp_path_factory.mktemp("harness")))
    outcomes.payloads = {name: payload for name, _, payload in cases}
    return outcomes


# ------------------------------------------------------------------------------------------------
# 1. LightGBM: single-leaf trees
# ------------------------------------------------------------------------------------------------


def _lgb_train(params: dict, X, y, *, keep: bool):
    import lightgbm

    base = {"verbose": -1, "num_threads": 1, "deterministic": True, "seed": 0}
    return lightgbm.train({**base, **params}, lightgbm.Dataset(X, y), num_boost_round=4, keep_training_booster=keep)


@pytest.fixture(scope="module")
def lgb_single_leaf():
    """Real boosters with single-leaf trees: no split is possible (min_data_in_leaf above the rows), or one class
    of a multiclass problem has a constant target; written by a booster still in memory (leaf_weight=0) and by one
    read back from text, as lightgbm.train returns it by default (leaf_weight= empty)."""
    rng = np.random.default_rng(0)
    X = rng.random((80, 3))
    y_multi = np.where(X[:, 0] > 0.5, 1, 0)   # class 2 never occurs: its trees have nothing to split on
    boosters = {}
    for keep in (True, False):
        boosters[f"stump-keep={keep}"] = _lgb_train({"objective": "regression", "min_data_in_leaf": 500}, X,
                                                    rng.random(80), keep=keep)
        boosters[f"multiclass-keep={keep}"] = _lgb_train(
            {"objective": "multiclass", "num_class": 3, "min_data_in_leaf": 5}, X, y_multi, keep=keep)
    return boosters, X


def _stump_blocks(text: str) -> list[str]:
    return [b for b in re.findall(r"^Tree=\d+\n(?:.+\n)+", text, flags=re.M) if "\nnum_leaves=1\n" in b]


def test_lightgbm_writes_single_leaf_trees_both_ways(lgb_single_leaf):
    boosters, _ = lgb_single_leaf
    weights = {re.search(r"^leaf_weight=(.*)$", block, re.M)[1]
               for booster in boosters.values() for block in _stump_blocks(booster.model_to_string())}
    assert weights == {"", "0"}, weights   # read back from text / still in memory
    assert all(_stump_blocks(b.model_to_string()) for b in boosters.values())


def test_genuine_single_leaf_lightgbm_models_pass_and_load_strictly(lgb_single_leaf):
    boosters, X = lgb_single_leaf
    for name, booster in boosters.items():
        text = booster.model_to_string()
        native.check_lightgbm_model(text)
        loaded = strict_load(pickle.dumps(booster))
        assert np.array_equal(loaded.predict(X), booster.predict(X)), name


def _edit_stump(text: str, key: str, value: str) -> str:
    """Set ``key`` of the first single-leaf tree and recompute tree_sizes, as a careful attacker would."""
    from test_native import lgb_retree_sizes

    block = _stump_blocks(text)[0]
    new = re.sub(rf"^{key}=.*$", f"{key}={value}", block, count=1, flags=re.M)
    assert new != block
    return lgb_retree_sizes(text.replace(block, new, 1))


LGB_STUMP_MALFORMED = {
    "two leaf weights": ("leaf_weight", "0 0", "leaf_weight has 2 values"),
    "no leaf count": ("leaf_count", "", "leaf_count has 0 values, expected 1"),
    "categories": ("num_cat", "1", "single leaf but num_cat=1"),
    "internal node": ("left_child", "-1", "left_child has 1 values, expected 0"),
}


@pytest.mark.parametrize("case", sorted(LGB_STUMP_MALFORMED))
def test_malformed_single_leaf_trees_are_refused(lgb_single_leaf, case):
    key, value, reason = LGB_STUMP_MALFORMED[case]
    text = _edit_stump(lgb_single_leaf[0]["stump-keep=False"].model_to_string(), key, value)
    with pytest.raises(NativeStateError, match=re.escape(reason)):
        native.check_lightgbm_model(text)


def lgb_cases(lgb_single_leaf):
    boosters, X = lgb_single_leaf
    genuine = boosters["stump-keep=False"].model_to_string()
    bad = _edit_stump(genuine, "leaf_value", "")
    # LightGBM's CHECK_EQ in Tree::Tree aborts the process (or raises an untyped LightGBMError)
    return ([("lgb control", "lightgbm", (genuine, X)), ("lgb no value", "lightgbm", (bad, X))],
            {"lgb no value": {"LightGBMError", "signal"}})


def test_a_single_leaf_without_its_value_is_live_and_refused(live):
    assert live["lgb control"] == ["ok", ""]
    assert _seen(live["lgb no value"]) & {"LightGBMError", "signal"}, live["lgb no value"]
    bad = live.payloads["lgb no value"][0]
    with pytest.raises(NativeStateError, match="leaf_value has 0 values, expected 1"):
        native.check_lightgbm_model(bad)


# ------------------------------------------------------------------------------------------------
# 2. XGBoost: categorical splits, the re-coder, num_feature
# ------------------------------------------------------------------------------------------------


def _xgb_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = ["zeta", "Alpha", "\u00e4hm", "\u00e9clair", "b", "B", "", "x y", "\u65e5\u672c"]
    return pd.DataFrame({
        "a": rng.random(n),
        "s": pd.Categorical(rng.choice(names, n), categories=names),
        "i": pd.Categorical(rng.choice([30, -5, 7, 1000], n), categories=[1000, 30, -5, 7]),
        "u": pd.Categorical(rng.choice(["q", "r"], n)),
    })


@pytest.fixture(scope="module")
def xgb_models():
    """Genuine categorical models: string and integer categories, partition-based and one-hot splits, multiclass and
    regression; plus a plain numeric model."""
    import xgboost

    X = _xgb_frame(300)
    rng = np.random.default_rng(1)
    y = ((X["s"].isin(["zeta", "b", "x y"])) ^ (X["a"] > 0.5)).astype(int) + (X["i"] == 7).astype(int)
    common = dict(n_estimators=4, max_depth=3, enable_categorical=True, tree_method="hist", n_jobs=1)
    models = {
        "partition": xgboost.XGBClassifier(max_cat_to_onehot=1, **common).fit(X, y),
        "onehot": xgboost.XGBClassifier(max_cat_to_onehot=16, **common).fit(X, y),
        "regression": xgboost.XGBRegressor(**common).fit(X, rng.random(300)),
    }
    numeric = np.column_stack([rng.random((100, 3)), np.zeros(100)])   # the last column is never split on
    plain = xgboost.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(numeric, rng.integers(0, 2, 100))
    raw = {name: bytes(m.get_booster().save_raw("ubj")) for name, m in models.items()}
    raw["plain"] = bytes(plain.get_booster().save_raw("ubj"))
    return raw, X


def test_genuine_categorical_xgboost_models_pass(xgb_models):
    from test_native import ubj_encode

    raw, X = xgb_models
    for name, data in raw.items():
        native.check_xgboost_model(data)
        assert ubj_encode(native.decode_ubjson(data)) == data, name
    cats = native.decode_ubjson(raw["partition"])["learner"]["gradient_booster"]["model"]["cats"]
    assert len(cats["enc"]) == 4 and len(cats["sorted_idx"]) == 9 + 4 + 2   # strings, integers, strings
    trees = native.decode_ubjson(raw["partition"])["learner"]["gradient_booster"]["model"]["trees"]
    assert any(len(t["categories_nodes"]) for t in trees), "no categorical split covered"


def _xgb(raw, name: str, edit) -> bytes:
    from test_native import ubj_encode

    model = native.decode_ubjson(raw[name])
    edit(model)
    return ubj_encode(model)


def _trees(model) -> list:
    return model["learner"]["gradient_booster"]["model"]["trees"]


def _cat_tree(model) -> dict:
    return next(t for t in _trees(model) if len(t["categories_nodes"]) >= 2)


def _cats(model) -> dict:
    return model["learner"]["gradient_booster"]["model"]["cats"]


def _num_feature(value: int):
    def edit(model):
        model["learner"]["learner_model_param"]["num_feature"] = str(value)
        for tree in _trees(model):
            tree["tree_param"]["num_feature"] = str(value)
    return edit


def _bitfield_bomb(model) -> None:
    """One tree of 700 categorical splits, each on category 2**24 - 1: XGBoost gives each a 2 MiB bitfield."""
    tree = _trees(model)[0]
    depth = 700
    n = 2 * depth + 1
    idx = np.arange(n)
    internal = (idx % 2 == 0) & (idx < n - 1)
    left, right = np.where(internal, idx + 1, -1), np.where(internal, idx + 2, -1)
    parents = np.full(n, 2**31 - 1)
    parents[left[internal]] = parents[right[internal]] = idx[internal]
    f32 = lambda a: UBJArray("d", np.asarray(a, np.float32))  # noqa: E731
    i32 = lambda a: UBJArray("l", np.asarray(a, np.int32))  # noqa: E731
    nodes = np.flatnonzero(internal)
    tree.update(loss_changes=f32(np.zeros(n)), sum_hessian=f32(np.ones(n)), base_weights=f32(np.zeros(n)),
                split_conditions=f32(np.zeros(n)), left_children=i32(left), right_children=i32(right),
                parents=i32(parents), split_indices=i32(np.where(internal, 1, 0)),
                default_left=UBJArray("U", np.zeros(n, np.uint8)), split_type=UBJArray("U", internal.astype(np.uint8)),
                categories_nodes=i32(nodes), categories_segments=UBJArray("L", np.arange(len(nodes), dtype=np.int64)),
                categories_sizes=UBJArray("L", np.ones(len(nodes), np.int64)),
                categories=i32(np.full(len(nodes), 2**24 - 1)))
    tree["tree_param"]["num_nodes"] = str(n)


def _set(getter, key, index, value):
    def edit(model):
        getter(model)[key].values[index] = value
    return edit


def _reverse_sorted_idx(model):
    values = _cats(model)["sorted_idx"].values
    values[:9] = values[:9][::-1].copy()


# name -> (model, edit, how the harness predicts, what the library does, what the refusal says)
XGB_ATTACKS = {
    "segment past the categories": ("partition", _set(_cat_tree, "categories_segments", -1, 2**40), "sklearn",
                                    {"signal"}, "point outside the"),
    "size past the categories": ("partition", _set(_cat_tree, "categories_sizes", -1, 10**6), "sklearn",
                                 {"signal"}, "point outside the"),
    "negative category": ("partition", lambda m: _cat_tree(m)["categories"].values.__setitem__(slice(None), -2),
                          "sklearn", {"bad_alloc"}, "category outside"),
    "bitfield allocation": ("partition", _bitfield_bomb, "sklearn", {"bad_alloc"}, "bitfield words"),
    "re-coder sorted_idx out of range": ("partition", _set(_cats, "sorted_idx", 3, 10**9), "sklearn", {"signal"},
                                         "sorted_idx of column 1"),
    "re-coder segments": ("partition", _set(_cats, "feature_segments", 2, 100), "sklearn", {"signal"},
                          "feature_segments"),
    "re-coder string offsets": ("partition", lambda m: _cats(m)["enc"][1]["offsets"].values.__setitem__(-1, 10**6),
                                "sklearn", {"signal"}, "offsets do not delimit"),
    "re-coder order": ("partition", _reverse_sorted_idx, "sklearn", {"XGBoostError"}, "not the sorted order"),
    "re-coder value type": ("partition", lambda m: _cats(m)["enc"][2].__setitem__("type", 13), "sklearn",
                            {"XGBoostError"}, "type matches its values"),
    "huge num_feature": ("plain", _num_feature(2**31 - 1), "dmatrix", {"bad_alloc"},
                         "num_feature='2147483647' is not an integer in"),
}


def xgb_cases(xgb_models):
    raw, X = xgb_models
    numeric = np.column_stack([np.random.default_rng(2).random((50, 3)), np.zeros(50)])
    cases = [("xgb control", "xgboost", (raw["partition"], X.iloc[:50], "sklearn")),
             ("xgb control-dmatrix", "xgboost", (raw["plain"], numeric, "dmatrix"))]
    for name, (model, edit, how, _, _) in XGB_ATTACKS.items():
        payload = (_xgb(raw, model, edit), X.iloc[:50] if how == "sklearn" else numeric, how)
        cases.append((f"xgb {name}", "xgboost", payload))
    cases.append(("xgb narrow num_feature", "xgboost", (_xgb(raw, "plain", _num_feature(3)), numeric, "sklearn")))
    expected = {f"xgb {name}": spec[3] for name, spec in XGB_ATTACKS.items()}
    return cases, expected | {"xgb narrow num_feature": {"ValueError"}}


def test_xgboost_controls_run_clean_in_the_harness(live):
    assert live["xgb control"] == ["ok", ""] and live["xgb control-dmatrix"] == ["ok", ""]


@pytest.mark.parametrize("case", sorted(XGB_ATTACKS))
def test_xgboost_attack_is_live_and_refused(live, case):
    expected, reason = XGB_ATTACKS[case][3], XGB_ATTACKS[case][4]
    outcome = live[f"xgb {case}"]
    assert _seen(outcome) & expected, f"{case}: XGBoost did {outcome}, expected {expected}"
    start = time.perf_counter()
    with pytest.raises(NativeStateError, match=re.escape(reason)):
        native.check_xgboost_model(live.payloads[f"xgb {case}"][0])
    assert time.perf_counter() - start < 2


def test_xgboost_num_feature_must_match_the_input_width(live):
    """XGBClassifier.inplace_predict refuses any other width (an untyped ValueError at predict); the check refuses it
    when the caller knows the width AutoGluon predicts on."""
    narrow, genuine = live.payloads["xgb narrow num_feature"][0], live.payloads["xgb control-dmatrix"][0]
    assert "ValueError" in _seen(live["xgb narrow num_feature"])
    native.check_xgboost_model(narrow)   # self-consistent: the file alone cannot tell
    native.check_xgboost_model(genuine, n_features=4)
    with pytest.raises(NativeStateError, match="num_feature=3 but the model predicts on 4 columns"):
        native.check_xgboost_model(narrow, n_features=4)


def test_xgboost_sizes_cannot_wrap_around(xgb_models):
    """int64 sizes whose sum wraps to the number of categories, and segments that follow them."""
    def wrap(model):
        tree = _cat_tree(model)
        sizes = tree["categories_sizes"].values
        sizes.view(np.uint64)[:2] += np.uint64(2**63)   # the int64 sum wraps around 2**64 back to the genuine total
        with np.errstate(over="ignore"):
            tree["categories_segments"].values[:] = np.cumsum(sizes) - sizes
        assert sizes.sum() == len(tree["categories"])
    with pytest.raises(NativeStateError, match="point outside the"):
        native.check_xgboost_model(_xgb(xgb_models[0], "partition", wrap))


# ------------------------------------------------------------------------------------------------
# 4. sklearn value invariants
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sk_fitted():
    """Tiny genuine estimators of every class in SKLEARN_INVARIANTS that AutoGluon predicts with."""
    from sklearn.compose import ColumnTransformer
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, QuantileTransformer, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X, y = rng.random((60, 4)), rng.integers(0, 3, 60)
    docs = ["the cat sat on the mat", "the dog ate the cat food", "a bird sang on the mat"] * 5
    wide = rng.random((5, 200_000))
    frame = pd.DataFrame(X, columns=list("abcd"))
    cat_x = np.array([[f"c{i}"] for i in range(3000)], dtype=object)
    return {
        # AutoGluon's TextNgramFeatureGenerator vectorizer (vectorizers.vectorizer_auto_ml_default), smaller
        "cv": (CountVectorizer(ngram_range=(1, 3), dtype=np.uint8).fit(docs), "transform", docs),
        "cv-long": (CountVectorizer(ngram_range=(1, 3), dtype=np.uint8).fit(docs), "transform",
                    [" ".join(f"w{i % 50}" for i in range(3000))]),
        "cv-redos": (CountVectorizer(dtype=np.uint8).fit(docs), "transform", ["a" * 40 + "!"]),
        "ohe": (OneHotEncoder(handle_unknown="ignore").fit(cat_x), "transform", cat_x),
        "knn": (KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(X, y), "predict_proba", X[:10]),
        "knn-wide": (KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(wide[:3], [0, 1, 0]),
                     "predict_proba", wide),
        "knr": (KNeighborsRegressor(n_neighbors=3, algorithm="brute").fit(X, rng.random(60)), "predict", X[:10]),
        "qt": (QuantileTransformer(n_quantiles=20).fit(X), "transform", X),
        "ss": (StandardScaler().fit(X), "transform", X),
        "mm": (MinMaxScaler(clip=True).fit(X), "transform", X),
        "lr": (LogisticRegression().fit(X, y), "predict_proba", X),
        "lr-predict": (LogisticRegression().fit(X, y), "predict", X),
        "ridge": (Ridge().fit(X, rng.random(60)), "predict", X),
        "si": (SimpleImputer().fit(X), "transform", X),
        "rf": (RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y), "predict_proba", X),
        "rf-predict": (RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y), "predict", X),
        "dt": (DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), "predict", X),
        "dummy": (DummyClassifier(strategy="prior").fit(X, y), "predict", X),
        "dummy-r": (DummyRegressor().fit(X, rng.random(60)), "predict", np.zeros((200_000, 4))),
        "ct": (ColumnTransformer([("s", StandardScaler(), ["a", "b"]),
                                  ("q", QuantileTransformer(n_quantiles=10), [2, 3])]).fit(frame), "transform", frame),
    }


def _wide_tree(forest):
    """The first tree made 10**9 features wide, consistently with itself (so that its own check passes)."""
    from sklearn.tree._tree import Tree

    tree_est = forest.estimators_[0]
    state = tree_est.tree_.__getstate__()
    nodes = state["nodes"].copy()
    nodes["feature"][nodes["feature"] >= 0] = 10**8
    tree = Tree(10**9, tree_est.tree_.n_classes, tree_est.tree_.n_outputs)
    tree.__setstate__(dict(state, nodes=nodes))
    tree_est.tree_, tree_est.n_features_in_ = tree, 10**9


# name -> (fitted estimator, tamper, what the library does, what the refusal says)
SK_ATTACKS = {
    "DummyClassifier class_prior_": ("dummy", lambda e: setattr(e, "class_prior_", np.r_[e.class_prior_, 0, 0, 9.0]),
                                     {"IndexError"}, "class_prior_ (6,)"),
    "DummyRegressor n_outputs_": ("dummy-r", lambda e: (setattr(e, "n_outputs_", 5000),
                                                        setattr(e, "constant_", np.zeros((1, 5000)))),
                                  {"MemoryError", "bad_alloc"}, "not one output"),
    "CountVectorizer vocabulary index": ("cv", lambda e: e.vocabulary_.__setitem__("the", 10**7), {"signal"},
                                         "vocabulary_ values are not a permutation"),
    "CountVectorizer negative index": ("cv", lambda e: e.vocabulary_.__setitem__("the", -(2**31 - 1)), {"signal"},
                                       "vocabulary_ values are not a permutation"),
    "CountVectorizer ngram_range": ("cv-long", lambda e: setattr(e, "ngram_range", (1, 3000)), {"bad_alloc", "timeout"},
                                    "ngram_range (1, 3000)"),
    "CountVectorizer token_pattern": ("cv-redos", lambda e: setattr(e, "token_pattern", r"(a+)+$"), {"timeout"},
                                      "token_pattern"),
    "OneHotEncoder output widths": ("ohe", lambda e: setattr(e, "_n_features_outs", [1]), {"signal"},
                                    "_n_features_outs [1] is not [3000]"),
    "OneHotEncoder categories": ("ohe", lambda e: setattr(e, "categories_", []), {"IndexError"},
                                 "categories_ is not a list of n_features_in_=1"),
    "KNeighbors _fit_X width": ("knn-wide", lambda e: setattr(e, "_fit_X", np.ascontiguousarray(e._fit_X[:, :1])),
                                {"signal"}, "_fit_X has shape (3, 1)"),
    "KNeighbors n_neighbors": ("knn", lambda e: setattr(e, "n_neighbors", 10**6), {"ValueError"}, "n_neighbors="),
    "KNeighbors _fit_method": ("knn", lambda e: setattr(e, "_fit_method", "kd_tree"), {"AttributeError"},
                               "_fit_method is 'kd_tree'"),
    "KNeighbors _y rows": ("knr", lambda e: setattr(e, "_y", e._y[:5]), {"IndexError"}, "_y has shape (5,)"),
    "KNeighbors _y codes": ("knn", lambda e: e._y.__setitem__(slice(None), 10**6), {"IndexError"},
                            "_y codes are not indices"),
    "QuantileTransformer references_": ("qt", lambda e: setattr(e, "references_", e.references_[:5]), {"ValueError"},
                                        "references_ (5,)"),
    "QuantileTransformer quantiles_": ("qt", lambda e: setattr(e, "quantiles_", np.ascontiguousarray(
        e.quantiles_[:, :2])), {"IndexError"}, "quantiles_ (20, 2)"),
    "QuantileTransformer output_distribution": ("qt", lambda e: setattr(e, "output_distribution", "bogus"),
                                                {"UnboundLocalError"}, "output_distribution"),
    "StandardScaler scale_": ("ss", lambda e: setattr(e, "scale_", e.scale_[:2]), {"ValueError"},
                              "scale_ has shape (2,)"),
    "MinMaxScaler min_": ("mm", lambda e: setattr(e, "min_", e.min_[:3]), {"ValueError"}, "min_ has shape (3,)"),
    "MinMaxScaler feature_range": ("mm", lambda e: setattr(e, "feature_range", (0,)), {"IndexError"},
                                   "feature_range (0,) is not a (min, max) pair"),
    "LogisticRegression coef_": ("lr", lambda e: setattr(e, "coef_", np.ascontiguousarray(e.coef_[:, :2])),
                                 {"ValueError"}, "coef_ has shape (3, 2)"),
    "LogisticRegression intercept_": ("lr", lambda e: setattr(e, "intercept_", e.intercept_[:2]), {"ValueError"},
                                      "intercept_ has shape (2,)"),
    "LogisticRegression classes_": ("lr-predict", lambda e: setattr(e, "classes_", e.classes_[:2]), {"IndexError"},
                                    "for 2 classes"),
    "Ridge coef_": ("ridge", lambda e: setattr(e, "coef_", e.coef_[:2]), {"ValueError"}, "coef_ has shape (2,)"),
    "SimpleImputer statistics_": ("si", lambda e: setattr(e, "statistics_", e.statistics_[:2]), {"ValueError"},
                                  "statistics_ has shape (2,)"),
    "Forest tree width": ("rf", _wide_tree, {"ValueError"}, "estimators_[0] has n_features_in_/n_outputs_ 1000000000"),
    "Forest n_classes_": ("rf", lambda e: setattr(e, "n_classes_", 5), {"ValueError"}, "forest's classes"),
    "Forest classes_": ("rf-predict", lambda e: setattr(e, "classes_", e.classes_[:1]), {"IndexError"},
                        "forest's classes"),
    "DecisionTree classes_": ("dt", lambda e: setattr(e, "classes_", e.classes_[:1]), {"IndexError"},
                              "do not match the tree's 3 classes"),
    "ColumnTransformer input indices": ("ct", lambda e: e._transformer_to_input_indices.__setitem__("q", [2, 10**6]),
                                        {"IndexError"}, "columns of transformer 'q'"),
}


def _tampered(sk_fitted, case: str) -> bytes:
    key, tamper = SK_ATTACKS[case][:2]
    estimator = copy.deepcopy(sk_fitted[key][0])
    tamper(estimator)
    return pickle.dumps(estimator)


def sk_cases(sk_fitted):
    cases = [(f"sk control {key}", "sklearn", (pickle.dumps(est), method, X))
             for key, (est, method, X) in sk_fitted.items()]
    for name, (key, _, _, _) in SK_ATTACKS.items():
        cases.append((f"sk {name}", "sklearn", (_tampered(sk_fitted, name), sk_fitted[key][1], sk_fitted[key][2])))
    vectorizer, method, docs = sk_fitted["cv"]
    cases.append(("sk memo", "sklearn", (_vocab_after_build(vectorizer), method, docs)))
    return cases, {f"sk {name}": spec[2] for name, spec in SK_ATTACKS.items()} | {"sk memo": {"signal"}}


def test_sklearn_controls_run_clean_and_load_strictly(live, sk_fitted):
    for key, (estimator, method, X) in sk_fitted.items():
        assert live[f"sk control {key}"] == ["ok", ""], key
        loaded = strict_load(pickle.dumps(estimator))
        if key not in ("cv-long", "cv-redos"):
            got, want = getattr(loaded, method)(X), getattr(estimator, method)(X)
            got, want = (a.toarray() if hasattr(a, "toarray") else a for a in (got, want))
            assert np.array_equal(got, want), key


@pytest.mark.parametrize("case", sorted(SK_ATTACKS))
def test_sklearn_attack_is_live_and_refused(live, sk_fitted, case):
    expected, reason = SK_ATTACKS[case][2], SK_ATTACKS[case][3]
    outcome = live[f"sk {case}"]
    assert _seen(outcome) & expected, f"{case}: sklearn did {outcome}, expected {expected}"
    start = time.perf_counter()
    with pytest.raises(pickle.UnpicklingError, match=re.escape(reason)):
        strict_load(_tampered(sk_fitted, case))
    assert time.perf_counter() - start < 2


def test_every_invariant_names_its_library_code():
    for name, invariants in native.SKLEARN_INVARIANTS.items():
        assert name.startswith("sklearn.") and invariants, name
        for invariant in invariants:
            assert re.search(r"[A-Za-z_]+\.[A-Za-z_]+|\b_[a-z_]+\b", invariant.reason), invariant
            assert re.search(r"SIGSEGV|SIGABRT|Error|hangs|GiB", invariant.reason), invariant


def _memo_index(data: bytes, after) -> int:
    """The memo index protocol 3 gives the object made by the first opcode for which ``after(ops, i)`` holds."""
    import pickletools

    ops = list(pickletools.genops(data))
    for i, (op, _, _) in enumerate(ops):
        if after(ops, i):
            put = ops[i + 1]
            assert put[0].name in ("BINPUT", "LONG_BINPUT")
            return put[1]
    raise AssertionError("not found")


def _get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)


def _vocab_after_build(vectorizer) -> bytes:
    """The genuine pickle, then: GET the vocabulary dict from the memo, SETITEM 'the' -> 10**7, POP."""
    data = pickle.dumps(vectorizer, protocol=3)
    vocab = _memo_index(data, lambda ops, i: ops[i][0].name == "EMPTY_DICT" and ops[i - 1][0].name == "BINPUT"
                        and ops[i - 2][1] == "vocabulary_")
    assert data.endswith(b"b.")
    return data[:-1] + _get(vocab) + b"X\x03\x00\x00\x00the" + b"J" + struct.pack("<i", 10**7) + b"s0."


def _second_build(estimator) -> bytes:
    """The genuine pickle, then: GET the estimator from the memo and BUILD it again with an empty state, POP."""
    data = pickle.dumps(estimator, protocol=3)
    index = _memo_index(data, lambda ops, i: ops[i][0].name == "NEWOBJ")
    return data[:-1] + _get(index) + b"}b0."


def test_memo_mutation_after_build_is_live_without_the_snapshot(live, sk_fitted):
    vectorizer, method, docs = sk_fitted["cv"]
    data = _vocab_after_build(vectorizer)
    assert pickle.loads(data).vocabulary_["the"] == 10**7   # plain pickle: the checked dict changed afterwards
    assert live["sk memo"][0] == "signal", live["sk memo"]
    loaded = strict_load(data)   # strict: the vectorizer holds the copy that was checked
    assert loaded.vocabulary_ == vectorizer.vocabulary_
    assert np.array_equal(loaded.transform(docs).toarray(), vectorizer.transform(docs).toarray())


def test_an_estimator_is_built_once(sk_fitted):
    for key in ("ss", "rf", "cv"):
        estimator = sk_fitted[key][0]
        strict_load(pickle.dumps(estimator, protocol=3))
        # strict_unpickler refuses a second BUILD of any object; native.check_built refuses it for estimators too
        with pytest.raises(pickle.UnpicklingError, match="already built|after it was built"):
            strict_load(_second_build(estimator))
    estimator = copy.deepcopy(sk_fitted["lr"][0])
    native.check_built(estimator)
    with pytest.raises(NativeStateError, match="already built"):
        native.check_built(estimator)


# ------------------------------------------------------------------------------------------------
# 3. CatBoost: predictions of a model from an untrusted file run in the sandbox
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cb_models():
    """A classifier with string labels and a categorical feature learned through CTRs, and a regressor."""
    from catboost import CatBoostClassifier, CatBoostRegressor

    rng = np.random.default_rng(0)
    n = 400
    names = [f"k{i}" for i in range(10)]
    X = pd.DataFrame({"f": rng.random(n), "c": rng.choice(names, n)})
    y = np.where(np.isin(X["c"], names[:5]) ^ (X["f"] > 0.7), "yes", "no")
    common = dict(iterations=5, depth=2, verbose=0, thread_count=1, random_seed=0, cat_features=[1],
                  allow_writing_files=False)
    clf = CatBoostClassifier(one_hot_max_size=1, simple_ctr=["Borders"], combinations_ctr=[], **common).fit(X, y)
    reg = CatBoostRegressor(**common).fit(X, rng.random(n))
    return clf, reg, X


def ctr_attack(model) -> bytes:
    """The model's blob with every CTR bucket pointing 2**30 values past its value array: rows whose category
    was seen in training read there; rows with unseen categories (the probe's "0" and "1") never do."""
    import tempfile

    blob = bytearray(model._serialize_model())
    with tempfile.TemporaryDirectory() as tmp:
        model.save_model(os.path.join(tmp, "m.json"), format="json")   # CatBoost's own listing of its CTR tables
        with open(os.path.join(tmp, "m.json")) as f:
            tables = json.load(f)["ctr_data"]
    changed = 0
    for table in tables.values():
        hash_map, stride = table["hash_map"], table["hash_stride"]
        for key in (int(hash_map[i]) for i in range(0, len(hash_map), stride)):
            if key == 2**64 - 1:
                continue
            at = bytes(blob).index(struct.pack("<Q", key))   # a bucket: 8-byte hash, 4-byte value index
            blob[at + 8:at + 12] = struct.pack("<I", 2**30)
            changed += 1
    assert changed >= 5
    return bytes(blob)


def cb_cases(cb_models):
    clf, _, X = cb_models
    cases = [("cb control", "catboost", (clf._serialize_model(), X.iloc[:20])),
             ("cb ctr", "catboost", (ctr_attack(clf), X.iloc[:20]))]
    return cases, {"cb ctr": {"signal"}}


def _strict_catboost(model):
    loaded = strict_load(pickle.dumps(model))
    assert native_sandbox.is_marked(loaded) and not native_sandbox.is_marked(model)
    return loaded


def _count_forks(monkeypatch) -> list:
    from ag_torchfix.load import forking

    calls = []
    real = forking.fork_run

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(forking, "fork_run", counting)
    return calls


def test_a_blob_that_passes_the_probe_crashes_on_other_rows_and_the_sandbox_catches_it(live, cb_models):
    clf, _, X = cb_models
    assert live["cb control"] == ["ok", ""]
    assert "signal" in _seen(live["cb ctr"]), live["cb ctr"]
    bad = ctr_attack(clf)
    native.check_catboost_blob(bad)   # the load-time probe alone lets it through
    state = clf.__getstate__()
    state["__model"] = bad
    tampered = type(clf).__new__(type(clf))
    tampered.__dict__["__getstate__"] = lambda: state   # pickles as NEWOBJ + BUILD of the tampered state
    loaded = strict_load(pickle.dumps(tampered))
    assert native_sandbox.is_marked(loaded)
    start = time.perf_counter()
    with pytest.raises(NativeSandboxError, match="crashed the sandbox with SIG") as info:
        loaded.predict_proba(X.iloc[:20])
    assert isinstance(info.value, SecureLoadError) and time.perf_counter() - start < 10
    pickle.loads(pickle.dumps(info.value))   # picklable across processes, like every refusal


def test_sandboxed_predictions_are_identical(cb_models, monkeypatch):
    clf, reg, X = cb_models
    sandboxed_clf, sandboxed_reg = _strict_catboost(clf), _strict_catboost(reg)
    forks = _count_forks(monkeypatch)
    for kind in ("Class", "Probability", "RawFormulaVal", "LogProbability"):
        want, got = clf.predict(X, prediction_type=kind), sandboxed_clf.predict(X, prediction_type=kind)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), kind
        assert [type(v) for v in got.flat[:3]] == [type(v) for v in want.flat[:3]], kind
    assert np.array_equal(sandboxed_clf.predict_proba(X), clf.predict_proba(X))
    assert sandboxed_clf.predict(X.iloc[0].tolist()) == clf.predict(X.iloc[0].tolist())   # a single object
    assert np.array_equal(sandboxed_reg.predict(X), reg.predict(X))
    assert np.array_equal(sandboxed_reg.virtual_ensembles_predict(X, virtual_ensembles_count=2),
                          reg.virtual_ensembles_predict(X, virtual_ensembles_count=2))
    assert len(forks) == 8   # one sandbox per call
    clf.predict(X)
    reg.predict(X)   # unmarked models predict in-process
    assert len(forks) == 8


def test_catboost_errors_stay_catboost_errors(cb_models):
    from catboost import CatBoostError

    clf, _, X = cb_models
    sandboxed = _strict_catboost(clf)
    with pytest.raises(CatBoostError) as want:
        clf.predict(X[["f"]].assign(g=1.0, h=2.0))
    with pytest.raises(CatBoostError) as got:
        sandboxed.predict(X[["f"]].assign(g=1.0, h=2.0))
    assert str(got.value) == str(want.value)


def test_the_mark_follows_copies_and_other_data_methods_refuse(cb_models):
    from catboost import Pool

    clf, _, X = cb_models
    sandboxed = _strict_catboost(clf)
    assert native_sandbox.is_marked(copy.deepcopy(sandboxed)) and native_sandbox.is_marked(sandboxed.copy())
    assert not native_sandbox.is_marked(copy.deepcopy(clf))
    with pytest.raises(NativeSandboxError, match="_calc_fstr is not available"):
        sandboxed.get_feature_importance(type="ShapValues", data=Pool(X, cat_features=[1]))
    with pytest.raises(NativeSandboxError, match="_staged_predict_iterator"):
        next(iter(sandboxed.staged_predict(X)))
    clf.get_feature_importance(type="ShapValues", data=Pool(X, cat_features=[1]))   # unmarked: as before


def test_sandbox_timeout_and_memory_limit_are_typed(cb_models, monkeypatch):
    clf, _, X = cb_models
    sandboxed = _strict_catboost(clf)
    monkeypatch.setenv("AG_TORCHFIX_SANDBOX_TIMEOUT", "0.0001")
    with pytest.raises(NativeSandboxError, match="ran longer than"):
        sandboxed.predict(X)
    monkeypatch.delenv("AG_TORCHFIX_SANDBOX_TIMEOUT")
    monkeypatch.setenv("AG_TORCHFIX_SANDBOX_MEMORY", "16")   # MiB the child may add to its address space
    assert np.array_equal(sandboxed.predict(X), clf.predict(X))
    from catboost import Pool

    def greedy(model, pool, *args, **kwargs):   # stands in for a model that allocates without end
        return np.ones(64 << 20)

    with pytest.raises(NativeSandboxError, match="ran out of the sandbox's memory"):
        native_sandbox.predict_in_sandbox(greedy, sandboxed, Pool(X, cat_features=[1]), (), {})


def test_sandbox_result_decoding_is_strict():
    good = native_sandbox._encode(np.arange(6, dtype=np.float64).reshape(3, 2))
    assert np.array_equal(native_sandbox._decode(good, 3), np.arange(6.0).reshape(3, 2))
    strings = native_sandbox._encode(np.array(["yes", "no"], dtype=object))
    decoded = native_sandbox._decode(strings, 2)
    assert decoded.dtype == object and decoded.tolist() == ["yes", "no"] and type(decoded[0]) is str
    header_len = struct.unpack("<I", good[8:12])[0]
    bad = {
        "rows": (good, 4),
        "truncated": (good[:-1], 3),
        "dtype": (good[:12] + good[12:12 + header_len].replace(b"<f8", b"|O8") + good[12 + header_len:], 3),
        "magic": (b"XXXXXXXX" + good[8:], 3),
        "three dimensions": (native_sandbox._encode(np.zeros((1, 1, 1))), 1),
    }
    for name, (data, rows) in bad.items():
        with pytest.raises(NativeSandboxError):
            native_sandbox._decode(data, rows)
    with pytest.raises(TypeError):
        native_sandbox._encode(np.array([object()], dtype=object))


def test_the_catboost_hook_is_reversible(cb_models):
    import catboost.core

    from helpers import package_uninstalled

    cls = catboost.core._CatBoostBase
    assert native_sandbox.is_applied()
    names = native_sandbox.SANDBOXED + native_sandbox.REFUSED + ("__deepcopy__",)
    patched = {name: cls.__dict__[name] for name in names}
    with package_uninstalled():
        assert not native_sandbox.is_applied()
        for name in names:
            assert cls.__dict__[name] is patched[name].__wrapped__, name
    assert native_sandbox.is_applied()
    for name in names:
        assert cls.__dict__[name].__wrapped__ is patched[name].__wrapped__
        assert cls.__dict__[name].__qualname__ == patched[name].__wrapped__.__qualname__


# ------------------------------------------------------------------------------------------------
# end to end: an AutoGluon predictor whose GBM has single-leaf trees, whose XGBoost uses categorical splits and
# whose CatBoost predicts in the sandbox, loaded strictly
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ag_predictor(tmp_path_factory):
    from autogluon.tabular import TabularPredictor
    from helpers import make_table

    path = tmp_path_factory.mktemp("ag") / "predictor"
    hyperparameters = {"GBM": {"min_data_in_leaf": 1000, "num_boost_round": 5},
                       "XGB": {"enable_categorical": True, "n_estimators": 5}, "CAT": {"iterations": 5}}
    with ag_torchfix.strict(False):
        TabularPredictor(label="label", path=str(path), verbosity=0).fit(
            make_table(150, "multiclass", seed=2), hyperparameters=hyperparameters, fit_weighted_ensemble=False)
    return path


def test_autogluon_predictor_with_these_models_loads_strictly_bit_for_bit(ag_predictor, monkeypatch):
    from autogluon.tabular import TabularPredictor
    from helpers import make_table

    data = make_table(40, "multiclass", seed=9, unseen=True).drop(columns=["label"])
    with ag_torchfix.strict(False):
        plain = TabularPredictor.load(str(ag_predictor), verbosity=0)
        expected = {m: plain.predict_proba(data, model=m).to_numpy() for m in plain.model_names()}
        text = plain._trainer.load_model("LightGBM").model.model_to_string()
    assert _stump_blocks(text) and "\nleaf_weight=\n" in text   # what LightGBM writes for a single leaf
    forks = _count_forks(monkeypatch)
    with ag_torchfix.strict():
        strict = TabularPredictor.load(str(ag_predictor), verbosity=0)
        got = {m: strict.predict_proba(data, model=m).to_numpy() for m in strict.model_names()}
        assert native_sandbox.is_marked(strict._trainer.load_model("CatBoost").model)
    assert got.keys() == expected.keys() == {"LightGBM", "XGBoost", "CatBoost"}
    for model in expected:
        assert np.array_equal(got[model], expected[model]), model
    assert len(forks) >= 2   # the CatBoost probe, then its prediction
