"""After a strict load: is the object what AutoGluon itself writes at that path, and is everything
AutoGluon will later call, construct or join into a path one it expects?

The restricted unpickler decides which objects may exist; this module decides where they may sit.
AutoGluon dispatches on class-valued attributes (``predictor._learner_type.load(path)``, a model-graph
node's ``type``, a bag's ``_child_type``, ``_compiler.load`` ...), resolves one string into an import
(``model_specific_feature_generator_kwargs``), and joins names from the files into paths.  One table
below says, for every such slot, what AutoGluon writes there and which AutoGluon code uses it; the
check walks the loaded object (bounded, iteratively) and refuses:
- a top-level object of the wrong kind for its file (``FILES``), or not exactly the class whose
  ``load`` AutoGluon called (found in the caller's frame: AutoGluon's ``load`` classmethods return
  whatever they unpickled);
- a class or function anywhere except in a ``SLOTS`` entry that allows exactly that value, and any
  value outside the allowed ones in such a slot;
- a name that AutoGluon joins into a path (``NAMES``) that is not a plain file name;
- an instance attribute that shadows a method of its class, or a class's file name;
- a networkx graph whose cached views do not show the graph's own dicts.
Built from ``tools/sweep_dispatch.py`` over the CPU model zoo (every slot of every genuine file) and
a reading of AutoGluon 1.6.3 and 1.1.1 (the code each row cites).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import sys
import types

from . import shims
from .verdicts import is_method

_AG = "autogluon."
_CORE_MODELS = "autogluon.core.models."
_TAB_MODELS = "autogluon.tabular.models."

# Concrete (non-ensemble) model classes of the CPU zoo, and the ensembles above them.
CHILD_MODELS = (
    _TAB_MODELS + "lgb.lgb_model.LGBModel", _TAB_MODELS + "catboost.catboost_model.CatBoostModel",
    _TAB_MODELS + "xgboost.xgboost_model.XGBoostModel", _TAB_MODELS + "rf.rf_model.RFModel",
    _TAB_MODELS + "xt.xt_model.XTModel", _TAB_MODELS + "knn.knn_model.KNNModel", _TAB_MODELS + "lr.lr_model.LinearModel",
    _TAB_MODELS + "tabular_nn.torch.tabular_nn_torch.TabularNeuralNetTorchModel",
    _TAB_MODELS + "fastainn.tabular_nn_fastai.NNFastAiTabularModel", _CORE_MODELS + "dummy.dummy_model.DummyModel",
)
GREEDY = _CORE_MODELS + "greedy_ensemble.greedy_weighted_ensemble_model.GreedyWeightedEnsembleModel"
ENSEMBLES = (_CORE_MODELS + "ensemble.stacker_ensemble_model.StackerEnsembleModel",
             _CORE_MODELS + "ensemble.weighted_ensemble_model.WeightedEnsembleModel")
ALL_MODELS = CHILD_MODELS + ENSEMBLES + (GREEDY,)
PREDICTOR = "autogluon.tabular.predictor.predictor.TabularPredictor"
LEARNER = "autogluon.tabular.learner.default_learner.DefaultLearner"
TRAINER = "autogluon.tabular.trainer.auto_trainer.AutoTrainer"
METRIC_FUNCTIONS = tuple(
    f"autogluon.core.metrics.{n}" for n in (
        "quantile_metrics.pinball_loss", "rmse_func", "smape_func", "customized_log_loss", "customized_roc_auc",
        "local_pearsonr", "local_spearmanr", "classification_metrics.balanced_accuracy",
        "classification_metrics.customized_binary_roc_auc_score", "classification_metrics.pac",
        "classification_metrics.quadratic_kappa")) + tuple(
    f"sklearn.metrics.{n}" for n in (
        "_classification.accuracy_score", "_classification.f1_score", "_classification.matthews_corrcoef",
        "_classification.precision_score", "_classification.recall_score", "_ranking.average_precision_score",
        "_regression.mean_absolute_error", "_regression.mean_absolute_percentage_error",
        "_regression.mean_squared_error", "_regression.median_absolute_error", "_regression.r2_score"))
PARTIAL = "functools.partial"  # a partial made by strict mode's partial shim (its function is allowlisted)
NONE = "None"
NUMPY_TYPE = "<numpy scalar type or dtype>"
DATA = "<data>"  # any value that is not a class or function (walked like the rest)
ONE_CHAR = "<one character>"  # a str of length 1 (AutoGluon's text symbols: escaped into a regular expression)
DATETIME_FIELD = "<datetime field>"  # the name of a property of pandas' Series.dt (year, month, dayofweek, ...)
DTYPES = (NUMPY_TYPE,)

# File (path below the predictor root; "*" one component, "**" any number) -> (allowed top-level types, reader).
FILES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("predictor.pkl", (PREDICTOR,), "TabularPredictor._load (tabular/predictor/predictor.py)"),
    ("learner.pkl", (LEARNER,), "predictor._learner_type.load (core/learner/abstract_learner.py)"),
    ("models/trainer.pkl", (TRAINER,), "learner.trainer_type.load (core/trainer/abstract_trainer.py)"),
    ("models/*/model.pkl", ALL_MODELS, "node['type'].load (core/trainer/abstract_trainer.py load_model)"),
    ("models/*/*/model.pkl", CHILD_MODELS + (GREEDY,) + ENSEMBLES,
     "bag._child_type.load (bagged_ensemble_model.py load_child); a tuning trial's bag (models/<name>/T<n>/)"),
    ("models/*/*/*/model.pkl", CHILD_MODELS, "a tuning trial's bag's children (models/<name>/T<n>/S1F1/)"),
    ("models/*/utils/model_template.pkl", CHILD_MODELS + (GREEDY,), "bagged_ensemble_model.py load_model_base"),
    ("models/*/utils/oof.pkl", ("builtins.dict",), "bagged_ensemble_model.py load_oof"),
    ("models/*/dataset_train.pkl", ("builtins.tuple",), "core/hpo/executors.py: (X, y) saved for tuning trials"),
    ("models/*/dataset_val.pkl", ("builtins.tuple",), "core/hpo/executors.py: (X_val, y_val) saved for tuning trials"),
    ("**/info.pkl", ("builtins.dict",), "load_info (abstract_model.py, abstract_trainer.py, abstract_learner.py)"),
    ("utils/attr/**", ("numpy.ndarray", "pandas.core.series.Series", "pandas.core.frame.DataFrame"),
     "tabular/trainer/abstract_trainer.py (validation prediction cache)"),
    ("utils/data/*", ("pandas.core.frame.DataFrame", "pandas.core.series.Series", NONE),
     "tabular/trainer/abstract_trainer.py load_X / load_y"),
)

# Slot ("Owner.attr", "[*]" for any dict key or item, "[key]" for one) -> (allowed values, the AutoGluon code that
# uses it).  Owners match any class in the object's MRO by qualified name.  Values are exact objects by dotted name.
SLOTS: dict[str, tuple[tuple[str, ...], str]] = {
    "TabularPredictor._learner_type": ((LEARNER,), "predictor.py _load: predictor._learner_type.load(path)"),
    "AbstractLearner.trainer_type": ((TRAINER,), "abstract_learner.py load_trainer: self.trainer_type.load(...)"),
    "DiGraph._node[*][type]": (ALL_MODELS, "core/trainer/abstract_trainer.py load_model: model_type.load(...); "
                               "load_info, load_oof, load_learning_curves"),
    "DiGraph._node[*][type_inner]": (ALL_MODELS, "tabular/trainer/abstract_trainer.py: compared and named"),
    "BaggedEnsembleModel._child_type": (CHILD_MODELS + (GREEDY,), "bagged_ensemble_model.py load_child: "
                                        "self._child_type.load(...); refit constructs it"),
    "StackerEnsembleModel.base_model_types_dict[*]": (ALL_MODELS, "stacker_ensemble_model.py: .load_oof, .load"),
    "StackerEnsembleModel._base_model_types_inner_dict[*]": (ALL_MODELS, "stacker_ensemble_model.py: dict keys"),
    "AbstractModel._compiler": ((NONE, "autogluon.tabular.models.rf.compilers.native.AbstractNativeCompiler",
                                 "autogluon.tabular.models.tabular_nn.compilers.native.AbstractNativeCompiler"),
                                "abstract_model.py load: if not _compiler.save_in_pkl: _compiler.load(path) (the "
                                "genuine classes keep save_in_pkl=True; an instance or another class could not)"),
    "XGBoostModel._xgb_model_type": ((NONE, "xgboost.sklearn.XGBClassifier", "xgboost.sklearn.XGBRegressor"),
                                     "xgboost_model.py load: _xgb_model_type() then load_model(xgb.ubj)"),
    "GreedyWeightedEnsembleModel.model_base": (
        ("autogluon.core.models.greedy_ensemble.ensemble_selection.EnsembleSelection",),
        "greedy_weighted_ensemble_model.py _fit: self.model_base(...)"),
    "Scorer._score_func": (METRIC_FUNCTIONS + (PARTIAL,), "core/metrics Scorer.__call__ (evaluate, leaderboard, fit)"),
    "FunctionTransformer.func": ((NONE, PARTIAL), "sklearn FunctionTransformer (NeuralNetFastAI's y clipping)"),
    "FunctionTransformer.inverse_func": ((NONE, PARTIAL), "tabular_nn_fastai.py predict: inverse_transform"),
    "NNFastAiTabularModel.procs[*]": (("fastai.tabular.core.Categorify",), "tabular_nn_fastai.py fit: TabularPandas"),
    "_RepeatedSplits.cv": (("sklearn.model_selection._split.KFold", "sklearn.model_selection._split.StratifiedKFold"),
                           "sklearn _RepeatedSplits.split (bagged fit)"),
    "QuantileBooster.early_stopping_callback_kwargs[stopping_rounds][*]": (
        ("autogluon.core.utils.early_stopping.AdaptiveES", "autogluon.core.utils.early_stopping.SimpleES", DATA),
        "lgb/callbacks.py: stopping_rounds[0](**stopping_rounds[1]) (fit)"),
    "AsTypeFeatureGenerator._type_map_real_opt[*]": (DTYPES, "features/generators/astype.py: X.astype(...)"),
    "BinnedFeatureGenerator._astype_map[*]": (DTYPES, "features/generators/binned.py: dtype="),
    "CountVectorizer.dtype": (DTYPES, "sklearn text transform: sparse matrix dtype"),
    "OneHotEncoder.dtype": (DTYPES, "sklearn OneHotEncoder transform"),
    "OneHotMergeRaresHandleUnknownEncoder.dtype": (DTYPES, "categorical_encoders.py transform"),
    "OrdinalMergeRaresHandleUnknownEncoder.dtype": (DTYPES, "categorical_encoders.py transform"),
    # strings AutoGluon turns into code: model_specific_feature_generator_kwargs names generator classes that
    # parse_custom_generator.py imports (importlib.import_module) and instantiates at predict time (AutoGluon 1.6)
    "AbstractModel.params_aux[model_specific_feature_generator_kwargs]": (
        (NONE,), "abstract_model.py get_preprocessor -> parse_custom_generator.resolve_fg_class (imports a module)"),
    "AbstractModel._model_specific_feature_generators": (
        (NONE, "'NOTSET'"), "abstract_model.py _preprocess_model_specific: 'NOTSET' builds generators from params_aux"),
    # strings AutoGluon or sklearn compile into regular expressions at predict time: only what they write
    "CountVectorizer.token_pattern": ((NONE, "'(?u)\\b\\w\\w+\\b'"), "sklearn build_tokenizer: re.compile(token_pattern) "
                                      "(text n-grams; a pattern of the file's choosing can backtrack for hours)"),
    "CountVectorizer.input": (("'content'",), "sklearn _VectorizerMixin.decode: 'filename' opens every text value as "
                              "a path at predict, 'file' calls its read()"),
    "DatetimeFeatureGenerator.features[*]": ((DATETIME_FIELD,), "datetime.py _generate_features_datetime: "
                                             "getattr(X[col].dt, feature).astype(np.int64)"),
    "TextSpecialFeatureGenerator._symbols[*]": ((ONE_CHAR,), "text_special.py _generate_features: "
                                                 "X.str.count('\\' + symbol), a regular expression"),
    "TextSpecialFeatureGenerator._symbols_per_feature[*][*]": ((ONE_CHAR,), "text_special.py _generate_features: "
                                                                "X.str.count('\\' + symbol), a regular expression"),
}

# Containers AutoGluon iterates (``for x in c``): they must be sequences, never a dict, whose iteration yields keys
# that the item rows above (``...[*]``) never see.
SEQUENCES: dict[str, str] = {
    "TextSpecialFeatureGenerator._symbols": "text_special.py _filter_symbols: for symbol in symbols",
    "TextSpecialFeatureGenerator._symbols_per_feature[*]": "text_special.py _generate_features: for symbol in symbols",
    "DatetimeFeatureGenerator.features": "datetime.py _generate_features_datetime: for feature in self.features",
}

# Dicts whose keys may be classes: the user's hyperparameters keyed by model class (fit(hyperparameters={LGBModel:
# {...}})), kept as given and handed back to fit by fit_extra / fit_pseudolabel; never called at load or predict.
CLASS_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "TabularPredictor.fit_hyperparameters_": (ALL_MODELS, "predictor.py fit: self.fit_hyperparameters_ = "
                                              "hyperparameters (fit_extra / fit_pseudolabel pass them back to fit)"),
}

# Names AutoGluon joins into paths: they must be plain file names (no separator, no '..').
NAMES: dict[str, str] = {
    "DiGraph._node[*][path]": "core/trainer/abstract_trainer.py load_model: os.path.join(self.path, *path)",
    "BaggedEnsembleModel.models[*]": "bagged_ensemble_model.py load_child: os.path.join(self.path, child)",
    "AbstractModel.name": "model path_root and persist's registry",
}
NAMED_KEYS = ("DiGraph._node", "DiGraph._succ", "DiGraph._pred", "DiGraph._adj")  # model names as graph keys

# Attributes AutoGluon reads from every object of these classes (its own code has no fallback: a missing one is an
# AttributeError at load or predict).  The attributes present in every genuine file of the CPU zoo (AutoGluon
# 1.6.3) and of the writers' goldens (AutoGluon 1.1-1.6): tools/sweep_values.py.  Owners match by MRO.
REQUIRED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "TabularPredictor": frozenset({
        "_learner", "_learner_type", "_trainer", "fit_hyperparameters_", "sample_weight", "verbosity",
        "weight_evaluation"}),
    "AbstractLearner": frozenset({
        "cleaner", "eval_metric", "feature_generator", "ignored_columns", "is_trainer_present", "label",
        "label_cleaner", "model_context", "path", "problem_type", "quantile_levels", "reset_paths", "sample_weight",
        "threshold", "trainer", "trainer_path", "trainer_type", "version", "weight_evaluation"}),
    "AbstractTrainer": frozenset({
        "bagged_mode", "eval_metric", "feature_metadata", "k_fold", "low_memory", "model_best", "model_graph",
        "models", "num_classes", "path", "problem_type", "quantile_levels", "reset_paths", "sample_weight",
        "weight_evaluation"}),
    "AbstractModel": frozenset({
        "_compiler", "_features_internal", "_is_initialized", "eval_metric", "features", "model", "name",
        "num_classes", "params", "params_aux", "path", "path_root", "problem_type", "quantile_levels",
        "stopping_metric"}),
    "AbstractFeatureGenerator": frozenset({
        "_is_fit", "_post_generators", "feature_metadata", "feature_metadata_in", "features_in", "features_out",
        "pre_drop_useless", "pre_enforce_types", "reset_index", "verbosity"}),
}

MAX_VISITS = 2_000_000
MAX_MODULE_WALK = 100_000  # modules one recursive torch walk visits (genuine networks: a few dozen)
_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None))
_PLAIN_CONTAINERS = (dict, list, tuple, set, frozenset)
_MISSING = object()


def check_file(obj, path: str, expected: type | None = None) -> str | None:
    """Why ``obj``, just loaded strictly from ``path``, is not what AutoGluon writes there; None if it is.
    ``expected``: the class whose ``load`` will read it, when the caller knows it (the scanner reads it from the
    trainer's model graph and the bag); otherwise it is found in the calling frame."""
    from ..core.layout import predictor_root

    root, rel = predictor_root(path)
    if root is not None:
        problem = _check_kind(obj, "/".join(rel))
        if problem:
            return problem
    if expected is not None and type(obj) is not expected:
        return (f"AutoGluon loads this file as a {_name(expected)} ({expected.__qualname__}.load), but it holds a "
                f"{_name(type(obj))}")
    problem = _check_dispatching_class(obj)
    if problem:
        return problem
    return _walk(obj) or _graph_problem(obj)


def _check_kind(obj, rel: str) -> str | None:
    for pattern, allowed, reader in FILES:
        if _path_matches(pattern.split("/"), rel.split("/")):
            if not any(_is(obj, name, exact_type=True) for name in allowed):
                return (f"{rel} holds a {_name(type(obj))}, but AutoGluon writes {' or '.join(_short(a) for a in allowed)} "
                        f"there ({reader})")
            return None
    return None


def _check_dispatching_class(obj) -> str | None:
    """AutoGluon's ``X.load`` classmethods unpickle and return whatever the file holds: it must be exactly X."""
    frame = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            return None
        if frame.f_code.co_name in ("load", "_load") and frame.f_globals.get("__name__", "").startswith(_AG):
            cls = frame.f_locals.get("cls")
            if isinstance(cls, type):
                if type(obj) is not cls:
                    return (f"AutoGluon loaded this file as a {_name(cls)} ({cls.__qualname__}.load), but it holds "
                            f"a {_name(type(obj))}")
                return None
        frame = frame.f_back
    return None


def _walk(root) -> str | None:
    todo: list[tuple[object, type, tuple[str, ...]]] = [(root, type(root), ())]
    seen: set[int] = set()
    visits = 0
    while todo:
        value, owner, trail = todo.pop()
        visits += 1
        if visits > MAX_VISITS:
            return f"the object graph has more than {MAX_VISITS} parts"
        if len(trail) == 1 and trail[0] in _KEYED and _qualnames(owner) & _KEYED[trail[0]] and not isinstance(value, dict):
            return (f"{_slot(owner, trail)} holds {_describe(value)}; AutoGluon writes a dict there and reads it by "
                    "key (a table row checks the key's value)")
        row = _row(owner, trail) if trail else None
        if row is not None:
            table, key = row
            if table is SLOTS:
                allowed, code = SLOTS[key]
                if not any(_is(value, name) for name in allowed):
                    return (f"{_slot(owner, trail)} holds {_describe(value)}; AutoGluon writes "
                            f"{', '.join(_short(a) for a in allowed)} there and uses it ({code})")
                if type(value) is functools.partial:  # its function is checked; its arguments are data
                    todo.extend((item, owner, trail + ("(*)",)) for item in (*value.args, *value.keywords.values()))
                    continue
                if DATA not in allowed or _is_callable_value(value):
                    continue  # a checked slot: its value is one AutoGluon writes there
            elif table is SEQUENCES:
                if not (type(value) in (list, tuple) or type(value).__name__ == "ndarray"):
                    return (f"{_slot(owner, trail)} holds {_describe(value)}; AutoGluon iterates a list there "
                            f"({SEQUENCES[key]})")
            else:
                check = _model_name if key == "AbstractModel.name" else _plain_name
                problem = check(value, f"{_slot(owner, trail)} ({NAMES[key]})")
                if problem:
                    return problem
        if isinstance(value, _LEAVES):
            continue
        if _is_callable_value(value):
            return (f"{_slot(owner, trail) if trail else 'the file'} holds {_describe(value)}: AutoGluon does not "
                    "store a class or function there, and could call it")
        if id(value) in seen:
            continue
        seen.add(id(value))
        cls = type(value)
        inner = _array_items(value)
        if inner is not None:  # numpy arrays, numpy scalars and pandas objects: only object-typed values are walked
            todo.extend((item, owner, trail + (key,)) for key, item in inner)
            continue
        if isinstance(value, dict):
            named = (_qualnames(owner) & _NAMED_OWNERS) and trail[-1:] and f"{trail[-1]}" in _NAMED_ATTRS
            class_keys = CLASS_KEYS.get(_slot_key(owner, trail)) if len(trail) == 1 else None
            for key, item in _bounded(dict.items(value)):  # dict's own method: an instance may shadow .items
                if _is_callable_value(key) and not (class_keys and any(_is(key, n) for n in class_keys[0])):
                    return f"{_slot(owner, trail)} uses {_describe(key)} as a key"
                if named:
                    problem = _model_name(key, f"a model name in {_slot(owner, trail)}")
                    if problem:
                        return problem
                todo.append((item, owner, trail + (f"[{key}]" if isinstance(key, str) else "[*]",)))
        elif isinstance(value, (list, tuple, set, frozenset)):
            todo.extend((item, owner, trail + ("[*]",)) for item in _bounded(iter(value)))
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            if type(value) in _PLAIN_CONTAINERS:
                continue
            # a subclass (ParamsAuxDict, OrderedDict, a namedtuple ...): its instance attributes are walked like an
            # object's, and may not shadow its methods (AutoGluon calls params_aux.get)
        problem = _object_rule(value)
        if problem:
            return problem
        state = getattr(value, "__dict__", None)
        if isinstance(state, dict):
            todo.extend((item, cls, (f".{key}",)) for key, item in _bounded(state.items()) if isinstance(key, str)
                        and not _skip_attribute(value, key))
        for slot_name in _slot_names(cls):
            item = getattr(value, slot_name, _MISSING)
            if item is not _MISSING:
                todo.append((item, cls, (f".{slot_name}",)))
    return None


def _index() -> dict[str, list[tuple[str, tuple[str, ...], dict, str]]]:
    """Table rows by attribute: "Owner.attr[a][*]" -> index[".attr"] = [(Owner, ("[a]", "[*]"), table, key)]."""
    index: dict[str, list] = {}
    for table in (SLOTS, NAMES, SEQUENCES):
        for key in table:
            owner, _, rest = key.partition(".")
            attr, sep, tail = rest.partition("[")
            suffix = tuple(("[" + tail).replace("][", "]\0[").split("\0")) if sep else ()
            index.setdefault(f".{attr}", []).append((owner, suffix, table, key))
    return index


_INDEX = _index()


def _keyed() -> dict[str, frozenset[str]]:
    """".attr" -> owners whose attr a table row reads by a named key ("Owner.attr[key]..."): it must be a dict."""
    keyed: dict[str, set[str]] = {}
    for table in (SLOTS, NAMES):
        for key in table:
            owner, _, rest = key.partition(".")
            attr, sep, tail = rest.partition("[")
            if sep and not tail.startswith("*]"):
                keyed.setdefault(f".{attr}", set()).add(owner)
    return {attr: frozenset(owners) for attr, owners in keyed.items()}


_KEYED = _keyed()
_NAMED_OWNERS = frozenset(k.split(".")[0] for k in NAMED_KEYS)
_NAMED_ATTRS = frozenset("." + k.split(".", 1)[1] for k in NAMED_KEYS)


def _row(owner: type, trail: tuple[str, ...]):
    rows = _INDEX.get(trail[0])
    if not rows:
        return None
    names = _qualnames(owner)
    rest = trail[1:]
    for row_owner, suffix, table, key in rows:
        if row_owner in names and len(suffix) == len(rest) and all(
                s == "[*]" and r.startswith("[") or s == r for s, r in zip(suffix, rest)):
            return table, key
    return None


@functools.lru_cache(maxsize=None)
def _qualnames(cls: type) -> frozenset[str]:
    return frozenset(klass.__qualname__ for klass in cls.__mro__)


def _slot_key(owner: type, trail: tuple[str, ...]) -> str | None:
    """The CLASS_KEYS row of an attribute, matched on the owner's MRO."""
    attr = trail[0][1:]
    return next((key for key in CLASS_KEYS if key.endswith(f".{attr}") and key.split(".")[0] in _qualnames(owner)),
                None)


def _slot(owner: type, trail: tuple[str, ...]) -> str:
    return f"{owner.__qualname__}{''.join(trail)}"


def _plain_name(value, where: str) -> str | None:
    """A name AutoGluon joins into a path must be a plain file name (a list of them for a graph node's path).
    Objects (a weighted ensemble's in-memory children) pass here and are walked like the rest."""
    if isinstance(value, (list, tuple)):  # a graph node's path: components, none empty (a template's name may be)
        if not value or "" in value:
            return f"{where} is {value!r}: an empty path or path component"
        return next((p for p in (_plain_name_only(item, where) for item in value) if p), None)
    if isinstance(value, (str, bytes, bytearray)) or type(value).__module__.startswith(("numpy", "pandas")):
        return _plain_name_only(value, where)
    return None


def _model_name(value, where: str) -> str | None:
    """A model name: a plain file name, or two joined by one '/' (a tuning trial: core/hpo/executors.py names
    each os.path.join(model_name, trial_id))."""
    if type(value) is str and value.count("/") == 1:
        first, second = value.split("/")
        return _plain_name_only(first, where) or _plain_name_only(second, where) if first and second else (
            f"{where} is {_describe(value)}, not a plain file name: AutoGluon joins it into a path")
    return _plain_name_only(value, where)


def _plain_name_only(value, where: str) -> str | None:
    if type(value) is str and (value not in (".", "..") and "/" not in value and "\\" not in value
                               and "\x00" not in value and len(value) <= 255 and not os.path.isabs(value)):
        return None
    return f"{where} is {_describe(value)}, not a plain file name: AutoGluon joins it into a path"


def _graph_problem(root) -> str | None:
    """AutoGluon and torch walk some object graphs recursively without remembering what they saw: feature
    generators their generators (``_post_generators``, ``generators``), torch its modules' children (``eval()``,
    ``to()``, ``_apply``).  A cycle there recurses without end; a torch module shared by several parents is
    walked once per path (genuine networks share an activation module; a chain of shared pairs doubles the walk
    at every level), so the walk each module starts is bounded (``MAX_MODULE_WALK``)."""
    colour: dict[int, int] = {}  # 1: on the current path, 2: done
    walk: dict[int, int] = {}  # a torch module -> modules torch's recursive walk from it visits
    todo: list[tuple[object, bool]] = [(root, False)]
    visits = 0
    while todo:
        node, leaving = todo.pop()
        if leaving:
            colour[id(node)] = 2
            if _is_module(node):
                unique = {id(c): c for c, _ in _graph_children(node)}
                walk[id(node)] = 1 + sum(walk.get(key, 1) for key in unique)
                if walk[id(node)] > MAX_MODULE_WALK:
                    return (f"torch's recursive walk of a {_name(type(node))} in the file visits more than "
                            f"{MAX_MODULE_WALK} modules (modules shared along a chain: eval() or to() would not end)")
            continue
        visits += 1
        if visits > MAX_VISITS:
            return f"the object graph has more than {MAX_VISITS} parts"
        state = colour.get(id(node))
        if state == 1:
            return f"a {_name(type(node))} in the file contains itself (AutoGluon or torch would recurse without end)"
        if state == 2:
            continue
        colour[id(node)] = 1
        todo.append((node, True))
        todo.extend((child, False) for child, _ in _graph_children(node))
    return None


def _graph_children(node):
    """The AutoGluon objects and torch modules an AutoGluon object or torch module holds (through dicts, lists
    and tuples), marked True for a torch module's own children."""
    if _is_module(node):
        return [(child, True) for child in (getattr(node, "__dict__", {}).get("_modules") or {}).values()
                if child is not None]
    found = []
    stack = list(getattr(node, "__dict__", {}).values())
    budget = MAX_VISITS
    while stack and budget:
        budget -= 1
        value = stack.pop()
        if type(value).__module__.startswith(_AG) and hasattr(value, "__dict__") or _is_module(value):
            found.append((value, False))
        elif isinstance(value, dict):
            stack.extend(dict.values(value))
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return found


def _is_module(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def _missing_attributes(value) -> str | None:
    state = getattr(value, "__dict__", None)
    if not isinstance(state, dict):
        return None
    for owner in _qualnames(type(value)) & REQUIRED_ATTRIBUTES.keys():
        missing = sorted(REQUIRED_ATTRIBUTES[owner] - state.keys())
        if missing:
            return (f"a {_name(type(value))} in the file lacks {', '.join(missing[:5])} (AutoGluon reads "
                    f"{'them' if len(missing) > 1 else 'it'} without a fallback)")
    return None


def _object_rule(value) -> str | None:
    cls = type(value)
    if cls.__module__.startswith(_AG):
        problem = _missing_attributes(value)
        if problem:
            return problem
    if _is_networkx(value):
        return _graph_rule(value)
    hooks = getattr(value, "_backward_hooks", None) if type(value).__module__.startswith("torch") else None
    if hooks:
        return f"a {_name(cls)} in the file carries backward hooks"
    state = getattr(value, "__dict__", None) or {}
    for key in state:
        attribute = inspect.getattr_static(cls, key, _MISSING) if isinstance(key, str) else _MISSING
        if attribute is _MISSING:
            continue
        if is_method(attribute):
            return f"a {_name(cls)} in the file shadows its method {key} with an attribute (code would call it)"
        if not cls.__module__.startswith(_AG):
            continue
        if "file" in key and not (type(state[key]) is type(attribute) and isinstance(attribute, (str, int, bool, type(None)))
                                  and state[key] == attribute):
            return f"a {_name(cls)} in the file changes its class's {key} to {state[key]!r}"
    return None


def _array_items(value):
    """None for values walked through their attributes; otherwise (key, value) for what an array-like object
    holds that could be anything: object-typed values of numpy arrays and of every pandas container (columns
    of any dtype, categorical categories, every Index kind's labels and levels), keyed by their index label so
    that a Series reaches the same table rows as the dict AutoGluon writes there; plus a pandas object's
    ``attrs``.  Tensors are walked through their attributes (and their hooks checked)."""
    module = type(value).__module__ or ""
    if module.startswith("numpy"):
        dtype = getattr(value, "dtype", None)
        if (getattr(dtype, "hasobject", False) or getattr(dtype, "kind", "") in "US") and hasattr(value, "ravel"):
            return [("[*]", item) for item in _bounded(value.ravel())]  # objects, and strings a row may restrict
        return ()
    if module.startswith("pandas"):
        import pandas

        items: list = [(_key(k), v) for k, v in _bounded(getattr(value, "attrs", {}).items())]
        if isinstance(value, pandas.DataFrame):
            for position, column in enumerate(value.columns):
                items.append(("[*]", column))
                items.extend((f"[{column}]" if isinstance(column, str) else "[*]", v)
                             for v in _pandas_values(value.iloc[:, position], value.index))
            items.extend(("[*]", label) for label in _index_values(value.index))
        elif isinstance(value, pandas.Series):
            items.extend(_pandas_values(value, value.index))
            items.extend(("[*]", label) for label in _index_values(value.index))
        elif isinstance(value, pandas.Index):
            items.extend(("[*]", label) for label in _index_values(value))
        elif isinstance(value, pandas.api.extensions.ExtensionArray):
            items.extend(("[*]", v) for v in _pandas_values(pandas.Series(value, copy=False), None))
        elif isinstance(value, pandas.CategoricalDtype):
            items.extend(("[*]", label) for label in _index_values(value.categories))
        return items
    return None


def _key(label) -> str:
    return f"[{label}]" if isinstance(label, str) else "[*]"


def _pandas_values(series, index):
    """(key, value) for a Series' values that could be anything: object values, categorical categories, and the
    objects inside any other extension array.  Numbers, dates and bools are data."""
    import pandas

    dtype = series.dtype
    if isinstance(dtype, pandas.CategoricalDtype):
        return [("[*]", v) for v in _index_values(dtype.categories)]
    if dtype == object or not isinstance(dtype, numpy_dtype()):
        labels = index if index is not None and len(index) == len(series) else itertools.repeat(None)
        return [(_key(k), v) for k, v in _bounded(zip(labels, series.array))]
    return []


def _index_values(index):
    """The labels of any pandas Index kind that could be objects: object labels, a CategoricalIndex's
    categories, a MultiIndex's levels."""
    import pandas

    if isinstance(index, pandas.MultiIndex):
        return [v for level in index.levels for v in _index_values(level)]
    if isinstance(index.dtype, pandas.CategoricalDtype):
        return _index_values(index.dtype.categories)
    if index.dtype == object or not isinstance(index.dtype, numpy_dtype()):
        return list(_bounded(index))
    return []


@functools.lru_cache(maxsize=1)
def numpy_dtype():
    import numpy

    return numpy.dtype


def _graph_rule(graph) -> str | None:
    """networkx caches views (``nodes``, ``pred``, ``in_edges``) in the graph's __dict__ and AutoGluon reads
    through them: they must show the graph's own dicts, which the walk checks."""
    state = getattr(graph, "__dict__", {})
    views = {"nodes": ("_nodes", "_node"), "pred": ("_atlas", "_pred"), "succ": ("_atlas", "_succ"),
             "adj": ("_atlas", "_adj")}
    for view, (inner, own) in views.items():
        if view in state and getattr(state[view], inner, None) is not state.get(own):
            return f"the model graph's cached {view} view does not show the graph's own {own}"
    nodes = state.get("_node")
    if isinstance(nodes, dict):  # one model directory per node: the scanner and AutoGluon find a file's node by it
        paths = [tuple(node["path"]) for node in dict.values(nodes)
                 if isinstance(node, dict) and isinstance(node.get("path"), (list, tuple))]
        if len(paths) != len(set(paths)):
            return "two models of the model graph share one directory (AutoGluon writes one directory per model)"
    in_edges = state.get("in_edges")
    if in_edges is not None and (getattr(in_edges, "_graph", None) is not graph
                                 or getattr(in_edges, "_adjdict", None) is not state.get("_pred")):
        return "the model graph's cached in_edges view does not show the graph itself"
    return None


def _skip_attribute(value, key: str) -> bool:
    return _is_networkx(value) and key in ("nodes", "pred", "succ", "adj", "in_edges", "edges", "out_edges")


def _is_networkx(value) -> bool:
    return type(value).__module__.startswith("networkx.")


def _is_callable_value(value) -> bool:
    return isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                              functools.partial, types.BuiltinMethodType)) or type(value).__name__ == "ufunc"


def _is(value, name: str, *, exact_type: bool = False) -> bool:
    if name == NONE:
        return value is None
    if name == DATA:
        return not _is_callable_value(value)
    if name == NUMPY_TYPE:
        import numpy

        return isinstance(value, numpy.dtype) or isinstance(value, type) and issubclass(value, numpy.generic)
    if name.startswith("'"):
        return type(value) is str and value == name[1:-1]
    if name == DATETIME_FIELD:
        return isinstance(value, str) and _is_datetime_field(value)
    if name == ONE_CHAR:
        return isinstance(value, str) and len(value) == 1  # numpy's str_ too (AutoGluon keeps them in an array)
    if name == PARTIAL:
        return type(value) is functools.partial
    if exact_type:
        return f"{type(value).__module__}.{type(value).__qualname__}" == name or type(value) is _resolve(name)
    target = _resolve(name)
    return target is not None and value is target


# Series.dt properties that are numbers per row (AutoGluon casts each to int64); freq, tz, unit, date and time are not
DATETIME_FIELDS = frozenset({
    "year", "month", "day", "hour", "minute", "second", "microsecond", "nanosecond", "dayofweek", "day_of_week",
    "weekday", "dayofyear", "day_of_year", "quarter", "days_in_month", "daysinmonth", "is_month_start", "is_month_end",
    "is_quarter_start", "is_quarter_end", "is_year_start", "is_year_end", "is_leap_year"})


def _is_datetime_field(name: str) -> bool:
    return name in DATETIME_FIELDS


@functools.lru_cache(maxsize=None)
def _resolve(name: str):
    try:
        return shims.resolve(name)
    except LookupError:
        return None


def _path_matches(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_path_matches(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and (pattern[0] == "*" or pattern[0] == parts[0]) and _path_matches(pattern[1:], parts[1:])


@functools.lru_cache(maxsize=None)
def _slot_names(cls: type) -> tuple[str, ...]:
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return tuple(n for n in names if n not in ("__dict__", "__weakref__"))


def _bounded(items, limit: int = MAX_VISITS):
    return itertools.islice(items, limit)


def _name(cls) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _describe(value) -> str:
    if isinstance(value, type):
        return f"the class {_name(value)}"
    if isinstance(value, functools.partial):
        return f"a partial of {_describe(value.func)}"
    if callable(value):
        return f"the function {_name(value)}"
    if isinstance(value, str):
        return repr(value[:80])
    return f"a {_name(type(value))}"
