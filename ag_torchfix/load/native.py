"""Checks on the state that strict mode hands to native libraries (GitHub issues 9 and 18).

The restricted unpickler decides *which* objects a pickle may build; it cannot tell whether the arrays
and blobs those objects restore themselves from are well formed.  The native code behind them trusts
its input: a scikit-learn tree whose child index points back to the root makes ``predict`` loop
forever, a child index of 2**40 reads far outside the node array (SIGSEGV), a LightGBM tree with a
cycle hangs, one flipped byte in a CatBoost model crashes its loader, and XGBoost's UBJSON reader
reads past the end of a truncated file.  A crash or hang of the interpreter is never acceptable, so:

* ``check_sklearn_tree``   - sklearn ``Tree`` state, checked before ``Tree.__setstate__`` copies it;
  ``check_sklearn_estimator`` then ties the tree's width to its estimator's ``n_features_in_``;
* ``check_built``          - every object strict mode builds, right after its BUILD: sklearn estimators
  against ``SKLEARN_INVARIANTS`` (class -> the value invariants sklearn's predict path assumes without
  checking, each with the library code that relies on it), CatBoost models marked for the prediction
  sandbox (``native_sandbox``);
* ``check_lightgbm_model`` - the model text a ``lightgbm.basic.Booster`` state holds (``_handle``),
  parsed with the same (stricter) grammar LightGBM reads, checked before ``LGBM_BoosterLoadModelFromString``;
  single-leaf trees exactly as ``Tree::ToString`` writes them (with or without their one leaf weight);
* ``check_xgboost_model``  - the bytes of ``xgb.ubj``, decoded by a small bounded UBJSON reader and
  checked against the model schema XGBoost 3.x writes, before XGBoost's own reader sees them: trees,
  categorical splits as ``RegTree::LoadCategoricalSplit`` reads them (within a bitfield budget), the
  categorical re-coder as ``CatContainer::Load`` / ``enc::Recode`` use it, and a bounded ``num_feature``;
* ``check_catboost_blob``  - CatBoost's binary model format (flatbuffers plus CTR tables) is too large
  to re-implement, so the blob is loaded, and two rows predicted, in a sandbox child process; a child
  killed by a signal, exiting non-zero or outliving the timeout means refusal.

CatBoost decision (measured on the zoo's 9 blobs, 15-45 KB, in a process with torch and AutoGluon
loaded, 2-core machine): a fork of this process costs 25-65 ms per blob (median ~30 ms); a fresh
``sys.executable`` that imports catboost costs 0.5-0.8 s per blob; loading in-process costs 0.1 ms.
Fork is the default on Linux (``AG_TORCHFIX_NATIVE_SANDBOX=subprocess`` forces the interpreter; other
platforms use it always).  A forked child only loads and predicts with CatBoost (its own thread pool,
one thread) and leaves with ``os._exit``; should it deadlock on a lock another thread held at fork
time, the timeout is retried once in a fresh interpreter before the blob is refused.  Verdicts are
cached by SHA-256.  The probe proves that the blob loads, not that every row is safe: CTR bucket
indexes, borders and leaf offsets are only reached by the rows that use them (issue 18 shows a blob
whose CTR buckets point past their values: the probe passes, rows with a known category crash).  So a
model that only the probe has seen stays unvalidated, and every prediction it makes runs in a forked
sandbox (``native_sandbox``, on ``forking.fork_run``).

XGBoost decision: checked in-process (no sandbox): ``xgb.ubj`` is plain UBJSON with a documented tree
schema, so every index XGBoost follows can be verified; anything outside the schema XGBoost 3.x writes
for AutoGluon (gbtree, scalar trees, no deleted nodes) is refused.

Each validator raises ``NativeStateError`` with a one-line reason, or returns None.  They are pure
Python and numpy, import no native library at module import, and stay bounded in time and memory on
adversarial input (explicit size limits; recursion only under a fixed depth bound).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import threading

import numpy as np

from . import forking

__all__ = ["NativeStateError", "check_sklearn_tree", "check_sklearn_estimator", "check_lightgbm_model",
           "check_catboost_blob", "check_xgboost_model", "decode_ubjson", "check_built", "check_sklearn_values",
           "SKLEARN_INVARIANTS"]


class NativeStateError(Exception):
    """Native-library state that strict mode refuses to hand to the library."""


def _fail(reason: str):
    raise NativeStateError(reason)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# ================================================================================================
# scikit-learn trees
# ================================================================================================

TREE_LEAF = -1         # sklearn.tree._tree.TREE_LEAF: children of a leaf
TREE_UNDEFINED = -2    # sklearn.tree._tree.TREE_UNDEFINED: feature and threshold of a leaf
MAX_TREE_NODES = 50_000_000
_SKLEARN_STATE_KEYS = frozenset({"max_depth", "node_count", "nodes", "values"})
_node_dtype = None


def _sklearn_node_dtype(tree) -> np.dtype:
    """The dtype sklearn's Tree.__getstate__ writes for ``nodes`` (NODE_DTYPE of the running sklearn)."""
    global _node_dtype
    if _node_dtype is None:
        module = sys.modules.get(type(tree).__module__)
        dtype = getattr(module, "NODE_DTYPE", None)
        if not isinstance(dtype, np.dtype):  # ask a real, empty tree of the same class
            probe = type(tree)(1, np.array([1], dtype=np.intp), 1)
            dtype = probe.__getstate__()["nodes"].dtype
        _node_dtype = dtype
    return _node_dtype


def _depths_from_parents(parent: np.ndarray) -> np.ndarray:
    """Depth of every node of a tree given as a parent array (parent[0] == 0), by pointer jumping:
    O(n log depth), vectorised, at most 64 rounds for any tree."""
    dist = np.ones(parent.shape[0], dtype=np.int64)
    dist[0] = 0
    anc = parent.copy()
    for _ in range(64):
        if not anc.any():
            break
        dist = dist + dist[anc]
        anc = anc[anc]
    else:  # unreachable for a tree (depth < 2**63); kept so the loop is bounded on any input
        _fail("sklearn tree: depth did not converge")
    return dist


def check_sklearn_tree(tree, state) -> None:
    """Check ``state`` before ``sklearn.tree._tree.Tree.__setstate__(state)`` runs on ``tree``.

    ``tree`` is the constructed Tree (n_features, n_outputs, n_classes from its constructor).
    """
    name = "sklearn tree"
    # -- the constructed tree --------------------------------------------------------------------
    try:
        n_features = int(tree.n_features)
        n_outputs = int(tree.n_outputs)
        max_n_classes = int(tree.max_n_classes)
        n_classes = np.asarray(tree.n_classes)
    except Exception as exc:  # noqa: BLE001 - anything odd about the tree is a refusal
        _fail(f"{name}: not a constructed sklearn Tree ({type(exc).__name__})")
    if n_features < 1 or n_outputs < 1 or max_n_classes < 1:
        _fail(f"{name}: constructor arguments out of range (n_features={n_features}, n_outputs={n_outputs}, "
              f"max_n_classes={max_n_classes})")
    if n_classes.shape != (n_outputs,) or n_classes.min() < 1 or int(n_classes.max()) != max_n_classes:
        _fail(f"{name}: n_classes {n_classes.tolist()[:8]} inconsistent with n_outputs={n_outputs}")

    # -- the state dict --------------------------------------------------------------------------
    if type(state) is not dict:
        _fail(f"{name}: state is {type(state).__name__}, not dict")
    if set(state) != _SKLEARN_STATE_KEYS:
        _fail(f"{name}: state keys {sorted(map(str, state))} are not {sorted(_SKLEARN_STATE_KEYS)}")
    node_count, max_depth, nodes, values = (state["node_count"], state["max_depth"], state["nodes"],
                                            state["values"])
    if not _is_int(node_count) or not 1 <= node_count <= MAX_TREE_NODES:
        _fail(f"{name}: node_count {node_count!r} is not an integer in [1, {MAX_TREE_NODES}]")
    if not _is_int(max_depth) or max_depth < 0:
        _fail(f"{name}: max_depth {max_depth!r} is not a non-negative integer")
    node_count, max_depth = int(node_count), int(max_depth)
    if type(nodes) is not np.ndarray or nodes.ndim != 1:
        _fail(f"{name}: nodes is not a 1-d numpy array")
    expected = _sklearn_node_dtype(tree)
    if nodes.dtype != expected:
        _fail(f"{name}: nodes dtype {nodes.dtype} is not sklearn's {expected}")
    if not nodes.flags.c_contiguous:
        _fail(f"{name}: nodes array is not C-contiguous")
    if nodes.shape[0] != node_count:
        _fail(f"{name}: node_count={node_count} but {nodes.shape[0]} nodes")
    if type(values) is not np.ndarray or values.dtype != np.dtype(np.float64):
        _fail(f"{name}: values is not a float64 numpy array")
    if values.shape != (node_count, n_outputs, max_n_classes):
        _fail(f"{name}: values shape {values.shape} is not {(node_count, n_outputs, max_n_classes)}")
    if not values.flags.c_contiguous:
        _fail(f"{name}: values array is not C-contiguous")

    # -- structure -------------------------------------------------------------------------------
    left = nodes["left_child"].astype(np.int64, copy=False)
    right = nodes["right_child"].astype(np.int64, copy=False)
    feature = nodes["feature"].astype(np.int64, copy=False)
    threshold = nodes["threshold"]
    index = np.arange(node_count, dtype=np.int64)
    leaf = left == TREE_LEAF
    internal = ~leaf
    bad = leaf & (right != TREE_LEAF)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(f"{name}: leaf node {i} has right child {int(right[i])} (expected {TREE_LEAF})")
    for side, child in (("left", left), ("right", right)):
        bad = internal & ((child <= index) | (child >= node_count))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            _fail(f"{name}: node {i} has {side} child {int(child[i])}, not in ({i}, {node_count})")
    parents = index[internal]
    children = np.concatenate([left[internal], right[internal]])
    counts = np.bincount(children, minlength=node_count)
    if counts[0] != 0 or (counts[1:] != 1).any():
        i = int(np.flatnonzero(counts[1:] != 1)[0]) + 1 if (counts[1:] != 1).any() else 0
        _fail(f"{name}: node {i} is the child of {int(counts[i])} nodes (expected exactly one)")
    bad = internal & ((feature < 0) | (feature >= n_features))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(f"{name}: node {i} splits on feature {int(feature[i])}, not in [0, {n_features})")
    bad = leaf & ((feature != TREE_UNDEFINED) | (threshold != TREE_UNDEFINED))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(f"{name}: leaf node {i} has feature/threshold {int(feature[i])}/{float(threshold[i])} "
              f"(sklearn writes {TREE_UNDEFINED})")
    bad = internal & np.isnan(threshold)
    if bad.any():
        _fail(f"{name}: node {int(np.flatnonzero(bad)[0])} has a NaN threshold")
    if (nodes["missing_go_to_left"] > 1).any():
        _fail(f"{name}: missing_go_to_left outside {{0, 1}}")
    parent = np.zeros(node_count, dtype=np.int64)
    parent[left[internal]] = parents
    parent[right[internal]] = parents
    depth = int(_depths_from_parents(parent).max())
    if depth != max_depth:
        # decision_path() sizes its output by max_depth: a smaller value overruns it
        _fail(f"{name}: max_depth={max_depth} but the tree is {depth} deep")


def check_sklearn_estimator(estimator) -> None:
    """Check a built estimator that owns a Tree (``tree_``): the tree's width must be the estimator's.

    ``check_sklearn_tree`` bounds split features by ``tree.n_features``, but that number comes from the
    same pickle; sklearn validates X against the estimator's ``n_features_in_`` (and skips the check
    when the attribute is missing), then reads ``X[i, feature]`` unchecked.  A tree claiming 10**9
    features inside an estimator of 25 reads far outside X.  Call this after the estimator's state is
    set (its BUILD), before it predicts.  Objects without ``tree_`` are left alone.
    """
    tree = getattr(estimator, "tree_", None)
    if tree is None:
        return
    n_in = getattr(estimator, "n_features_in_", None)
    if not _is_int(n_in):
        _fail(f"sklearn estimator {type(estimator).__name__}: n_features_in_ is {n_in!r}, not an integer")
    try:
        width = int(tree.n_features)
    except Exception:  # noqa: BLE001
        _fail(f"sklearn estimator {type(estimator).__name__}: tree_ is not a sklearn Tree")
    if width != int(n_in):
        _fail(f"sklearn estimator {type(estimator).__name__}: its tree has n_features={width} but the "
              f"estimator validates X to n_features_in_={int(n_in)}")


# ================================================================================================
# LightGBM model text
# ================================================================================================

MAX_LGB_NUMBERS = 10_000_000      # numbers in all tree blocks together
MAX_LGB_LEAVES = 131_072          # LightGBM's own upper bound on num_leaves
MAX_LGB_TREES = 1_000_000
MAX_LGB_FEATURES = 10_000_000
MAX_LGB_CAT_WORDS = 1_000_000     # 32-bit words of one tree's categorical bitsets
_LGB_MAX_TREE_LINES = 22          # Tree::Tree(const char*) reads at most this many key=value lines
_INT = r"[-+]?[0-9]{1,10}"
_FLOAT = r"[-+]?(?:[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]{1,4})?|\.[0-9]+(?:[eE][-+]?[0-9]{1,4})?|inf|nan)"
_INT_LIST = re.compile(rf"(?:{_INT}(?: {_INT})*)?")
_INT_TOKEN = re.compile(_INT)
_FLOAT_TOKEN = re.compile(_FLOAT, re.IGNORECASE)
_FLOAT_LIST = re.compile(rf"(?:{_FLOAT}(?: {_FLOAT})*)?", re.IGNORECASE)
_UINT = re.compile(r"[0-9]{1,10}")
_SINT = re.compile(r"-?[0-9]{1,10}")
_PARAM_LINE = re.compile(r"\[[A-Za-z0-9_]+: [^\]\n]*\]")
_OBJ_TOKEN = re.compile(r"[a-z_]+(?::[-+0-9.eE]+)?")
_LGB_OBJECTIVES = frozenset({
    "regression", "regression_l1", "quantile", "huber", "fair", "poisson", "binary", "lambdarank",
    "rank_xendcg", "multiclass", "multiclassova", "cross_entropy", "cross_entropy_lambda", "mape", "gamma",
    "tweedie", "custom"})
_LGB_HEADER_KEYS = frozenset({
    "tree", "version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx", "objective",
    "average_output", "feature_names", "monotone_constraints", "feature_infos", "tree_sizes"})
_LGB_TREE_KEYS = {  # key -> (kind, length): length "L" = num_leaves, "I" = num_leaves - 1, "C" = num_cat + 1
    "num_leaves": ("int", None), "num_cat": ("int", None), "split_feature": ("ints", "I"),
    "split_gain": ("floats", "I"), "threshold": ("floats", "I"), "decision_type": ("ints", "I"),
    "left_child": ("ints", "I"), "right_child": ("ints", "I"), "leaf_value": ("floats", "L"),
    "leaf_weight": ("floats", "L"), "leaf_count": ("ints", "L"), "internal_value": ("floats", "I"),
    "internal_weight": ("floats", "I"), "internal_count": ("ints", "I"), "is_linear": ("int", None),
    "shrinkage": ("float", None), "cat_boundaries": ("ints", "C"), "cat_threshold": ("ints", None),
    "leaf_const": ("floats", "L"), "num_features": ("ints", "L"), "leaf_features": ("ints", None),
    "leaf_coeff": ("floats", None),
}


def _lgb_int(value: str, what: str, lo: int, hi: int) -> int:
    if not _SINT.fullmatch(value):
        _fail(f"lightgbm: {what}={value[:40]!r} is not an integer")
    number = int(value)
    if not lo <= number <= hi:
        _fail(f"lightgbm: {what}={number} not in [{lo}, {hi}]")
    return number


def _lgb_array(value: str, kind: str, count: int | None, what: str, budget: list, loose: bool = False) -> np.ndarray:
    """Parse a list of numbers.  Single spaces, as LightGBM writes most lists; ``loose`` accepts runs of
    spaces (linear trees' leaf_features/leaf_coeff, which LightGBM writes and reads space-insensitively)."""
    if loose:
        tokens = [token for token in value.split(" ") if token]
        token_re = _INT_TOKEN if kind == "ints" else _FLOAT_TOKEN
        if not all(token_re.fullmatch(token) for token in tokens):
            _fail(f"lightgbm: {what} is not a space separated list of numbers")
    else:
        pattern = _INT_LIST if kind == "ints" else _FLOAT_LIST
        if not pattern.fullmatch(value):
            _fail(f"lightgbm: {what} is not a single-space separated list of numbers")
        tokens = value.split(" ") if value else []
    if count is not None and len(tokens) != count:
        _fail(f"lightgbm: {what} has {len(tokens)} values, expected {count}")
    budget[0] -= len(tokens)
    if budget[0] < 0:
        _fail(f"lightgbm: more than {MAX_LGB_NUMBERS} numbers in the model")
    if kind == "ints":
        return np.array(tokens, dtype=np.int64) if tokens else np.zeros(0, dtype=np.int64)
    return np.array(tokens, dtype=np.float64) if tokens else np.zeros(0, dtype=np.float64)


def _lgb_check_objective(objective: str, num_class: int) -> None:
    tokens = objective.split(" ")
    if not objective or tokens[0] not in _LGB_OBJECTIVES or not all(_OBJ_TOKEN.fullmatch(t) for t in tokens[1:]):
        _fail(f"lightgbm: objective {objective[:60]!r} is not one LightGBM writes")
    params = {}
    for token in tokens[1:]:
        key, _, val = token.partition(":")
        if key in params:
            _fail(f"lightgbm: objective repeats {key!r}")
        params[key] = val
    if "num_class" in params or tokens[0] in ("multiclass", "multiclassova"):
        # ConvertOutput writes objective.num_class outputs into a buffer of the model's num_class
        if _lgb_int(params.get("num_class", ""), "objective num_class", 1, num_class) != num_class:
            _fail("lightgbm: objective num_class differs from the model's num_class")
    if "sigmoid" in params:
        try:
            sigmoid = float(params["sigmoid"])
        except ValueError:
            _fail(f"lightgbm: objective sigmoid {params['sigmoid']!r} is not a number")
        if not sigmoid > 0 or math.isinf(sigmoid):
            _fail(f"lightgbm: objective sigmoid {sigmoid} is not positive")


def _lgb_check_tree(t: int, fields: dict, max_feature_idx: int, budget: list) -> None:
    where = f"Tree={t}"
    for key in ("num_leaves", "num_cat", "leaf_value"):
        if key not in fields:
            _fail(f"lightgbm: {where} has no {key}")
    num_leaves = _lgb_int(fields["num_leaves"], f"{where} num_leaves", 1, MAX_LGB_LEAVES)
    num_cat = _lgb_int(fields["num_cat"], f"{where} num_cat", 0, MAX_LGB_LEAVES)
    is_linear = _lgb_int(fields.get("is_linear", "0"), f"{where} is_linear", 0, 1)
    if "shrinkage" in fields and not re.fullmatch(_FLOAT, fields["shrinkage"], re.IGNORECASE):
        _fail(f"lightgbm: {where} shrinkage is not a number")
    n_internal = num_leaves - 1
    stump = num_leaves == 1 and not is_linear
    if stump and (num_cat != 0 or "cat_boundaries" in fields or "cat_threshold" in fields):
        # LightGBM only ever writes num_cat=0 for a tree without splits (Tree(2, ...) and AsConstantTree)
        _fail(f"lightgbm: {where} has a single leaf but num_cat={num_cat} / category sets")
    arrays = {}
    for key, (kind, length) in _LGB_TREE_KEYS.items():
        if kind in ("int", "float") or key not in fields or key in ("leaf_features", "leaf_coeff", "cat_threshold"):
            continue
        count = {"L": num_leaves, "I": n_internal, "C": num_cat + 1, None: None}[length]
        if stump and key == "leaf_weight":
            # Tree::ToString writes ArrayToString(leaf_weight_, 1), which is "" when the vector is empty: a
            # single-leaf tree read back from text has none (Tree::Tree(const char*) returns before reading
            # leaf_weight when num_leaves <= 1), one trained in-process has one (Tree(2, ...) sizes it to 2).
            # LightGBM's reader ignores the line for such a tree; anything but 0 or 1 values is not LightGBM's.
            count = 1 if fields[key] else 0
        arrays[key] = _lgb_array(fields[key], kind, count, f"{where} {key}", budget)
    if num_leaves > 1 or is_linear:
        for key in ("left_child", "right_child", "split_feature", "threshold"):
            if key not in arrays:
                _fail(f"lightgbm: {where} has {num_leaves} leaves but no {key}")
    if num_leaves > 1:
        left, right = arrays["left_child"], arrays["right_child"]
        feature = arrays["split_feature"]
        index = np.arange(n_internal, dtype=np.int64)
        for side, child in (("left", left), ("right", right)):
            bad = ((child >= 0) & ((child <= index) | (child >= n_internal))) | (child < -num_leaves)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                _fail(f"lightgbm: {where} node {i} has {side} child {int(child[i])}: not an internal node "
                      f"in ({i}, {n_internal}) nor a leaf ~k with k < {num_leaves}")
        children = np.concatenate([left, right])
        internal_refs = np.bincount(children[children >= 0], minlength=n_internal)
        leaf_refs = np.bincount(~children[children < 0], minlength=num_leaves)
        if internal_refs[0] != 0 or (internal_refs[1:] != 1).any():
            _fail(f"lightgbm: {where} internal nodes are not each reached exactly once from the root")
        if (leaf_refs != 1).any():
            k = int(np.flatnonzero(leaf_refs != 1)[0])
            _fail(f"lightgbm: {where} leaf {k} is reached {int(leaf_refs[k])} times (expected once)")
        if ((feature < 0) | (feature > max_feature_idx)).any():
            i = int(np.flatnonzero((feature < 0) | (feature > max_feature_idx))[0])
            _fail(f"lightgbm: {where} node {i} splits on feature {int(feature[i])} > max_feature_idx "
                  f"{max_feature_idx}")
        decision = arrays.get("decision_type", np.zeros(n_internal, dtype=np.int64))
        if ((decision < 0) | (decision > 15) | (((decision >> 2) & 3) == 3)).any():
            _fail(f"lightgbm: {where} decision_type outside the values LightGBM writes")
        categorical = (decision & 1).astype(bool)
        if categorical.any():
            if num_cat == 0:
                _fail(f"lightgbm: {where} has a categorical split but num_cat=0")
            thresholds = fields["threshold"].split(" ")
            for i in np.flatnonzero(categorical).tolist():
                if not _UINT.fullmatch(thresholds[i]) or int(thresholds[i]) >= num_cat:
                    _fail(f"lightgbm: {where} categorical node {i} has threshold {thresholds[i][:20]!r}, "
                          f"not a category set index in [0, {num_cat})")
        if num_cat > 0:
            if "cat_boundaries" not in arrays or "cat_threshold" not in fields:
                _fail(f"lightgbm: {where} has num_cat={num_cat} but no cat_boundaries/cat_threshold")
            bounds = arrays["cat_boundaries"]
            if bounds[0] != 0 or (np.diff(bounds) < 0).any() or bounds[-1] > MAX_LGB_CAT_WORDS:
                _fail(f"lightgbm: {where} cat_boundaries are not non-decreasing from 0 (max {MAX_LGB_CAT_WORDS})")
            words = _lgb_array(fields["cat_threshold"], "ints", int(bounds[-1]), f"{where} cat_threshold", budget)
            if ((words < 0) | (words > 0xFFFFFFFF)).any():
                _fail(f"lightgbm: {where} cat_threshold has values outside uint32")
    if is_linear:
        if "leaf_const" not in arrays:
            _fail(f"lightgbm: {where} is linear but has no leaf_const")
        if "num_features" in arrays:
            counts = arrays["num_features"]
            if ((counts < 0) | (counts > max_feature_idx + 1)).any():
                _fail(f"lightgbm: {where} num_features out of range")
            total = int(counts.sum())
            if total:
                for key in ("leaf_features", "leaf_coeff"):
                    if key not in fields:
                        _fail(f"lightgbm: {where} linear leaves have {total} features but no {key}")
                feats = _lgb_array(fields["leaf_features"], "ints", total, f"{where} leaf_features", budget, True)
                _lgb_array(fields["leaf_coeff"], "floats", total, f"{where} leaf_coeff", budget, True)
                if ((feats < 0) | (feats > max_feature_idx)).any():
                    _fail(f"lightgbm: {where} leaf_features outside [0, {max_feature_idx}]")
    else:
        for key in ("leaf_const", "num_features", "leaf_features", "leaf_coeff"):
            if key in fields:
                _fail(f"lightgbm: {where} has {key} but is not linear")


def check_lightgbm_model(text) -> None:
    """Check LightGBM model text (``Booster.__getstate__()['_handle']``) before LightGBM parses it."""
    if not isinstance(text, str):
        _fail(f"lightgbm: model is {type(text).__name__}, not str")
    if len(text) > 2_000_000_000:
        _fail("lightgbm: model text larger than 2 GB")
    try:
        raw = text.encode("utf-8")  # what lightgbm.basic._c_str hands to LightGBM
    except UnicodeError:
        _fail("lightgbm: model text is not encodable as UTF-8")
    if b"\0" in raw or b"\r" in raw:
        _fail("lightgbm: model text contains NUL or carriage-return characters")
    lines = raw.split(b"\n")
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)

    # -- header: every non-empty line up to the first "Tree=" line -------------------------------
    header: dict[str, str] = {}
    n = 0
    while n < len(lines) and not lines[n].startswith(b"Tree="):
        line = lines[n].decode("utf-8")
        n += 1
        if not line:
            continue
        # GBDT::LoadModelFromString splits the line at '=' dropping empty pieces; mirror it exactly
        parts = [part for part in line.split("=") if part]
        if not parts:
            _fail(f"lightgbm: header line {line[:60]!r} is not key=value")
        key = parts[0]
        if len(parts) == 1:
            value = ""
        elif len(parts) == 2:
            value = parts[1]
        elif key in ("feature_names", "monotone_constraints") and line.startswith(key + "="):
            value = line[len(key) + 1:]
        else:
            _fail(f"lightgbm: header line {line[:60]!r} is not key=value")
        if key not in _LGB_HEADER_KEYS:
            _fail(f"lightgbm: unknown header key {key[:40]!r}")
        if key in header:
            _fail(f"lightgbm: header key {key!r} repeated")
        header[key] = value
    for key in ("num_class", "label_index", "max_feature_idx", "feature_names", "feature_infos", "tree_sizes"):
        if key not in header:
            _fail(f"lightgbm: header has no {key}")
    num_class = _lgb_int(header["num_class"], "num_class", 1, 1_000_000)
    per_iter = _lgb_int(header.get("num_tree_per_iteration", header["num_class"]), "num_tree_per_iteration",
                        1, 1_000_000)
    if per_iter != num_class:
        # predictions write num_tree_per_iteration outputs into a buffer of num_class
        _fail(f"lightgbm: num_tree_per_iteration={per_iter} differs from num_class={num_class}")
    _lgb_int(header["label_index"], "label_index", -1, MAX_LGB_FEATURES)
    max_feature_idx = _lgb_int(header["max_feature_idx"], "max_feature_idx", 0, MAX_LGB_FEATURES)
    if len([s for s in header["feature_names"].split(" ") if s]) != max_feature_idx + 1:
        _fail("lightgbm: feature_names count differs from max_feature_idx + 1")
    if len([s for s in header["feature_infos"].split(" ") if s]) != max_feature_idx + 1:
        _fail("lightgbm: feature_infos count differs from max_feature_idx + 1")
    if "monotone_constraints" in header:
        if not _INT_LIST.fullmatch(header["monotone_constraints"]) or \
                len(header["monotone_constraints"].split(" ")) != max_feature_idx + 1:
            _fail("lightgbm: monotone_constraints are not max_feature_idx + 1 integers")
    if "objective" in header:
        _lgb_check_objective(header["objective"], num_class)
    if not _INT_LIST.fullmatch(header["tree_sizes"]) or not header["tree_sizes"]:
        _fail("lightgbm: tree_sizes is not a list of sizes")
    tree_sizes = [int(s) for s in header["tree_sizes"].split(" ")]
    if len(tree_sizes) > MAX_LGB_TREES:
        _fail(f"lightgbm: more than {MAX_LGB_TREES} trees")
    if len(tree_sizes) % per_iter:
        _fail(f"lightgbm: {len(tree_sizes)} trees is not a multiple of num_tree_per_iteration={per_iter}")

    # -- tree blocks: "Tree=i", up to 22 key=value lines, blank lines ----------------------------
    budget = [MAX_LGB_NUMBERS]
    for t, size in enumerate(tree_sizes):
        if n >= len(lines) or lines[n] != f"Tree={t}".encode():
            _fail(f"lightgbm: expected the line Tree={t}")
        start = offsets[n]
        n += 1
        fields: dict[str, str] = {}
        while n < len(lines) and lines[n]:
            if len(fields) == _LGB_MAX_TREE_LINES:
                _fail(f"lightgbm: Tree={t} has more than {_LGB_MAX_TREE_LINES} lines")
            key, eq, value = lines[n].decode("utf-8").partition("=")
            if not eq:
                # Tree::Tree scans for '=' without a bound: a line without one reads past the line
                _fail(f"lightgbm: Tree={t} line {key[:40]!r} has no '='")
            if key not in _LGB_TREE_KEYS:
                _fail(f"lightgbm: Tree={t} has unknown key {key[:40]!r}")
            if key in fields:
                _fail(f"lightgbm: Tree={t} repeats {key!r}")
            fields[key] = value
            n += 1
        if n >= len(lines) - 1:
            # the last key line must end in a newline and a blank line: Tree::Tree reads on otherwise
            _fail(f"lightgbm: Tree={t} is not followed by a blank line")
        while n < len(lines) - 1 and not lines[n]:
            n += 1
        if size != offsets[n] - start:
            _fail(f"lightgbm: tree_sizes[{t}]={size} does not match the {t}th tree block")
        _lgb_check_tree(t, fields, max_feature_idx, budget)
    if n >= len(lines) or lines[n] != b"end of trees":
        _fail("lightgbm: the trees are not followed by 'end of trees'")

    # -- the rest: feature importances, parameters, pandas_categorical ---------------------------
    # LightGBM scans for "parameters:" and keeps the lines up to "end of parameters"; each of them is
    # later split at ':' and indexed without a bound check (GBDT::GetLoadedParam).
    rest = lines[n + 1:]
    if b"parameters:" in rest:
        i = rest.index(b"parameters:") + 1
        while i < len(rest) and rest[i] != b"end of parameters":
            line = rest[i].decode("utf-8")
            if line and line != "parameters:" and not _PARAM_LINE.fullmatch(line):
                _fail(f"lightgbm: parameter line {line[:60]!r} is not '[name: value]'")
            i += 1
        if i == len(rest):
            _fail("lightgbm: 'parameters:' without 'end of parameters'")


# ================================================================================================
# XGBoost: bounded UBJSON decoder and model schema
# ================================================================================================

MAX_UBJ_DEPTH = 32
MAX_UBJ_ITEMS = 5_000_000         # untyped values (each becomes a Python object)
_UBJ_SCALARS = {ord("i"): ">i1", ord("U"): ">u1", ord("I"): ">i2", ord("l"): ">i4", ord("L"): ">i8",
                ord("d"): ">f4", ord("D"): ">f8"}


class UBJArray:
    """A strongly typed UBJSON array: ``marker`` is the element type ('d', 'l', 'U', ...)."""

    __slots__ = ("marker", "values")

    def __init__(self, marker: str, values: np.ndarray):
        self.marker, self.values = marker, values

    def __len__(self):
        return self.values.shape[0]

    def __repr__(self):
        return f"UBJArray({self.marker!r}, n={len(self)})"


class _UBJReader:
    def __init__(self, data: bytes):
        self.data, self.pos, self.items = memoryview(data), 0, 0

    def need(self, size: int) -> None:
        if size < 0 or self.pos + size > len(self.data):
            _fail(f"xgboost: UBJSON truncated at byte {self.pos} (needs {size} more)")

    def byte(self) -> int:
        self.need(1)
        self.pos += 1
        return self.data[self.pos - 1]

    def scalar(self, marker: int):
        fmt = _UBJ_SCALARS[marker]
        size = int(fmt[-1])
        self.need(size)
        value = np.frombuffer(self.data, dtype=fmt, count=1, offset=self.pos)[0]
        self.pos += size
        return float(value) if fmt[1] == "f" else int(value)

    def length(self) -> int:
        if self.byte() != ord("L"):
            _fail(f"xgboost: UBJSON length at byte {self.pos - 1} is not int64 ('L')")
        n = self.scalar(ord("L"))
        if n < 0 or n > len(self.data) - self.pos:
            _fail(f"xgboost: UBJSON length {n} at byte {self.pos} exceeds the data")
        return n

    def string(self) -> str:
        n = self.length()
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            _fail(f"xgboost: UBJSON string at byte {self.pos - n} is not UTF-8")

    def count_item(self) -> None:
        self.items += 1
        if self.items > MAX_UBJ_ITEMS:
            _fail(f"xgboost: more than {MAX_UBJ_ITEMS} UBJSON values")

    def value(self, depth: int):
        if depth > MAX_UBJ_DEPTH:
            _fail(f"xgboost: UBJSON nested deeper than {MAX_UBJ_DEPTH}")
        self.count_item()
        marker = self.byte()
        if marker in _UBJ_SCALARS:
            return self.scalar(marker)
        if marker == ord("S"):
            return self.string()
        if marker == ord("{"):
            out = {}
            while True:
                self.need(1)
                if self.data[self.pos] == ord("}"):
                    self.pos += 1
                    return out
                key = self.string()
                if key in out:
                    _fail(f"xgboost: UBJSON object repeats key {key[:40]!r}")  # XGBoost keeps the first
                out[key] = self.value(depth + 1)
        if marker == ord("["):
            self.need(1)
            if self.data[self.pos] == ord("$"):
                self.pos += 1
                kind = self.byte()
                if kind not in _UBJ_SCALARS:
                    _fail(f"xgboost: UBJSON typed array of unsupported type {chr(kind)!r}")
                if self.byte() != ord("#"):
                    _fail("xgboost: UBJSON typed array without a count")
                fmt = _UBJ_SCALARS[kind]
                size = int(fmt[-1])
                if self.byte() != ord("L"):
                    _fail("xgboost: UBJSON typed array count is not int64")
                n = self.scalar(ord("L"))
                if n < 0 or n * size > len(self.data) - self.pos:
                    _fail(f"xgboost: UBJSON typed array of {n} elements exceeds the data")
                values = np.frombuffer(self.data, dtype=fmt, count=n, offset=self.pos).astype(np.dtype(fmt[1:]))
                self.pos += n * size
                return UBJArray(chr(kind), values)
            out = []
            if self.data[self.pos] == ord("#"):
                self.pos += 1
                n = self.length()
                for _ in range(n):
                    out.append(self.value(depth + 1))
                return out
            while True:
                self.need(1)
                if self.data[self.pos] == ord("]"):
                    self.pos += 1
                    return out
                out.append(self.value(depth + 1))
        if marker == ord("Z"):
            return None
        if marker in (ord("T"), ord("F")):
            return marker == ord("T")
        if marker == ord("C"):
            return self.byte()
        _fail(f"xgboost: UBJSON marker {chr(marker)!r} at byte {self.pos - 1} is not one XGBoost writes")


def decode_ubjson(data: bytes):
    """Decode UBJSON as XGBoost writes it (typed arrays become ``UBJArray``); bounded in depth and size."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail(f"xgboost: model is {type(data).__name__}, not bytes")
    reader = _UBJReader(bytes(data))
    value = reader.value(0)
    if reader.pos != len(reader.data):
        _fail(f"xgboost: {len(reader.data) - reader.pos} trailing bytes after the UBJSON value")
    return value


_XGB_TREE_ARRAYS = {  # key -> allowed typed-array markers; all of length num_nodes
    "loss_changes": "d", "sum_hessian": "d", "base_weights": "d", "split_conditions": "d",
    "left_children": "l", "right_children": "l", "parents": "l", "split_indices": "lL",
    "default_left": "U", "split_type": "U",
}
_XGB_CAT_ARRAYS = {"categories": "l", "categories_nodes": "l", "categories_segments": "L", "categories_sizes": "L"}
_XGB_TREE_KEYS = frozenset({"id", "tree_param", *_XGB_TREE_ARRAYS, *_XGB_CAT_ARRAYS})
_XGB_OBJECTIVES = {  # name -> parameter objects it carries
    "binary:logistic": {"reg_loss_param"}, "binary:logitraw": {"reg_loss_param"},
    "binary:hinge": set(), "reg:squarederror": {"reg_loss_param"}, "reg:squaredlogerror": {"reg_loss_param"},
    "reg:logistic": {"reg_loss_param"}, "reg:pseudohubererror": {"pseudo_huber_param"},
    "reg:absoluteerror": set(), "reg:quantileerror": {"quantile_loss_param"}, "reg:gamma": set(),
    "reg:tweedie": {"tweedie_regression_param"}, "count:poisson": {"poisson_regression_param"},
    "multi:softprob": {"softmax_multiclass_param"}, "multi:softmax": {"softmax_multiclass_param"},
}
_XGB_INVALID_PARENT = 0x7FFFFFFF   # RegTree::kInvalidNodeId with the is-left bit masked off
MAX_XGB_CATEGORY = 1 << 24       # common::InvalidCat: categories are < 2**24
MAX_XGB_CAT_WORDS = 1 << 24      # 32-bit words of all categorical split bitfields (64 MiB)
# XGBoost's FVec holds num_feature 4-byte entries per row of a 64-row block, per predicting thread
# (cpu_predictor.cc FVecFill): 2**18 features is 64 MiB per thread.  AutoGluon's widest inputs (one-hot
# categories, text n-grams) are tens of thousands of columns.
MAX_XGB_FEATURES = 1 << 18
_XGB_CAT_KINDS = {"i": 9, "U": 10, "I": 11, "l": 13, "L": 15}   # UBJ marker -> Value::ValueKind of the array
_DEC = re.compile(r"[0-9]{1,10}")
_XGB_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")


def _xgb_obj(value, where: str, keys=None, required=()) -> dict:
    if not isinstance(value, dict):
        _fail(f"xgboost: {where} is not an object")
    if keys is not None and not set(value) <= set(keys):
        _fail(f"xgboost: {where} has unknown keys {sorted(set(value) - set(keys))[:5]}")
    for key in required:
        if key not in value:
            _fail(f"xgboost: {where} has no {key!r}")
    return value


def _xgb_uint(params: dict, key: str, where: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    value = params.get(key)
    if not isinstance(value, str) or not _DEC.fullmatch(value) or not lo <= int(value) <= hi:
        _fail(f"xgboost: {where}.{key}={str(value)[:30]!r} is not an integer in [{lo}, {hi}]")
    return int(value)


def _xgb_int_list(value, where: str) -> np.ndarray:
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        _fail(f"xgboost: {where} is not an array of integers")
    return np.array(value, dtype=np.int64) if value else np.zeros(0, dtype=np.int64)


def _xgb_check_tree(t: int, tree, num_feature: int, budget: list) -> None:
    where = f"trees[{t}]"
    _xgb_obj(tree, where, _XGB_TREE_KEYS, ("id", "tree_param", *_XGB_TREE_ARRAYS, *_XGB_CAT_ARRAYS))
    if not _is_int(tree["id"]) or tree["id"] != t:
        _fail(f"xgboost: {where}.id={tree['id']!r} is not {t}")
    param = _xgb_obj(tree["tree_param"], f"{where}.tree_param",
                     ("num_deleted", "num_feature", "num_nodes", "size_leaf_vector"),
                     ("num_deleted", "num_feature", "num_nodes", "size_leaf_vector"))
    n = _xgb_uint(param, "num_nodes", f"{where}.tree_param", 1)
    if _xgb_uint(param, "num_deleted", f"{where}.tree_param") != 0:
        _fail(f"xgboost: {where} has deleted nodes")
    if _xgb_uint(param, "size_leaf_vector", f"{where}.tree_param") > 1:
        _fail(f"xgboost: {where} is a multi-target tree")
    if _xgb_uint(param, "num_feature", f"{where}.tree_param") != num_feature:
        _fail(f"xgboost: {where}.tree_param.num_feature differs from the learner's {num_feature}")
    arrays = {}
    for key, markers in {**_XGB_TREE_ARRAYS, **_XGB_CAT_ARRAYS}.items():
        value = tree[key]
        if not isinstance(value, UBJArray) or value.marker not in markers:
            _fail(f"xgboost: {where}.{key} is not a typed array of {markers!r}")
        if key in _XGB_TREE_ARRAYS and len(value) != n:
            _fail(f"xgboost: {where}.{key} has {len(value)} elements, num_nodes={n}")
        arrays[key] = value.values.astype(np.int64) if value.marker in "lLUiI" else value.values
    left, right, parents = arrays["left_children"], arrays["right_children"], arrays["parents"]
    index = np.arange(n, dtype=np.int64)
    leaf = left == -1
    internal = ~leaf
    if (leaf & (right != -1)).any():
        _fail(f"xgboost: {where} leaf {int(np.flatnonzero(leaf & (right != -1))[0])} has a right child")
    bad = internal & ((left <= index) | (left >= n - 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(f"xgboost: {where} node {i} has left child {int(left[i])}, not in ({i}, {n - 1})")
    bad = internal & (right != left + 1)
    if bad.any():  # prediction takes the right child to be left + 1
        i = int(np.flatnonzero(bad)[0])
        _fail(f"xgboost: {where} node {i} has right child {int(right[i])}, not left + 1")
    counts = np.bincount(np.concatenate([left[internal], right[internal]]), minlength=n)
    if counts[0] != 0 or (counts[1:] != 1).any():
        _fail(f"xgboost: {where} nodes are not each reached exactly once from the root")
    expected_parent = np.full(n, _XGB_INVALID_PARENT, dtype=np.int64)
    expected_parent[left[internal]] = index[internal]
    expected_parent[right[internal]] = index[internal]
    if (parents != expected_parent).any():
        i = int(np.flatnonzero(parents != expected_parent)[0])
        _fail(f"xgboost: {where} node {i} has parent {int(parents[i])}, expected {int(expected_parent[i])}")
    split = arrays["split_indices"]
    bad = (split < 0) | (split >= num_feature)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(f"xgboost: {where} node {i} splits on feature {int(split[i])}, not in [0, {num_feature})")
    if (arrays["default_left"] > 1).any():
        _fail(f"xgboost: {where}.default_left outside {{0, 1}}")
    split_type = arrays["split_type"]
    if (split_type > 1).any():
        _fail(f"xgboost: {where}.split_type outside {{0 (numerical), 1 (categorical)}}")
    cat_nodes = np.flatnonzero(split_type == 1)
    nodes, segments, sizes, cats = (arrays["categories_nodes"], arrays["categories_segments"],
                                    arrays["categories_sizes"], arrays["categories"])
    # RegTree::LoadCategoricalSplit walks the nodes in order; at the cnt-th categorical one it reads
    # categories_segments[cnt] and categories_sizes[cnt], then categories[segment, segment + size), all with
    # unchecked operator[] (tree/io_utils.h GetElem), and sizes a bitfield by the largest category it finds.
    if nodes.shape != cat_nodes.shape or (nodes != cat_nodes).any():
        _fail(f"xgboost: {where}.categories_nodes are not the nodes whose split_type is categorical")
    if leaf[cat_nodes].any():
        _fail(f"xgboost: {where} has a categorical leaf")
    if segments.shape != nodes.shape or sizes.shape != nodes.shape:
        _fail(f"xgboost: {where} categories_segments/sizes do not match categories_nodes")
    n_cats = cats.shape[0]
    if ((sizes < 1) | (sizes > n_cats) | (segments < 0) | (segments >= max(n_cats, 1))).any():
        # bounded before any sum: int64 sums of file-chosen sizes could wrap around to look consistent
        _fail(f"xgboost: {where} categories_segments/sizes point outside the {n_cats} categories")
    if sizes.sum() != n_cats or (segments != np.cumsum(sizes) - sizes).any():
        _fail(f"xgboost: {where} categories_segments/sizes do not partition categories")
    if ((cats < 0) | (cats >= MAX_XGB_CATEGORY)).any():
        # common::InvalidCat: XGBoost's categories are in [0, 2**24); a negative one makes the bitfield size
        # (max_cat + 1) wrap around (size_t), a write below it
        _fail(f"xgboost: {where} has a category outside [0, {MAX_XGB_CATEGORY})")
    if n_cats:
        maxima = np.maximum.reduceat(cats, segments)
        words = int(((maxima + 32) // 32).sum())   # KCatBitField::ComputeStorageSize(max_cat + 1) per node
        budget[0] -= words
        if budget[0] < 0:
            _fail(f"xgboost: the categorical splits need more than {MAX_XGB_CAT_WORDS} bitfield words "
                  f"({MAX_XGB_CAT_WORDS * 4 >> 20} MiB)")


def _xgb_check_cats(cats, num_feature: int) -> None:
    """The categorical re-coder XGBoost >= 3.1 saves for models trained on DataFrames with categories
    (``CatContainer::Save``).  At predict, ``enc::Recode`` indexes ``sorted_idx`` and each column's
    categories through ``feature_segments`` and string ``offsets`` (``Span::subspan``: an out-of-range one
    aborts the process; ``SearchSorted`` reads ``haystack[sorted_idx[i]]`` unchecked)."""
    cats = _xgb_obj(cats, "cats", ("enc", "feature_segments", "sorted_idx"), ("enc", "feature_segments",
                                                                             "sorted_idx"))
    enc, segments, sorted_idx = cats["enc"], cats["feature_segments"], cats["sorted_idx"]
    if not isinstance(enc, list):
        _fail("xgboost: cats.enc is not an array")
    for key, value in (("feature_segments", segments), ("sorted_idx", sorted_idx)):
        if not isinstance(value, UBJArray) or value.marker != "l":
            _fail(f"xgboost: cats.{key} is not a typed int32 array")
    segments, sorted_idx = segments.values.astype(np.int64), sorted_idx.values.astype(np.int64)
    if not enc:
        if len(segments) or len(sorted_idx):
            _fail("xgboost: cats has segments but no columns")
        return
    if len(enc) != num_feature:
        # enc::Recode: "New and old encoding should have the same number of columns" (the input's width)
        _fail(f"xgboost: cats.enc has {len(enc)} columns, num_feature={num_feature}")
    counts = np.zeros(len(enc), dtype=np.int64)
    keys: dict[int, object] = {}   # column -> what SortNames sorts it by
    for f, column in enumerate(enc):
        where = f"cats.enc[{f}]"
        if isinstance(column, dict) and "offsets" in column:
            column = _xgb_obj(column, where, ("offsets", "values"), ("offsets", "values"))
            offsets, values = column["offsets"], column["values"]
            if not (isinstance(offsets, UBJArray) and offsets.marker == "l" and isinstance(values, UBJArray)
                    and values.marker == "i"):
                _fail(f"xgboost: {where} is not a string column (int32 offsets, int8 values)")
            off = offsets.values.astype(np.int64)
            if len(off) == 0:
                if len(values):
                    _fail(f"xgboost: {where} has characters but no offsets")
                continue
            if off[0] != 0 or off[-1] != len(values) or (np.diff(off) < 0).any():
                _fail(f"xgboost: {where}.offsets do not delimit its {len(values)} characters")
            counts[f] = len(off) - 1
            if counts[f] == 0:
                _fail(f"xgboost: {where} is a string column of no categories")
            # Span<int8 const>'s operator< compares signed bytes: flipping the top bit orders them as bytes
            flipped = (values.values.astype(np.uint8) ^ 0x80).tobytes()
            keys[f] = [flipped[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
        else:
            column = _xgb_obj(column, where, ("type", "values"), ("type", "values"))
            values = column["values"]
            kind = _XGB_CAT_KINDS.get(values.marker) if isinstance(values, UBJArray) else None
            if kind is None or column["type"] != kind or type(column["type"]) is not int:
                # CatContainer::Load dispatches on "type" and casts "values" to it (an error when they differ);
                # XGBoost never writes float categories (error::NoFloatCat) nor untyped arrays
                _fail(f"xgboost: {where} is not an integer category column whose type matches its values")
            counts[f] = len(values)
            if counts[f]:
                keys[f] = values.values
    if len(segments) != len(enc) + 1 or segments[0] != 0 or (np.diff(segments) != counts).any():
        _fail("xgboost: cats.feature_segments are not the running totals of the columns' category counts")
    if segments[-1] >= 2**31 or len(sorted_idx) != segments[-1]:
        _fail("xgboost: cats.sorted_idx does not have one entry per category")
    for f, key in keys.items():
        # what CatContainer::Sort writes: the stable argsort of the column (SearchSorted binary-searches it, and
        # reads haystack[sorted_idx[i]] unchecked; a wrong order makes genuine categories "not in the training set")
        if isinstance(key, list):
            expected = np.array(sorted(range(len(key)), key=key.__getitem__), dtype=np.int64)
        else:
            expected = np.argsort(key, kind="stable")
        if not np.array_equal(sorted_idx[segments[f]:segments[f + 1]], expected):
            _fail(f"xgboost: cats.sorted_idx of column {f} is not the sorted order of its {int(counts[f])} categories")


def check_xgboost_model(data, n_features: int | None = None) -> None:
    """Check the bytes of an ``xgb.ubj`` (``Booster.save_model`` in UBJSON) before XGBoost reads them.

    ``n_features``, when known, is the width of the data the model will predict on (AutoGluon's
    preprocessed input): ``XGBModel.predict`` -> ``Booster.inplace_predict`` raises ValueError("Feature shape
    mismatch") for any other num_feature, and on a DMatrix ``Learner::ValidateDMatrix`` refuses wider data;
    both untyped errors at predict.
    """
    root = decode_ubjson(data)
    _xgb_obj(root, "model", ("learner", "version"), ("learner", "version"))
    version = root["version"]
    if not isinstance(version, list) or len(version) != 3 or not all(_is_int(v) and v >= 0 for v in version):
        _fail("xgboost: version is not [major, minor, patch]")
    if version[0] < 1:
        _fail(f"xgboost: model version {version} is older than the UBJSON format")
    learner = _xgb_obj(root["learner"], "learner",
                       ("attributes", "feature_names", "feature_types", "gradient_booster",
                        "learner_model_param", "objective"),
                       ("gradient_booster", "learner_model_param", "objective"))
    for key in ("feature_names", "feature_types"):
        if key in learner and (not isinstance(learner[key], list) or
                               not all(isinstance(s, str) for s in learner[key])):
            _fail(f"xgboost: learner.{key} is not an array of strings")
    attributes = learner.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        _fail("xgboost: learner.attributes is not an object of strings")
    lmp = _xgb_obj(learner["learner_model_param"], "learner_model_param",
                   ("base_score", "boost_from_average", "num_class", "num_feature", "num_target"),
                   ("base_score", "num_class", "num_feature"))
    num_feature = _xgb_uint(lmp, "num_feature", "learner_model_param", 1, MAX_XGB_FEATURES)
    if n_features is not None and num_feature != n_features:
        _fail(f"xgboost: num_feature={num_feature} but the model predicts on {n_features} columns")
    num_class = _xgb_uint(lmp, "num_class", "learner_model_param", 0, 1_000_000)
    if "num_target" in lmp and _xgb_uint(lmp, "num_target", "learner_model_param") != 1:
        _fail("xgboost: multi-target models are not supported")
    if "boost_from_average" in lmp and lmp["boost_from_average"] not in ("0", "1"):
        _fail("xgboost: learner_model_param.boost_from_average is not 0 or 1")
    n_groups = max(1, num_class)
    base = lmp["base_score"]
    if not isinstance(base, str):
        _fail("xgboost: base_score is not a string")
    scores = base[1:-1].split(",") if base.startswith("[") and base.endswith("]") else [base]
    if not all(_XGB_FLOAT.fullmatch(s) for s in scores) or len(scores) not in (1, n_groups):
        _fail(f"xgboost: base_score {base[:60]!r} is not 1 or {n_groups} numbers")
    for key in ("feature_names", "feature_types"):
        if len(learner.get(key, [])) not in (0, num_feature):
            _fail(f"xgboost: learner.{key} has neither 0 nor num_feature={num_feature} entries")

    objective = _xgb_obj(learner["objective"], "objective", None, ("name",))
    name = objective["name"]
    if name not in _XGB_OBJECTIVES or not set(objective) - {"name"} <= _XGB_OBJECTIVES[name]:
        _fail(f"xgboost: objective {str(name)[:40]!r} with {sorted(set(objective) - {'name'})} is not supported")
    for key in set(objective) - {"name"}:
        params = _xgb_obj(objective[key], f"objective.{key}")
        if not all(isinstance(k, str) and isinstance(v, str) and len(v) < 4096 for k, v in params.items()):
            _fail(f"xgboost: objective.{key} is not an object of strings")
    if name.startswith("multi:"):
        smp = objective.get("softmax_multiclass_param", {})
        if _xgb_uint(smp, "num_class", "objective.softmax_multiclass_param", 1) != num_class:
            _fail("xgboost: objective num_class differs from learner_model_param.num_class")
    elif num_class > 1:
        _fail(f"xgboost: objective {name} with num_class={num_class}")

    booster = _xgb_obj(learner["gradient_booster"], "gradient_booster", ("name", "model"), ("name", "model"))
    if booster["name"] != "gbtree":
        _fail(f"xgboost: booster {str(booster['name'])[:20]!r} is not gbtree")
    model = _xgb_obj(booster["model"], "gradient_booster.model",
                     ("gbtree_model_param", "trees", "tree_info", "iteration_indptr", "cats"),
                     ("gbtree_model_param", "trees", "tree_info", "iteration_indptr"))
    gmp = _xgb_obj(model["gbtree_model_param"], "gbtree_model_param", ("num_parallel_tree", "num_trees"),
                   ("num_parallel_tree", "num_trees"))
    num_trees = _xgb_uint(gmp, "num_trees", "gbtree_model_param")
    num_parallel = _xgb_uint(gmp, "num_parallel_tree", "gbtree_model_param", 1, 100_000)
    trees = model["trees"]
    if not isinstance(trees, list) or len(trees) != num_trees:
        _fail(f"xgboost: {num_trees} trees declared, {len(trees) if isinstance(trees, list) else 'no'} stored")
    tree_info = _xgb_int_list(model["tree_info"], "tree_info")
    if tree_info.shape[0] != num_trees or ((tree_info < 0) | (tree_info >= n_groups)).any():
        _fail(f"xgboost: tree_info is not {num_trees} output groups in [0, {n_groups})")
    indptr = _xgb_int_list(model["iteration_indptr"], "iteration_indptr")
    step = n_groups * num_parallel
    if indptr.shape[0] < 1 or indptr[0] != 0 or indptr[-1] != num_trees or (np.diff(indptr) != step).any():
        _fail(f"xgboost: iteration_indptr is not 0..{num_trees} in steps of {step}")
    if "cats" in model:
        _xgb_check_cats(model["cats"], num_feature)
    budget = [MAX_XGB_CAT_WORDS]
    for t, tree in enumerate(trees):
        _xgb_check_tree(t, tree, num_feature, budget)


# ================================================================================================
# scikit-learn value invariants (issue 18): what sklearn's predict path assumes of fitted state
# ================================================================================================
#
# sklearn validates its hyper-parameters and builds its fitted attributes in ``fit``; ``transform`` and
# ``predict`` trust them.  A pickle sets both at will.  Each invariant below counts because breaking it
# crashes, hangs, allocates more than 1 GiB or raises an untyped error in AutoGluon's predict path; each names
# the library code that relies on it.  They run after the estimator's BUILD (``check_built``), on private
# copies of the containers and arrays they check (the pickle's memo still holds the originals, which later
# opcodes could mutate), and an estimator they cover may only be BUILT once.

MAX_NGRAM = 32                       # CountVectorizer n-grams: AutoGluon uses (1, 3)
SKLEARN_TOKEN_PATTERNS = frozenset({r"(?u)\b\w\w+\b"})   # CountVectorizer's default (AutoGluon's vectorizer)


class Invariant:
    """One value invariant: ``check(estimator)`` returns a problem or None; ``reason`` names the library code
    that relies on it and what breaking it does."""

    __slots__ = ("check", "reason")

    def __init__(self, check, reason: str):
        self.check, self.reason = check, reason

    def __repr__(self):
        return f"Invariant({self.check.__name__}: {self.reason})"


def _n_in(est) -> int:
    n = est.__dict__.get("n_features_in_")
    if not _is_int(n) or n < 1:
        _fail(f"sklearn {type(est).__name__}: n_features_in_ is {n!r}, not a positive integer")
    return int(n)


def _array(est, name: str, *, ndim: int | None = None, numeric: bool = True, optional: bool = False):
    """The fitted array ``name``, or None when absent and optional."""
    value = est.__dict__.get(name)
    if value is None and optional:
        return None
    if type(value) is not np.ndarray or (ndim is not None and value.ndim != ndim) or (
            numeric and value.dtype.kind not in "biuf"):
        _fail(f"sklearn {type(est).__name__}: {name} is not a {'numeric ' if numeric else ''}"
              f"{f'{ndim}-d ' if ndim is not None else ''}numpy array")
    return value


def _private(value, depth: int = 0):
    """A copy of a container or array from the pickle that no later opcode can reach (the memo keeps the
    original: SETITEM/APPEND on it, or a second BUILD of an array, would otherwise change checked state)."""
    if type(value) is np.ndarray:
        return value.copy(order="K")
    if depth >= 3 or type(value) not in (list, tuple, dict):
        return value
    if type(value) is dict:
        return {key: _private(item, depth + 1) for key, item in value.items()}
    items = [_private(item, depth + 1) for item in value]
    return items if type(value) is list else tuple(items)


def _fitted(est) -> bool:
    """sklearn's own test (check_is_fitted): a public attribute ending in an underscore."""
    return any(key.endswith("_") and not key.startswith("__") for key in est.__dict__)


def _sk_params(est) -> str | None:
    """sklearn's own fit-time parameter validation, over the parameters the file holds: a parameter another
    sklearn release has and this one lacks (or the reverse) is not a value the file chose, and sklearn's predict
    never reads the whole parameter set (``_validate_params`` would: get_params reads every one)."""
    constraints = getattr(type(est), "_parameter_constraints", None)
    if not isinstance(constraints, dict):
        return None
    try:
        from sklearn.utils._param_validation import validate_parameter_constraints

        present = {name: est.__dict__[name] for name in constraints if name in est.__dict__}
        validate_parameter_constraints({name: constraints[name] for name in present}, present,
                                       caller_name=type(est).__name__)
    except Exception as exc:  # noqa: BLE001 - sklearn's InvalidParameterError, or worse on crafted values
        return f"hyper-parameters fail sklearn's own validation ({type(exc).__name__}: {str(exc)[:160]})"
    return None


def _sk_vocabulary(est) -> str | None:
    vocab = est.__dict__.get("vocabulary_")
    if type(vocab) is not dict or not vocab:
        return "vocabulary_ is not a non-empty dict"
    if not all(type(k) is str for k in vocab) or not all(_is_int(v) for v in vocab.values()):
        return "vocabulary_ does not map strings to integers"
    values = np.fromiter((int(v) if -2**62 < v < 2**62 else -1 for v in vocab.values()), dtype=np.int64,
                         count=len(vocab))
    if not np.array_equal(np.sort(values), np.arange(len(vocab))):
        return f"vocabulary_ values are not a permutation of range({len(vocab)})"
    return None


def _sk_ngram_range(est) -> str | None:
    ngrams = est.__dict__.get("ngram_range")
    if not (type(ngrams) is tuple and len(ngrams) == 2 and all(_is_int(n) for n in ngrams)
            and 1 <= ngrams[0] <= ngrams[1] <= MAX_NGRAM):
        return f"ngram_range {ngrams!r} is not (min_n, max_n) with 1 <= min_n <= max_n <= {MAX_NGRAM}"
    return None


def _sk_token_pattern(est) -> str | None:
    if est.__dict__.get("analyzer") != "word" or est.__dict__.get("tokenizer") is not None:
        return None   # build_tokenizer is not used
    pattern = est.__dict__.get("token_pattern")
    if pattern not in SKLEARN_TOKEN_PATTERNS:
        return f"token_pattern {str(pattern)[:60]!r} is not one of {sorted(SKLEARN_TOKEN_PATTERNS)}"
    return None


def _sk_ohe_categories(est) -> str | None:
    cats = est.__dict__.get("categories_")
    if type(cats) is not list or len(cats) != _n_in(est):
        return f"categories_ is not a list of n_features_in_={_n_in(est)} arrays"
    if not all(type(c) is np.ndarray and c.ndim == 1 and c.size for c in cats):
        return "categories_ holds something other than non-empty 1-d arrays"
    return None


def _sk_ohe_outputs(est) -> str | None:
    outs = est.__dict__.get("_n_features_outs")
    try:
        expected = [int(n) for n in type(est)._compute_n_features_outs(est)]
    except Exception as exc:  # noqa: BLE001
        return f"its output widths cannot be recomputed ({type(exc).__name__}: {str(exc)[:120]})"
    if type(outs) is not list or [int(n) if _is_int(n) else None for n in outs] != expected:
        return f"_n_features_outs {str(outs)[:80]} is not {expected[:8]} (what fit computes from categories_)"
    return None


def _sk_knn_method(est) -> str | None:
    if est.__dict__.get("_fit_method") != "brute":
        return f"_fit_method is {est.__dict__.get('_fit_method')!r}, not 'brute'"
    return None


def _sk_knn_fit_x(est) -> str | None:
    fit_x = _array(est, "_fit_X", ndim=2)
    if fit_x.shape[1] != _n_in(est) or fit_x.shape[0] < 1:
        return f"_fit_X has shape {fit_x.shape}, not (rows, n_features_in_={_n_in(est)})"
    if est.__dict__.get("n_samples_fit_") != fit_x.shape[0]:
        return f"n_samples_fit_={est.__dict__.get('n_samples_fit_')!r} but _fit_X has {fit_x.shape[0]} rows"
    neighbors = est.__dict__.get("n_neighbors")
    if not _is_int(neighbors) or not 1 <= neighbors <= fit_x.shape[0]:
        return f"n_neighbors={neighbors!r} is not in [1, {fit_x.shape[0]}] (the fitted rows)"
    return None


def _sk_knn_y(est) -> str | None:
    y = _array(est, "_y", numeric=False)
    rows = est.__dict__["_fit_X"].shape[0]
    if y.ndim not in (1, 2) or y.shape[0] != rows:
        return f"_y has shape {y.shape}, not {rows} rows like _fit_X"
    if "classes_" not in est.__dict__:   # a regressor
        return None
    classes = est.__dict__["classes_"]
    per_output = [classes] if y.ndim == 1 else classes
    if y.ndim == 2 and (type(classes) is not list or len(classes) != y.shape[1]):
        return "classes_ is not one array per output of _y"
    if y.dtype.kind not in "iu":
        return "_y is not integer class codes"
    for k, cls in enumerate(per_output):
        codes = y if y.ndim == 1 else y[:, k]
        if type(cls) is not np.ndarray or cls.ndim != 1 or codes.min() < 0 or codes.max() >= cls.shape[0]:
            return f"_y codes are not indices into classes_ ({type(cls).__name__} of {getattr(cls, 'shape', '?')})"
    return None


def _sk_quantiles(est) -> str | None:
    quantiles = _array(est, "quantiles_", ndim=2)
    references = _array(est, "references_", ndim=1)
    if quantiles.shape != (references.shape[0], _n_in(est)) or not references.shape[0]:
        return f"quantiles_ {quantiles.shape} / references_ {references.shape} are not (n_quantiles, " \
               f"n_features_in_={_n_in(est)}) / (n_quantiles,)"
    return None


def _vectors(*names: str, flags: dict | None = None):
    """Fitted vectors of length n_features_in_ (None allowed where the named flag is off)."""
    def check(est) -> str | None:
        n = _n_in(est)
        for name in names:
            needed = (flags or {}).get(name)
            optional = needed is not None and not est.__dict__.get(needed)
            value = _array(est, name, optional=optional)
            if value is not None and value.shape != (n,):
                return f"{name} has shape {value.shape}, not (n_features_in_={n},)"
        return None
    check.__name__ = "_vectors_" + "_".join(n.strip("_") for n in names)
    return check


def _sk_feature_range(est) -> str | None:
    value = est.__dict__.get("feature_range")
    if est.__dict__.get("clip") and not (isinstance(value, (tuple, list)) and len(value) == 2):
        return f"feature_range {str(value)[:40]} is not a (min, max) pair"
    return None


def _sk_linear(est) -> str | None:
    n = _n_in(est)
    coef = _array(est, "coef_")
    intercept = est.__dict__.get("intercept_")
    classes = est.__dict__.get("classes_")
    if classes is not None:   # LogisticRegression
        classes = _array(est, "classes_", ndim=1, numeric=False)
        k = 1 if classes.shape[0] == 2 else classes.shape[0]
        if classes.shape[0] < 2 or coef.shape != (k, n):
            return f"coef_ has shape {coef.shape}, not ({k}, {n}) for {classes.shape[0]} classes"
        intercept = _array(est, "intercept_")
        if intercept.shape != (k,):
            return f"intercept_ has shape {intercept.shape}, not ({k},)"
        return None
    if coef.shape != (n,) and not (coef.ndim == 2 and coef.shape[1] == n and coef.shape[0] >= 1):
        return f"coef_ has shape {coef.shape}, not ({n},) or (n_targets, {n})"
    targets = () if coef.ndim == 1 else (coef.shape[0],)
    if not (isinstance(intercept, (float, int, np.floating, np.integer)) and not targets) and not (
            type(intercept) is np.ndarray and intercept.dtype.kind in "biuf" and intercept.shape in ((), targets)):
        return f"intercept_ is not a number or an array of shape {targets}"
    return None


def _sk_imputer(est) -> str | None:
    stats = _array(est, "statistics_", ndim=1, numeric=False)
    if stats.shape != (_n_in(est),):
        return f"statistics_ has shape {stats.shape}, not (n_features_in_={_n_in(est)},)"
    return None


def _tree_classes(est, tree) -> str | None:
    outputs = est.__dict__.get("n_outputs_")
    if outputs != tree.n_outputs:
        return f"n_outputs_={outputs!r} but its tree has {tree.n_outputs} outputs"
    if "classes_" not in est.__dict__:
        return None
    n_classes = np.asarray(tree.n_classes)
    classes, declared = est.__dict__["classes_"], est.__dict__.get("n_classes_")
    if outputs == 1:
        classes, declared = [classes], [declared]
    if type(classes) is not list or type(declared) not in (list, np.ndarray) or len(classes) != outputs:
        return "classes_ / n_classes_ are not one entry per output"
    for k in range(outputs):
        if type(classes[k]) is not np.ndarray or not (_is_int(declared[k]) and
                                                       classes[k].shape == (declared[k],) == (n_classes[k],)):
            return f"classes_ / n_classes_ of output {k} do not match the tree's {int(n_classes[k])} classes"
    return None


def _sk_tree(est) -> str | None:
    tree = est.__dict__.get("tree_")
    try:
        check_sklearn_estimator(est)
    except NativeStateError as exc:
        return str(exc).partition(": ")[2] or str(exc)
    return _tree_classes(est, tree) if tree is not None else "it has no tree_"


def _sk_forest(est) -> str | None:
    trees = est.__dict__.get("estimators_")
    if type(trees) is not list or not trees:
        return "estimators_ is not a non-empty list"
    n, outputs = _n_in(est), est.__dict__.get("n_outputs_")
    kind = "classes_" in est.__dict__
    for i, tree in enumerate(trees):
        if getattr(type(tree), "__module__", "") != "sklearn.tree._classes" or "tree_" not in tree.__dict__:
            return f"estimators_[{i}] is a {type(tree).__name__}, not a fitted sklearn tree"
        if tree.__dict__.get("n_features_in_") != n or tree.__dict__.get("n_outputs_") != outputs:
            return f"estimators_[{i}] has n_features_in_/n_outputs_ {tree.__dict__.get('n_features_in_')!r}/" \
                   f"{tree.__dict__.get('n_outputs_')!r}, the forest {n}/{outputs!r}"
        if kind != ("classes_" in tree.__dict__) or kind and not _same_classes(tree, est):
            return f"estimators_[{i}] does not have the forest's classes"
    return None


def _same_classes(tree, forest) -> bool:
    a, b = tree.__dict__.get("n_classes_"), forest.__dict__.get("n_classes_")
    a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
    classes = forest.__dict__.get("classes_")
    widths = [len(c) for c in classes] if type(classes) is list else [len(classes)]
    return a.shape == b.shape and (a == b).all() and widths == b.tolist()


def _sk_columns(est) -> str | None:
    n = _n_in(est)
    names = est.__dict__.get("feature_names_in_")
    if names is not None and (type(names) is not np.ndarray or names.shape != (n,)):
        return f"feature_names_in_ is not {n} names"
    indices = est.__dict__.get("_transformer_to_input_indices")
    if type(indices) is not dict:
        return "_transformer_to_input_indices is not a dict"
    for name, columns in indices.items():
        if not (isinstance(columns, (list, np.ndarray)) and all(_is_int(c) and 0 <= c < n for c in columns)):
            return f"the columns of transformer {str(name)[:40]!r} are not indices in [0, {n})"
    return None


def _sk_dummy_classifier(est) -> str | None:
    d = est.__dict__
    classes, prior = d.get("classes_"), d.get("class_prior_")
    if d.get("n_outputs_") != 1 or not isinstance(classes, np.ndarray) or not isinstance(prior, np.ndarray):
        return "a DummyClassifier that is not one output with array classes_ and class_prior_"
    if classes.ndim != 1 or prior.shape != classes.shape or not _is_int(d.get("n_classes_")) or \
            d["n_classes_"] != len(classes) or len(classes) == 0:
        return (f"DummyClassifier classes_ {classes.shape}, class_prior_ {prior.shape} and n_classes_ "
                f"{d.get('n_classes_')!r} disagree")
    if prior.dtype.kind != "f" or not np.isfinite(prior).all():
        return "DummyClassifier class_prior_ is not finite floats"
    return None


def _sk_dummy_regressor(est) -> str | None:
    d = est.__dict__
    constant = d.get("constant_")
    if d.get("n_outputs_") != 1 or not isinstance(constant, np.ndarray) or constant.shape != (1, 1):
        return "a DummyRegressor that is not one output with a (1, 1) constant_"
    return None


_SK_PARAMS = Invariant(_sk_params, "sklearn checks hyper-parameters (_parameter_constraints) in fit only; predict and "
                                   "transform use them as they are (QuantileTransformer._transform_col: "
                                   "UnboundLocalError for an unknown output_distribution)")
_SK_TREE = Invariant(_sk_tree, "BaseDecisionTree.predict validates X against n_features_in_, then Tree.predict reads "
                               "X[i, feature] for feature < tree_.n_features unchecked (SIGSEGV); predict takes "
                               "classes_[argmax(proba[:, :n_classes_])] (IndexError)")
_SK_FOREST = Invariant(_sk_forest, "ForestClassifier.predict_proba adds each tree's predict_proba into arrays of "
                                   "width n_classes_ and predict indexes classes_ (ValueError, IndexError); each tree "
                                   "checks X against its own n_features_in_ (ValueError)")
_SK_LINEAR = Invariant(_sk_linear, "LinearClassifierMixin.decision_function / LinearModel._decision_function compute "
                                   "X @ coef_.T + intercept_, predict indexes classes_ by argmax (ValueError, "
                                   "IndexError)")
_SK_KNN = (
    Invariant(_sk_knn_method, "KNeighborsMixin.kneighbors calls self._tree.query for kd_tree/ball_tree, and strict "
                              "mode never rebuilds a KDTree/BallTree (AttributeError)"),
    Invariant(_sk_knn_fit_x, "KNeighborsMixin.kneighbors runs ArgKmin (Cython, no bounds checks) over _fit_X with the "
                             "width of X, which predict validated against n_features_in_ (SIGSEGV); it raises "
                             "ValueError when n_neighbors exceeds n_samples_fit_, which must be _fit_X's rows"),
    Invariant(_sk_knn_y, "KNeighborsClassifier.predict_proba / KNeighborsRegressor.predict index _y[neigh_ind] and "
                         "classes_[_y] (IndexError)"),
)

# class name (module.qualname) -> the invariants sklearn's predict path assumes of its fitted state
SKLEARN_INVARIANTS: dict[str, tuple[Invariant, ...]] = {
    "sklearn.dummy.DummyClassifier": (
        _SK_PARAMS,
        Invariant(_sk_dummy_classifier, "DummyClassifier.predict takes classes_[class_prior_.argmax()] and draws "
                                        "randint(n_classes_) into classes_ (IndexError when they disagree)"),
    ),
    "sklearn.dummy.DummyRegressor": (
        _SK_PARAMS,
        Invariant(_sk_dummy_regressor, "DummyRegressor.predict fills an (n_samples, n_outputs_) array from constant_ "
                                       "(n_outputs_ of the file's choosing: a MemoryError past 1 GiB)"),
    ),
    "sklearn.feature_extraction.text.CountVectorizer": (
        _SK_PARAMS,
        Invariant(_sk_vocabulary, "CountVectorizer._count_vocab builds csr_matrix(j_indices=vocabulary_[term], "
                                  "shape=(n, len(vocabulary_))) unchecked; AutoGluon's TextNgramFeatureGenerator "
                                  "calls .toarray(), which writes at that column (SIGSEGV)"),
        Invariant(_sk_ngram_range, "_word_ngrams/_char_ngrams join every n-gram up to max_n: O(tokens * max_n**2) "
                                   "memory on one long text (MemoryError beyond 1 GiB)"),
        Invariant(_sk_token_pattern, "build_tokenizer runs re.compile(token_pattern).findall on every text: a "
                                     "backtracking pattern such as (a+)+$ hangs transform"),
    ),
    "sklearn.preprocessing._encoders.OneHotEncoder": (
        _SK_PARAMS,
        Invariant(_sk_ohe_categories, "OneHotEncoder._transform encodes column i against categories_[i] (IndexError)"),
        Invariant(_sk_ohe_outputs, "transform builds csr_matrix(indices=code + cumsum(_n_features_outs)) without a "
                                   "bound check; toarray()/dot then write or read past the row (SIGABRT)"),
    ),
    "sklearn.neighbors._classification.KNeighborsClassifier": (_SK_PARAMS, *_SK_KNN),
    "sklearn.neighbors._regression.KNeighborsRegressor": (_SK_PARAMS, *_SK_KNN),
    "sklearn.preprocessing._data.QuantileTransformer": (
        _SK_PARAMS,
        Invariant(_sk_quantiles, "QuantileTransformer._transform_col calls np.interp(X[:, i], quantiles_[:, i], "
                                 "references_) (ValueError, IndexError)"),
    ),
    "sklearn.preprocessing._data.StandardScaler": (
        _SK_PARAMS,
        Invariant(_vectors("mean_", "scale_", flags={"mean_": "with_mean", "scale_": "with_std"}),
                  "StandardScaler.transform does X -= mean_ and X /= scale_ (ValueError)"),
    ),
    "sklearn.preprocessing._data.MinMaxScaler": (
        _SK_PARAMS,
        Invariant(_vectors("scale_", "min_"), "MinMaxScaler.transform does X *= scale_; X += min_ (ValueError)"),
        Invariant(_sk_feature_range, "MinMaxScaler.transform with clip=True clips to feature_range[0], "
                                     "feature_range[1] (IndexError)"),
    ),
    "sklearn.linear_model._logistic.LogisticRegression": (_SK_PARAMS, _SK_LINEAR),
    "sklearn.linear_model._ridge.Ridge": (_SK_PARAMS, _SK_LINEAR),
    "sklearn.impute._base.SimpleImputer": (
        _SK_PARAMS,
        Invariant(_sk_imputer, "SimpleImputer.transform compares X's width with statistics_ and fills from it "
                               "(ValueError)"),
    ),
    "sklearn.compose._column_transformer.ColumnTransformer": (
        _SK_PARAMS,
        Invariant(_sk_columns, "ColumnTransformer.transform selects feature_names_in_[_transformer_to_input_indices"
                               "[name]] for each transformer (IndexError)"),
    ),
    "sklearn.pipeline.Pipeline": (_SK_PARAMS,),
    "sklearn.preprocessing._function_transformer.FunctionTransformer": (_SK_PARAMS,),
    **{f"sklearn.tree._classes.{name}": (_SK_PARAMS, _SK_TREE) for name in (
        "DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor")},
    **{f"sklearn.ensemble._forest.{name}": (_SK_PARAMS, _SK_FOREST) for name in (
        "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")},
}


def check_sklearn_values(estimator) -> None:
    """Enforce ``SKLEARN_INVARIANTS`` on a built estimator (raises NativeStateError)."""
    cls = type(estimator)
    invariants = SKLEARN_INVARIANTS.get(f"{cls.__module__}.{cls.__qualname__}", ())
    state = estimator.__dict__
    for key, value in list(state.items()):
        state[key] = _private(value)
    if not _fitted(estimator):   # a template (a forest's estimator, a pipeline not yet fitted): parameters only
        invariants = invariants[:1] if invariants and invariants[0] is _SK_PARAMS else ()
    for invariant in invariants:
        try:
            problem = invariant.check(estimator)
        except NativeStateError:
            raise
        except Exception as exc:  # noqa: BLE001 - crafted values that even the check cannot read
            problem = f"its state cannot be checked ({type(exc).__name__}: {str(exc)[:120]})"
        if problem:
            _fail(f"sklearn {cls.__name__}: {problem} [{invariant.reason}]")


# ================================================================================================
# one entry point for every built object (strict_unpickler._after_build)
# ================================================================================================

_built_once = None   # weakref.WeakSet of estimators already checked (created on first use)
_CATBOOST_CLASSES = frozenset({"catboost.core.CatBoostClassifier", "catboost.core.CatBoostRegressor",
                               "catboost.core.CatBoost"})


def check_built(obj) -> None:
    """Check an object right after its BUILD, before anything uses it: sklearn estimators against
    ``SKLEARN_INVARIANTS`` and their trees; CatBoost models are marked for the prediction sandbox
    (``native_sandbox``).  Objects of other classes are left alone."""
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name in _CATBOOST_CLASSES:
        from . import native_sandbox

        native_sandbox.mark(obj)
        return
    if name not in SKLEARN_INVARIANTS and "tree_" not in getattr(obj, "__dict__", {}):
        return
    global _built_once
    if _built_once is None:
        import weakref

        _built_once = weakref.WeakSet()
    try:
        if obj in _built_once:
            # genuine pickles BUILD each object once; a second BUILD would change it after the checks of the
            # objects that hold it (a forest's trees, a pipeline's steps)
            _fail(f"sklearn {cls.__name__}: BUILD on an estimator that was already built")
        _built_once.add(obj)
    except TypeError:  # not weak-referenceable: nothing else holds checks about it
        pass
    if name in SKLEARN_INVARIANTS:
        check_sklearn_values(obj)
    else:
        check_sklearn_estimator(obj)


# ================================================================================================
# CatBoost: sandboxed load
# ================================================================================================

MAX_CATBOOST_BLOB = 2 << 30
_catboost_verdicts: dict[str, str | None] = {}   # sha256 -> None (fine) or the refusal reason
_catboost_lock = threading.Lock()

# Runs in the sandbox (forked child, or a fresh interpreter reading the blob on stdin).  Exit 0: loaded
# and predicted; 3: the loader raised; 4: prediction raised.  Messages go to the result channel.
_CATBOOST_CHILD = r'''
def _catboost_probe(blob, report):
    try:
        from catboost import CatBoost
        try:  # a blob that makes the loader allocate without end fails instead of exhausting the machine
            import resource
            with open("/proc/self/status") as status:
                vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
            resource.setrlimit(resource.RLIMIT_AS, (vm + (4 << 30), vm + (4 << 30)))
        except Exception:
            pass
        model = CatBoost()
        model._load_from_string(blob)
    except BaseException as exc:
        report(f"CatBoost refused the blob: {type(exc).__name__}: {str(exc)[:200]}")
        return 3
    try:
        names = list(model.feature_names_ or [])
        width = len(names)
        if width:
            cat = set(model.get_cat_feature_indices())
            text = set(getattr(model, "get_text_feature_indices", list)())
            emb = set(getattr(model, "get_embedding_feature_indices", list)())
            if not emb:
                rows = [[cat_fill if i in cat else ("a" if i in text else fill) for i in range(width)]
                        for fill, cat_fill in ((0.0, "0"), (1.0, "1"))]
                model.predict(rows, prediction_type="RawFormulaVal", thread_count=1)
    except BaseException as exc:
        report(f"CatBoost could not predict with the blob: {type(exc).__name__}: {str(exc)[:200]}")
        return 4
    return 0
'''
# one source for both sandboxes: compiled here for the forked child, sent as text to a fresh interpreter
_probe_namespace: dict = {}
exec(compile(_CATBOOST_CHILD, "<ag_torchfix.native catboost probe>", "exec"), _probe_namespace)


def _sandbox_method() -> str:
    choice = os.environ.get("AG_TORCHFIX_NATIVE_SANDBOX", "").strip().lower()
    if choice in ("fork", "subprocess"):
        return choice
    return "fork" if sys.platform.startswith("linux") and hasattr(os, "fork") else "subprocess"


def _describe_exit(status_kind: str, value: int) -> str:
    if status_kind == "signal":
        return f"CatBoost crashed the sandbox with {forking.signal_name(value)} (loading the blob or predicting two rows)"
    return f"the sandbox exited with status {value}"


def _catboost_fork(blob: bytes, timeout: float) -> str | None:
    def child(write_fd):
        def report(message):
            os.write(write_fd, message.encode("utf-8", "replace")[:4000])

        return _probe_namespace["_catboost_probe"](blob, report)

    status, value, output = forking.fork_run(child, timeout)
    if status == "timeout":
        return f"timeout: the CatBoost sandbox ran longer than {timeout:g}s"
    if status in ("error", "too-large"):
        return output.decode("utf-8", "replace") or "the sandbox wrote more than it may"
    if status == "signal":
        return _describe_exit("signal", value)
    if value == 0:
        return None
    return output.decode("utf-8", "replace") or _describe_exit("exit", value)


def _catboost_subprocess(blob: bytes, timeout: float) -> str | None:
    import subprocess
    code = (_CATBOOST_CHILD + "\nimport sys\nmsgs = []\nrc = _catboost_probe(sys.stdin.buffer.read(), msgs.append)\n"
            "sys.stderr.write(''.join(msgs))\nsys.stderr.flush()\nimport os\nos._exit(rc)\n")
    env = dict(os.environ, AG_TORCHFIX_AUTOLOAD="0", OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return f"timeout: the CatBoost sandbox ran longer than {timeout:g}s"
    except OSError as exc:
        return f"could not start a sandbox: {exc}"
    if proc.returncode < 0:
        return _describe_exit("signal", -proc.returncode)
    if proc.returncode == 0:
        return None
    message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return (message[-1] if message else "") or _describe_exit("exit", proc.returncode)


def check_catboost_blob(blob, timeout: float = 30) -> None:
    """Load a CatBoost model blob (``CatBoost.__getstate__()['__model']``) and predict one row with it in
    a sandbox child process first; refuse the blob when the child crashes, fails or times out.

    Verdicts are cached by SHA-256, so each blob is checked once per process.  The sandbox is a fork
    of this process on Linux (``AG_TORCHFIX_NATIVE_SANDBOX=subprocess`` forces a fresh interpreter); a
    forked sandbox that times out is retried once in a fresh interpreter, in case the fork inherited a
    lock held by another thread.
    """
    if not isinstance(blob, (bytes, bytearray)):
        _fail(f"catboost: model blob is {type(blob).__name__}, not bytes")
    if len(blob) > MAX_CATBOOST_BLOB:
        _fail("catboost: model blob larger than 2 GiB")
    blob = bytes(blob)
    if not blob.startswith(b"CBM1"):
        _fail("catboost: model blob does not start with CatBoost's 'CBM1' signature")
    digest = hashlib.sha256(blob).hexdigest()
    with _catboost_lock:
        if digest not in _catboost_verdicts:
            if _sandbox_method() == "fork":
                verdict = _catboost_fork(blob, timeout)
                if verdict is not None and verdict.startswith("timeout"):
                    verdict = _catboost_subprocess(blob, timeout)
            else:
                verdict = _catboost_subprocess(blob, timeout)
            _catboost_verdicts[digest] = verdict
        verdict = _catboost_verdicts[digest]
    if verdict is not None:
        _fail(f"catboost: {verdict}")
