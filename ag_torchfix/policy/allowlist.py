"""The curated allowlists: data, not code.

Every entry is an exact dotted name (as torch's weights-only unpickler spells it after mapping
Python-2 names) with one line saying why loading it cannot run code, touch files, import modules,
reflect on objects, or load another pickle.  No module-prefix wildcards.  The candidates came from
``tools/sweep_exports.py`` (real exports over problem types, metrics, bagging, refit_full, sample
weights and column kinds, on each supported stack); each was reviewed before it was added here.

How an entry may be used by the pickle:
- CONSTRUCT: a class the pickle may ``NEWOBJ`` (with no arguments) or call with the arguments its
  ``args`` patterns allow, and whose instances may receive ``BUILD``;
- CALL: a function the pickle calls to rebuild a value, with the arguments its ``args`` allow;
  ``returns`` names the type of what it makes (``"arg0"``: the class passed as first argument);
- REFERENCE: a value the pickle only stores (a logger, a metric function, a type used as data);
  the loader refuses to call it during the load.
For the fastai internals (loaded by torch's weights-only unpickler) the argument patterns and the
BUILD-state rules below are checked statically, before torch reads the file; strict mode checks
the same rules at run time in its own unpickler.  Everything a file may reference must also be
harmless to *call later* with attacker-chosen arguments, because fastai calls stored callables
(callbacks, metrics, transforms) while predicting.
"""

from __future__ import annotations

from dataclasses import dataclass

CONSTRUCT = "construct"
CALL = "call"
REFERENCE = "reference"


# --- argument patterns: what a call's arguments may be (matched against the scanner's symbols) ------

@dataclass(frozen=True)
class Pattern:
    kind: str  # str int bool none number bytes list dict any storage empty-ordereddict lit made name tuple tuple-of either args-of state
    values: tuple = ()

    def __repr__(self) -> str:
        return f"{self.kind}{self.values if self.values else ''}"


STR, INT, BOOL, NONE, NUMBER = Pattern("str"), Pattern("int"), Pattern("bool"), Pattern("none"), Pattern("number")
GLOBAL = Pattern("global")  # any (allowlisted) global, as a value
OBJECT = Pattern("object")  # an object made by an allowlisted call: never a global, never plain data
BYTES = Pattern("bytes")  # a bytes literal, or what _codecs.encode / bytes() make (protocol 2 spells bytes that way)
LIST, DICT, ANY = Pattern("list"), Pattern("dict"), Pattern("any")
STORAGE = Pattern("storage")  # a tensor storage from a persistent id, checked against its archive record
EMPTY_ORDEREDDICT = Pattern("empty-ordereddict")  # OrderedDict() with no items: tensors' backward hooks
STATE = Pattern("state")  # None, or a state dict that passes the BUILD-state rules (torch's _set_obj_state)


def dict_of(value: Pattern) -> Pattern:
    """A dict whose values all match ``value``."""
    return Pattern("dict-of", (value,))


def lit(*values) -> Pattern:
    return Pattern("lit", values)


def made(*types: str) -> Pattern:
    """An object whose runtime type is one of ``types`` (as the scan can tell from what made it)."""
    return Pattern("made", types)


def name(*names: str) -> Pattern:
    """A global among ``names``."""
    return Pattern("name", names)


def tuple_of(item: Pattern) -> Pattern:
    return Pattern("tuple-of", (item,))


def exactly(*items: Pattern) -> Pattern:
    """A tuple of exactly these items."""
    return Pattern("tuple", items)


def either(*patterns: Pattern) -> Pattern:
    return Pattern("either", patterns)


def star(item: Pattern) -> Pattern:
    """As the only element of an allowed argument tuple: any number of arguments, each matching ``item``."""
    return Pattern("star", (item,))


def args_of(entry: str) -> Pattern:
    """A tuple that is a valid argument tuple for ``entry``."""
    return Pattern("args-of", (entry,))


@dataclass(frozen=True)
class Entry:
    name: str
    use: str
    reason: str
    args: tuple[tuple[Pattern, ...], ...] | None = None  # allowed REDUCE argument tuples (any of them)
    returns: str | None = None  # CALL: type of the result ("arg0": the class passed first)
    torch_default: bool = False  # torch's own weights-only unpickler allows it; listed so the scan accepts it


_MODULE_STATE = "object.__new__ then a plain __dict__ update; no I/O, imports or nested loads"
_NN_MODULE = "torch nn.Module: Module.__setstate__ only updates __dict__ and fills default hook dicts"
_PURE_FN = "pure numeric function of its arguments; no I/O, imports or reflection"

_RECONSTRUCT = ((name("numpy.ndarray"), lit((0,)), BYTES),)
_SCALAR = ((made("numpy.dtype"), BYTES),)
_SLICE = tuple((a, b, c) for a in (INT, NONE) for b in (INT, NONE) for c in (INT, NONE))
_PATH = ((star(STR),),)
_REBUILD_TENSOR = ((STORAGE, INT, tuple_of(INT), tuple_of(INT), BOOL, EMPTY_ORDEREDDICT),
                   (STORAGE, INT, tuple_of(INT), tuple_of(INT), BOOL, EMPTY_ORDEREDDICT, NONE))

# torch storage types a persistent id may name -> bytes per element (torch.save's records hold numel x this)
STORAGE_ITEMSIZE: dict[str, int] = {
    "FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8, "IntStorage": 4,
    "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1, "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}

# numpy and pandas as both profiles meet them (numpy 2 and numpy 1 spellings).
NUMPY_PANDAS: tuple[Entry, ...] = (
    # --- numpy: arrays, scalars and dtypes (numpy 2 and numpy 1 spellings) ----------------------
    Entry("numpy._core.multiarray._reconstruct", CALL, "allocates an empty ndarray; only ever (ndarray, (0,), b'b')",
          args=_RECONSTRUCT, returns="arg0"),
    Entry("numpy.core.multiarray._reconstruct", CALL, "numpy 1.x name of _reconstruct", args=_RECONSTRUCT, returns="arg0"),
    Entry("numpy._core.multiarray.scalar", CALL, "builds a numpy scalar from a checked dtype and raw bytes",
          args=_SCALAR, returns="numpy scalar"),
    Entry("numpy.core.multiarray.scalar", CALL, "numpy 1.x name of scalar", args=_SCALAR, returns="numpy scalar"),
    Entry("numpy.ndarray", CONSTRUCT, "ndarray.__setstate__ copies raw bytes, or takes a list for object arrays "
          "(no nested unpickle); its state is checked (NDARRAY_STATE)"),
    Entry("numpy.dtype", CONSTRUCT, "dtype from a type code; __setstate__ sets byte order and flags, checked against "
          "the type code (DTYPE_STATES)", args=((STR, BOOL, BOOL),)),
    *(
        Entry(f"numpy.dtypes.{cls}", CONSTRUCT, "dtype instances are BUILT with their dtype class; __setstate__ sets flags only")
        for cls in (
            "BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType",
            "UInt32DType", "UInt64DType", "Float16DType", "Float32DType", "Float64DType", "ObjectDType",
            "StrDType", "BytesDType", "DateTime64DType", "TimeDelta64DType", "VoidDType",
        )
    ),
    # --- pandas: frames, indexes, blocks ------------------------------------------------------------
    Entry("pandas.core.frame.DataFrame", CONSTRUCT, "NDFrame.__setstate__ assigns the block manager and attrs; no I/O"),
    Entry("pandas.core.internals.managers.BlockManager", CONSTRUCT, "container of blocks and axes; __init__ verifies "
          "their shapes", args=((tuple_of(made("pandas block")), LIST),)),
    Entry("pandas._libs.internals._unpickle_block", CALL, "wraps an ndarray into a pandas Block at given positions",
          args=((made("numpy.ndarray"), made("builtins.slice"), INT),), returns="pandas block"),
    Entry("pandas.core.indexes.base.Index", REFERENCE, "index class handed to the _new_Index shim, which only accepts Index subclasses"),
    Entry("pandas.core.indexes.range.RangeIndex", REFERENCE, "index class handed to the _new_Index shim (start/stop/step only)"),
)

FASTAI_INTERNALS: tuple[Entry, ...] = (
    # --- the learner and its data pipeline (fastai, fastcore, fasttransform) -----------------------
    Entry("fastai.tabular.learner.TabularLearner", CONSTRUCT, "Learner.__setstate__: __dict__ update plus a new threading.Lock"),
    Entry("fastai.tabular.data.TabularDataLoaders", CONSTRUCT, "GetAttr.__setstate__ is a __dict__ update; " + _MODULE_STATE),
    Entry("fastai.tabular.core.TabularPandas", CONSTRUCT, "GetAttr.__setstate__ is a __dict__ update around a DataFrame"),
    Entry("fastai.tabular.core.TabWeightedDL", CONSTRUCT, "data loader settings; GetAttr.__setstate__ is a __dict__ update"),
    Entry("fastai.tabular.core.ReadTabBatch", CONSTRUCT, "transform holding column lists; " + _MODULE_STATE),
    Entry("fastai.tabular.core.Categorify", CONSTRUCT, "transform holding category maps; " + _MODULE_STATE),
    Entry("fastai.tabular.model.TabularModel", CONSTRUCT, _NN_MODULE),
    Entry("fastai.data.transforms.Categorize", CONSTRUCT, "label transform holding a CategoryMap; " + _MODULE_STATE),
    Entry("fastai.data.transforms.CategoryMap", CONSTRUCT, "list of labels plus a value->index dict; " + _MODULE_STATE),
    Entry("fastai.data.transforms.RegressionSetup", CONSTRUCT, "regression label transform holding a column name; " + _MODULE_STATE),
    Entry("fastai.data.load._FakeLoader", CONSTRUCT, "placeholder loader settings; " + _MODULE_STATE),
    Entry("fastai.data.load._wif", REFERENCE, "worker-init function, never called (num_workers=0); it imports mkl, "
          "so no state may put it where code calls (SHADOWING_STATE)"),
    Entry("fastai.layers.Embedding", CONSTRUCT, _NN_MODULE),
    Entry("fastai.layers.LinBnDrop", CONSTRUCT, _NN_MODULE),
    Entry("fastai.learner.Recorder", CONSTRUCT, "callback; Stateful.__setstate__ is a __dict__ update plus an empty state dict"),
    Entry("fastai.learner.CastToTensor", CONSTRUCT, "callback; Stateful.__setstate__ is a __dict__ update plus an empty state dict"),
    Entry("fastai.learner.AvgLoss", CONSTRUCT, "loss accumulator; " + _MODULE_STATE),
    Entry("fastai.learner.AvgSmoothLoss", CONSTRUCT, "loss accumulator; " + _MODULE_STATE),
    Entry("fastai.learner.AvgMetric", CONSTRUCT, "metric accumulator wrapping an allowlisted function; " + _MODULE_STATE),
    Entry("fastai.callback.core.TrainEvalCallback", CONSTRUCT, "callback; Stateful.__setstate__ is a __dict__ update plus an empty state dict"),
    Entry("fastai.callback.progress.ProgressCallback", CONSTRUCT, "callback drawing progress bars; Stateful.__setstate__ is a __dict__ update"),
    Entry("fastai.losses.BaseLoss", CONSTRUCT, "loss wrapper around an allowlisted torch loss; " + _MODULE_STATE),
    Entry("fastai.losses.CrossEntropyLossFlat", CONSTRUCT, "loss wrapper around CrossEntropyLoss; " + _MODULE_STATE),
    Entry("fastai.metrics.AccumMetric", CONSTRUCT, "metric accumulator wrapping an allowlisted sklearn function; " + _MODULE_STATE),
    Entry("fastai.metrics.accuracy", REFERENCE, _PURE_FN),
    Entry("fastai.metrics.mae", REFERENCE, _PURE_FN),
    Entry("fastai.metrics.mse", REFERENCE, _PURE_FN),
    Entry("fastai.metrics._rmse", REFERENCE, _PURE_FN),
    Entry("fastai.optimizer.Adam", REFERENCE, "optimizer factory stored as opt_func; builds an optimizer from parameters"),
    Entry("fastai.torch_core.TensorBase", REFERENCE, "tensor subclass passed to torch's _rebuild_from_type_v2 (as_subclass); "
          "no custom state hooks run"),
    Entry("fastai.torch_core.trainable_params", REFERENCE, "splitter: returns a model's parameters that require grad"),
    Entry("fastcore.foundation.L", CONSTRUCT, "list container; GetAttr.__setstate__ is a __dict__ update"),
    Entry("fasttransform.transform.Pipeline", CONSTRUCT, "list of transforms; __setstate__ is a __dict__ update"),
    Entry("fastcore.transform.Pipeline", CONSTRUCT, "fastai <= 2.7's Pipeline (fastcore 1.7): __setstate__ is a __dict__ update"),
    # --- AutoGluon helpers that fastai stores as metrics or losses -------------------------------
    Entry("autogluon.tabular.models.fastainn.fastai_helpers.medae", REFERENCE, "median absolute error metric; " + _PURE_FN),
    Entry("autogluon.tabular.models.fastainn.quantile_helpers.HuberPinballLoss", CONSTRUCT, _NN_MODULE),
    # --- torch modules (nn.Module.__setstate__ is a __dict__ update) ---------------------------
    Entry("torch.nn.modules.activation.ReLU", CONSTRUCT, _NN_MODULE),
    Entry("torch.nn.modules.batchnorm.BatchNorm1d", CONSTRUCT, _NN_MODULE),
    Entry("torch.nn.modules.container.ModuleList", CONSTRUCT, _NN_MODULE),
    Entry("torch.nn.modules.container.Sequential", CONSTRUCT, _NN_MODULE),
    Entry("torch.nn.modules.dropout.Dropout", CONSTRUCT, _NN_MODULE),
    Entry("torch.nn.modules.linear.Linear", CONSTRUCT, _NN_MODULE),
    Entry("torch.nn.modules.loss.CrossEntropyLoss", CONSTRUCT, _NN_MODULE),
    Entry("torch.nn.modules.loss.MSELoss", CONSTRUCT, _NN_MODULE),
    # --- sklearn metric functions (fastai's skm_to_fastai stores them in AccumMetric) ------------
    Entry("sklearn.metrics._classification.fbeta_score", REFERENCE, "F-beta score of two arrays; " + _PURE_FN),
    Entry("sklearn.metrics._classification.precision_score", REFERENCE, "precision of two arrays; " + _PURE_FN),
    Entry("sklearn.metrics._classification.recall_score", REFERENCE, "recall of two arrays; " + _PURE_FN),
    Entry("sklearn.metrics._regression.r2_score", REFERENCE, "R^2 of two arrays; " + _PURE_FN),
    *NUMPY_PANDAS,
    Entry("builtins.slice", CONSTRUCT, "slice(start, stop, step) value", args=_SLICE),
    # --- standard library values -----------------------------------------------------------------
    Entry("builtins.bytes", CONSTRUCT, "empty bytes (how protocol 2 spells b''); never bytes(n)", args=((),)),
    Entry("builtins.int", REFERENCE, "type stored as data (annotations, defaultdict factory)"),
    Entry("builtins.float", REFERENCE, "type stored as data (annotations)"),
    Entry("builtins.str", REFERENCE, "type stored as data (annotations)"),
    Entry("builtins.tuple", REFERENCE, "type stored as data (annotations)"),
    Entry("builtins.print", REFERENCE, "the learner's logger; writes only to stdout (file= is keyword-only)"),
    Entry("inspect.Signature", CONSTRUCT, "signature value object (fastcore stores __signature__); no reflection when rebuilt",
          args=((tuple_of(made("inspect.Parameter")),),)),
    Entry("inspect.Parameter", CONSTRUCT, "parameter value object; validates name and kind only",
          args=((STR, made("inspect._ParameterKind")),)),
    Entry("inspect._ParameterKind", CONSTRUCT, "int enum lookup by value (CPython 3.11.0-3.11.4 name the member "
          "instead: ENUM_MEMBERS)", args=((lit(0, 1, 2, 3, 4),),)),
    Entry("inspect._empty", REFERENCE, "sentinel class for 'no default'; stored, never called"),
    Entry("random.Random", CONSTRUCT, "pseudo-random generator; __setstate__ restores (and validates) the Mersenne "
          "Twister state", args=((),)),
    Entry("pathlib.PosixPath", CONSTRUCT, "path value (learner.path, model_dir); constructing a path touches no file",
          args=_PATH),
    # --- torch's own weights-only defaults that exports use (every other torch default is refused) ------
    Entry("collections.OrderedDict", CONSTRUCT, "ordered dict, filled by SETITEMS (tensors' hooks, module state)",
          args=((),), torch_default=True),
    Entry("builtins.set", CONSTRUCT, "set of plain items", args=((LIST,),), torch_default=True),
    Entry("_codecs.encode", CALL, "how protocol 2 spells bytes: encode(text, 'latin1')", args=((STR, lit("latin1")),),
          returns="builtins.bytes", torch_default=True),
    Entry("torch.device", CONSTRUCT, "a device name", args=((STR,), (STR, INT)), torch_default=True),
    Entry("torch.Tensor", REFERENCE, "tensor class (a new_type of _rebuild_from_type_v2)", torch_default=True),
    Entry("torch._utils._rebuild_tensor_v2", CALL, "a tensor view over a checked storage; hooks must be empty",
          args=_REBUILD_TENSOR, returns="torch.Tensor", torch_default=True),
    Entry("torch._utils._rebuild_parameter", CALL, "wraps a tensor as a Parameter; hooks must be empty",
          args=((made("torch.Tensor", "fastai.torch_core.TensorBase"), BOOL, EMPTY_ORDEREDDICT),),
          returns="torch.nn.parameter.Parameter", torch_default=True),
    Entry("torch._tensor._rebuild_from_type_v2", CALL, "func(*args) then as_subclass(new_type) and a state: func must "
          "be _rebuild_tensor_v2 with its checked arguments, new_type a tensor class, the state a checked dict",
          args=((name("torch._utils._rebuild_tensor_v2"), name("torch.Tensor", "fastai.torch_core.TensorBase"),
                 args_of("torch._utils._rebuild_tensor_v2"), STATE),),
          returns="arg1", torch_default=True),
    *(Entry(f"torch.{storage}", REFERENCE, "storage type named by a persistent id (its dtype sizes the record)",
            torch_default=True) for storage in STORAGE_ITEMSIZE),
)

# Names served by a narrow shim instead of the real object (see ``shims``).  The real objects
# (getattr, defaultdict, _new_Index, WindowsPath) never enter torch's view.
SHIMS: dict[str, str] = {
    "builtins.getattr": "bound methods are pickled as getattr(obj, name): only the exact (class, attribute) pairs below",
    "collections.defaultdict": "fastai's CategoryMap.o2i: only the factories below, and SETITEMS only on such dicts",
    "pandas.core.indexes.base._new_Index": "pandas index reconstructor: only for pandas Index subclasses",
    "pathlib.WindowsPath": "predictors trained on Windows: loads as PosixPath on POSIX, like AutoGluon's own loader",
}

# getattr(obj, name) pairs genuine exports contain: (exact class of obj, attribute) -> reason.
GETATTR_PAIRS: dict[tuple[str, str], str] = {
    ("fastai.tabular.core.TabularPandas", "dataloaders"): "TabularDataLoaders keeps this bound method as its factory; it builds loaders in memory",
}

# defaultdict factories genuine exports use -> reason.
DEFAULTDICT_FACTORIES: dict[str, str] = {
    "builtins.int": "CategoryMap.o2i maps unseen categories to 0 (the #na# index)",
}


# Enum classes a file may name a member of -> (the member names, reason).  ``enum.Enum.__reduce_ex__`` writes a
# member as ``cls(value)`` in CPython <= 3.10 and >= 3.11.5 (3.12.0 and later too), but as ``getattr(cls, 'NAME')``
# in 3.11.0-3.11.4 (bpo-44342 switched to by-name; gh-105332 switched back, first released in 3.11.5; Debian 12's
# system Python is 3.11.2): the getattr shim accepts exactly these member names, and
# returns the member from the class's member map (never a method, a dunder or any other attribute).
ENUM_MEMBERS: dict[str, tuple[tuple[str, ...], str]] = {
    "inspect._ParameterKind": (("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD", "VAR_POSITIONAL", "KEYWORD_ONLY",
                                "VAR_KEYWORD"), "the kind of an inspect.Parameter in the signatures fastcore stores"),
}

# Other spellings of an allowlisted name -> (the allowlist's own name, which writers write it).  A file may name
# either; the alias is judged, scoped and resolved exactly as the name it stands for.
ALIASES: dict[str, tuple[str, str]] = {
    "pathlib._local.PosixPath": ("pathlib.PosixPath", "CPython >= 3.13 defines paths in pathlib._local, and pickle "
                                 "names a class by its __module__"),
    "pathlib._local.WindowsPath": ("pathlib.WindowsPath", "CPython >= 3.13 on Windows (served as the WindowsPath shim)"),
}


def canonical(name: str) -> str:
    """The allowlist's own spelling of ``name`` (itself unless it is one of ``ALIASES``)."""
    alias = ALIASES.get(name)
    return alias[0] if alias is not None else name


# What each shim makes (for the BUILD rules): a type name, or "arg0" for the class passed first.
SHIM_RETURNS: dict[str, str] = {
    "builtins.getattr": "bound method",
    "collections.defaultdict": "collections.defaultdict",
    "pandas.core.indexes.base._new_Index": "arg0",
    "pathlib.WindowsPath": "pathlib.PosixPath",
}

# --- BUILD states ------------------------------------------------------------------------------------
# pickle's and torch's weights-only BUILD look ``__setstate__`` up on the *instance*, and when there is
# none they write the state into the instance's ``__dict__`` (and setattr a slot state).  A state that
# plants a dunder name (``__setstate__``, ``__class__``, ``__reduce_ex__``, ``__deepcopy__`` ...) would
# make a second BUILD, or library code that looks the name up on the instance, call whatever the file
# chose.  So a BUILD state is a dict whose keys are plain strings (never computed objects such as
# numpy string scalars), no key is a dunder name except those below (with the value each must hold),
# and there is no slot state unless a class really has those ``__slots__``.  Types whose own
# ``__setstate__`` parses a sequence are listed in SEQUENCE_STATE and checked by their own rule.
DUNDER_STATE: dict[str, tuple[Pattern, str]] = {
    "__stored_args__": (DICT, "fastcore's store_attr bookkeeping (the stored arguments); read by its repr helpers only"),
    "__signature__": (made("inspect.Signature"), "the Signature fasttransform keeps for inspect.signature(); a value"),
    "__annotations__": (dict_of(GLOBAL), "annotations copied by functools.update_wrapper: classes only (a string "
                        "annotation could be evaluated by typing.get_type_hints)"),
    "__doc__": (either(STR, NONE), "docstring copied by functools.update_wrapper"),
    "__module__": (STR, "module name copied by functools.update_wrapper"),
    "__wrapped__": (OBJECT, "the torch loss a fastai loss wraps (functools.update_wrapper): an instance, never a "
                    "callable global; inspect.signature follows it, nothing calls it"),
}

# State keys that name a method of the class (code that calls the method gets the file's value instead; a file
# setting ``forward = _wif`` on a module made fastai call it at predict).  Refused except where fastai's own design
# overrides a method with a value in the instance, with the value each must hold:
SHADOWING_STATE: dict[str, tuple[Pattern, str]] = {
    "dataloaders": (made("bound method"), "TabularPandas keeps its own dataloaders method, bound (the getattr shim)"),
    **{key: (made("fasttransform.transform.Pipeline", "fastcore.transform.Pipeline"),
             f"fastai's DataLoader replaces its {key} hook with a transform Pipeline") for key in (
        "after_item", "before_batch", "after_batch", "after_iter", "before_iter", "create_batches")},
}

# CONSTRUCT entries made by a call with their arguments that genuine files never BUILD afterwards (torch's BUILD
# would update their __dict__ or fail): a BUILD on one is refused.
NEVER_BUILT: frozenset[str] = frozenset({
    "builtins.set", "builtins.slice", "builtins.bytes", "collections.OrderedDict", "torch.device",
    "pathlib.PosixPath", "inspect._ParameterKind", "pandas.core.internals.managers.BlockManager",
})

SEQUENCE_STATE: dict[str, str] = {
    "numpy.ndarray": "(version, shape, dtype, fortran order, data): the data must fill the shape exactly (an object "
                     "array's list shorter than its shape crashes numpy) and match the dtype",
    "numpy.dtype": "(version, byteorder, subarray, names, fields, elsize, alignment, flags): must be exactly what numpy "
                   "writes for the type code (forged flags or fields make numpy read object pointers from raw bytes)",
    "random.Random": "(version, Mersenne Twister state, gauss): Random.setstate validates it",
}

# numpy type codes a fastai file may build dtypes from -> byte orders, elsize, alignment, flags of the state
# numpy writes for them (``dtype.__reduce__()``); nothing else is accepted.
DTYPE_STATES: dict[str, tuple[str, int, int, int]] = {
    **{code: ("|", -1, -1, 0) for code in ("b1", "i1", "u1")},
    **{code: ("<>", -1, -1, 0) for code in ("i2", "i4", "i8", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")},
    "O8": ("|", -1, -1, 63),
}


def names() -> frozenset[str]:
    """Every name a fastai internals file may reference besides torch's own defaults."""
    return frozenset(e.name for e in FASTAI_INTERNALS) | frozenset(SHIMS)


# --- strict mode: every other pickle AutoGluon reads while loading and using a TabularPredictor ------
# (predictor.pkl, learner.pkl, models/trainer.pkl, models/*/model.pkl, bagged children, utils/).
# Candidates from tools/sweep_strict.py over the CPU model zoo of autogluon.tabular[all] (LightGBM,
# CatBoost, XGBoost, RF, XT, KNN, LR, NeuralNetTorch, NeuralNetFastAI, weighted ensembles), bagged and
# stacked, refit_full, every problem type, numeric/categorical/datetime/text columns; each reviewed.
# Loaded by ag_torchfix's own restricted unpickler (``strict``), which enforces CONSTRUCT/CALL/REFERENCE
# exactly as torch's weights-only unpickler does for the fastai internals.

_AG = "AutoGluon object: no __setstate__/__reduce__ of its own, BUILD is a __dict__ update; no I/O, imports or nested loads"
_AG_GEN = "AutoGluon feature generator: BUILD is a __dict__ update; transforms DataFrames in memory"
_AG_MODEL = "AutoGluon model wrapper: BUILD is a __dict__ update; its inner model is restored by the entries below"
_SK = "scikit-learn estimator: BaseEstimator.__setstate__ checks the version and updates __dict__; in-memory maths only"
_NX = "networkx graph view over plain dicts (the trainer's model graph); __setstate__ only re-links dicts"
_REF_FN = "function stored as data (a metric); called later with arrays, no I/O, imports or reflection"

STRICT: tuple[Entry, ...] = (
    # --- AutoGluon: predictor, learner, trainer, cleaners, metrics -------------------------------------
    Entry("autogluon.tabular.predictor.predictor.TabularPredictor", CONSTRUCT, _AG),
    Entry("autogluon.tabular.learner.default_learner.DefaultLearner", CONSTRUCT, _AG),
    Entry("autogluon.tabular.trainer.auto_trainer.AutoTrainer", CONSTRUCT, _AG),
    Entry("autogluon.common.features.feature_metadata.FeatureMetadata", CONSTRUCT, _AG),
    Entry("autogluon.common.utils.cv_splitter.CVSplitter", CONSTRUCT, _AG),
    Entry("autogluon.core.models.dummy.dummy_model.DummyModel", CONSTRUCT, "AutoGluon's DUMMY model (a constant "
          "predictor, the model of AutoGluon's own edge-case tests); " + _AG_MODEL),
    Entry("autogluon.core.models.dummy._dummy_quantile_regressor.DummyQuantileRegressor", CONSTRUCT,
          "list of per-quantile sklearn DummyRegressors; " + _AG),
    *(Entry(f"sklearn.dummy.{cls}", CONSTRUCT, "sklearn's constant predictors: fitted constants only; " + _SK)
      for cls in ("DummyClassifier", "DummyRegressor")),
    Entry("autogluon.core.utils.utils.CVSplitter", CONSTRUCT, "AutoGluon 1.1 location of CVSplitter; " + _AG),
    Entry("autogluon.core.data.cleaner.CleanerDummy", CONSTRUCT, _AG),
    Entry("autogluon.core.data.cleaner.CleanerMulticlass", CONSTRUCT, _AG),
    Entry("autogluon.core.data.label_cleaner.LabelCleanerBinary", CONSTRUCT, _AG),
    Entry("autogluon.core.data.label_cleaner.LabelCleanerDummy", CONSTRUCT, _AG),
    Entry("autogluon.core.data.label_cleaner.LabelCleanerMulticlass", CONSTRUCT, _AG),
    Entry("autogluon.core.metrics._ClassScorer", CONSTRUCT, "metric wrapper holding an allowlisted score function and kwargs; " + _AG),
    Entry("autogluon.core.metrics._PredictScorer", CONSTRUCT, "metric wrapper holding an allowlisted score function and kwargs; " + _AG),
    Entry("autogluon.core.metrics._QuantileScorer", CONSTRUCT, "metric wrapper holding an allowlisted score function and kwargs; " + _AG),
    Entry("autogluon.core.metrics._ProbaScorer", CONSTRUCT, "metric wrapper holding an allowlisted score function and kwargs; " + _AG),
    Entry("autogluon.core.metrics._ThresholdScorer", CONSTRUCT, "metric wrapper holding an allowlisted score function and kwargs; " + _AG),
    # every metric function behind AutoGluon's eval_metric names (autogluon.core.metrics.METRICS)
    *(Entry(f"autogluon.core.metrics.{name}", REFERENCE, _REF_FN) for name in (
        "quantile_metrics.pinball_loss", "rmse_func", "smape_func", "customized_log_loss", "customized_roc_auc",
        "local_pearsonr", "local_spearmanr", "classification_metrics.balanced_accuracy",
        "classification_metrics.customized_binary_roc_auc_score", "classification_metrics.pac",
        "classification_metrics.quadratic_kappa")),
    *(Entry(f"sklearn.metrics.{name}", REFERENCE, _REF_FN) for name in (
        "_classification.f1_score", "_classification.matthews_corrcoef", "_classification.precision_score",
        "_classification.recall_score", "_ranking.average_precision_score", "_regression.mean_absolute_error",
        "_regression.mean_absolute_percentage_error", "_regression.mean_squared_error",
        "_regression.median_absolute_error", "_regression.r2_score")),
    Entry("autogluon.core.models.abstract._auxiliary_params.ParamsAuxDict", CONSTRUCT, "dict subclass rebuilt from a plain dict (its __reduce__); warns on mutation"),
    Entry("autogluon.core.models.abstract._mutation_deprecated_dict.ParamsDict", CONSTRUCT, "dict subclass rebuilt from a plain dict (its __reduce__); warns on mutation"),
    # hyperparameter search spaces a user passed to fit (kept in fit_hyperparameters_ and model params)
    *(Entry(f"autogluon.common.space.{name}", CONSTRUCT, "search-space bounds a user gave fit (hyperparameter "
            "tuning): plain data, BUILD is a __dict__ update; sampled only when fitting") for name in (
        "Bool", "Categorical", "Int", "Real")),
    Entry("autogluon.core.utils.early_stopping.AdaptiveES", REFERENCE, "early-stopping class stored as a setting; not used at predict time"),
    # --- AutoGluon: ensembles and models ------------------------------------------------------------
    Entry("autogluon.core.models.ensemble.stacker_ensemble_model.StackerEnsembleModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.core.models.ensemble.weighted_ensemble_model.WeightedEnsembleModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.core.models.greedy_ensemble.ensemble_selection.EnsembleSelection", CONSTRUCT, _AG),
    Entry("autogluon.core.models.greedy_ensemble.greedy_weighted_ensemble_model.GreedyWeightedEnsembleModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.tabular.models.catboost.catboost_model.CatBoostModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.tabular.models.fastainn.tabular_nn_fastai.NNFastAiTabularModel", CONSTRUCT, _AG_MODEL + " (its learner loads through the secure loader)"),
    Entry("autogluon.tabular.models.knn.knn_model.KNNModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.tabular.models.lgb.lgb_model.LGBModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.tabular.models.lgb.lgb_utils.QuantileBooster", CONSTRUCT, "list of per-quantile LightGBM boosters; " + _AG),
    Entry("autogluon.tabular.models.lr.lr_model.LinearModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.tabular.models.lr.lr_preprocessing_utils.OheFeaturesGenerator", CONSTRUCT, _SK),
    Entry("autogluon.tabular.models.rf.rf_model.RFModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.tabular.models.rf.rf_quantile.DecisionTreeQuantileRegressor", CONSTRUCT, _SK),
    Entry("autogluon.tabular.models.rf.rf_quantile.ExtraTreeQuantileRegressor", CONSTRUCT, _SK),
    Entry("autogluon.tabular.models.rf.rf_quantile.ExtraTreesQuantileRegressor", CONSTRUCT, _SK),
    Entry("autogluon.tabular.models.rf.rf_quantile.RandomForestQuantileRegressor", CONSTRUCT, _SK),
    Entry("autogluon.tabular.models.rf.compilers.native.AbstractNativeCompiler", REFERENCE, "compiler class stored on the model; its save_in_pkl is True, so AutoGluon never calls its load (which unpickles model_native.pkl), and BUILD on a class is refused"),
    Entry("autogluon.tabular.models.tabular_nn.compilers.native.AbstractNativeCompiler", REFERENCE, "compiler class stored on the model; save_in_pkl is True, so its load (a nested unpickle) is never called; BUILD on a class is refused"),
    Entry("autogluon.tabular.models.tabular_nn.torch.tabular_nn_torch.TabularNeuralNetTorchModel", CONSTRUCT, _AG_MODEL),
    Entry("autogluon.tabular.models.tabular_nn.torch.torch_network_modules.EmbedNet", CONSTRUCT, _NN_MODULE),
    Entry("autogluon.tabular.models.tabular_nn.utils.categorical_encoders.OneHotMergeRaresHandleUnknownEncoder", CONSTRUCT, _SK),
    Entry("autogluon.tabular.models.tabular_nn.utils.categorical_encoders.OrdinalMergeRaresHandleUnknownEncoder", CONSTRUCT, _SK),
    Entry("autogluon.tabular.models.xgboost.xgboost_model.XGBoostModel", CONSTRUCT, _AG_MODEL + " (the booster reloads from XGBoost's own model file)"),
    Entry("autogluon.tabular.models.xgboost.xgboost_utils.OheFeatureGenerator", CONSTRUCT, _SK),
    Entry("autogluon.tabular.models.xt.xt_model.XTModel", CONSTRUCT, _AG_MODEL),
    # --- AutoGluon: feature generators (numeric, categorical, datetime, text) -------------------------
    *(Entry(f"autogluon.features.generators.{name}", CONSTRUCT, _AG_GEN) for name in (
        "astype.AsTypeFeatureGenerator", "auto_ml_pipeline.AutoMLPipelineFeatureGenerator",
        "binned.BinnedFeatureGenerator", "category.CategoryFeatureGenerator", "datetime.DatetimeFeatureGenerator",
        "drop_duplicates.DropDuplicatesFeatureGenerator", "drop_unique.DropUniqueFeatureGenerator",
        "fillna.FillNaFeatureGenerator", "identity.IdentityFeatureGenerator",
        "label_encoder.LabelEncoderFeatureGenerator", "memory_minimize.CategoryMemoryMinimizeFeatureGenerator",
        "one_hot_encoder.CatToInt", "one_hot_encoder.OneHotEncoderFeatureGenerator",
        "text_ngram.TextNgramFeatureGenerator", "text_special.TextSpecialFeatureGenerator")),
    # --- boosters: each restores itself from its library's own native model format ---------------------
    Entry("lightgbm.basic.Booster", CONSTRUCT, "restores itself from LightGBM's text model format (LGBM_BoosterLoadModelFromString, native code); no pickle"),
    Entry("catboost.core.CatBoostClassifier", CONSTRUCT, "restores itself from CatBoost's binary model format (_load_from_string, native code); no pickle"),
    Entry("catboost.core.CatBoostRegressor", CONSTRUCT, "restores itself from CatBoost's binary model format (_load_from_string, native code); no pickle"),
    Entry("xgboost.sklearn.XGBClassifier", REFERENCE, "class stored by AutoGluon, which reloads the booster from XGBoost's own model file (not pickle)"),
    Entry("xgboost.sklearn.XGBRegressor", REFERENCE, "class stored by AutoGluon, which reloads the booster from XGBoost's own model file (not pickle)"),
    # --- scikit-learn -----------------------------------------------------------------------------------
    *(Entry(f"sklearn.{name}", CONSTRUCT, _SK) for name in (
        "compose._column_transformer.ColumnTransformer", "ensemble._forest.ExtraTreesClassifier",
        "ensemble._forest.ExtraTreesRegressor", "ensemble._forest.RandomForestClassifier",
        "ensemble._forest.RandomForestRegressor", "feature_extraction.text.CountVectorizer",
        "impute._base.SimpleImputer", "linear_model._logistic.LogisticRegression", "linear_model._ridge.Ridge",
        "neighbors._classification.KNeighborsClassifier", "neighbors._regression.KNeighborsRegressor",
        "pipeline.Pipeline", "preprocessing._data.MinMaxScaler", "preprocessing._data.QuantileTransformer",
        "preprocessing._data.StandardScaler", "preprocessing._encoders.OneHotEncoder",
        "preprocessing._function_transformer.FunctionTransformer", "tree._classes.DecisionTreeClassifier",
        "tree._classes.DecisionTreeRegressor", "tree._classes.ExtraTreeClassifier",
        "tree._classes.ExtraTreeRegressor")),
    Entry("sklearn.tree._tree.Tree", CONSTRUCT, "C tree rebuilt from node and value arrays (__setstate__ copies arrays)"),
    Entry("sklearn.model_selection._split.RepeatedKFold", CONSTRUCT, "fold splitter settings; " + _AG),
    Entry("sklearn.model_selection._split.RepeatedStratifiedKFold", CONSTRUCT, "fold splitter settings; " + _AG),
    Entry("sklearn.model_selection._split.KFold", REFERENCE, "splitter class stored as a setting"),
    Entry("sklearn.model_selection._split.StratifiedKFold", REFERENCE, "splitter class stored as a setting"),
    Entry("sklearn.metrics._classification.accuracy_score", REFERENCE, _REF_FN),
    # --- torch (NeuralNetTorch's network, pickled whole) ----------------------------------------------
    Entry("torch._utils._rebuild_tensor_v2", CALL, "torch's weights-only default: a tensor view over a storage"),
    Entry("torch._utils._rebuild_parameter", CALL, "torch's weights-only default: wraps a tensor as a Parameter"),
    Entry("torch.device", CONSTRUCT, "torch's weights-only default: a device name"),
    Entry("torch.Tensor", CONSTRUCT, "tensors rebuilt above are BUILT with their class; no state hooks run code"),
    Entry("torch.nn.parameter.Parameter", CONSTRUCT, "parameters rebuilt above are BUILT with their class"),
    *(Entry(f"torch.nn.modules.{name}", CONSTRUCT, _NN_MODULE) for name in (
        "activation.ReLU", "activation.Softmax", "container.ModuleList", "container.Sequential", "dropout.Dropout",
        "linear.Linear", "sparse.Embedding")),
    # --- numpy random state, scalars and functions ----------------------------------------------------------
    Entry("numpy.random._pickle.__randomstate_ctor", CALL, "RandomState from a bit-generator name looked up in numpy's "
          "fixed table (no import); its second argument is called, so strict mode accepts only numpy's own constructor "
          "there (STRICT_CALLABLE_ARGS)"),
    Entry("numpy.random._pickle.__bit_generator_ctor", CALL, "bit generator from numpy's fixed table of names (no import)"),
    Entry("numpy.random._mt19937.MT19937", CONSTRUCT, "Mersenne Twister state; __setstate__ restores the key array"),
    Entry("numpy.random.mtrand.RandomState", CONSTRUCT, "legacy random state; __setstate__ restores the bit generator state"),
    Entry("numpy.clip", REFERENCE, "clips an array (NeuralNetFastAI's y-range, wrapped in the partial shim)"),
    Entry("numpy.float64", REFERENCE, "scalar type stored as data (a dtype setting)"),
    Entry("numpy.int8", REFERENCE, "scalar type stored as data (a dtype setting)"),
    Entry("numpy.uint8", REFERENCE, "scalar type stored as data (a dtype setting)"),
    # --- pandas beyond frames -------------------------------------------------------------------------
    Entry("pandas.core.series.Series", CONSTRUCT, "NDFrame.__setstate__ assigns the block manager and attrs; no I/O"),
    Entry("pandas.core.internals.managers.SingleBlockManager", CONSTRUCT, "one block and its index; __setstate__ rebuilds from arrays"),
    Entry("pandas.core.dtypes.dtypes.CategoricalDtype", CONSTRUCT, "categories and an ordered flag; __setstate__ sets both"),
    Entry("pandas.core.arrays.categorical.Categorical", CONSTRUCT, "codes plus a CategoricalDtype; __setstate__ assigns them"),
    Entry("pandas._libs.arrays.__pyx_unpickle_NDArrayBacked", CALL, "Cython reconstructor: cls.__new__ of an allowlisted array type, then its state"),
    Entry("pandas._libs.tslibs.timestamps._unpickle_timestamp", CALL, "Timestamp from an int64 value, timezone and unit"),
    Entry("pandas._libs.tslibs.timestamps.Timestamp", CONSTRUCT, "timestamps rebuilt above carry this class"),
    # --- networkx: the trainer's model graph --------------------------------------------------------------
    Entry("networkx.classes.digraph.DiGraph", CONSTRUCT, "directed graph of plain dicts; no custom state hooks"),
    Entry("networkx.classes.coreviews.AdjacencyView", CONSTRUCT, _NX),
    Entry("networkx.classes.reportviews.InEdgeView", CONSTRUCT, _NX),
    Entry("networkx.classes.reportviews.NodeView", CONSTRUCT, _NX),
    # --- standard library -------------------------------------------------------------------------------
    Entry("builtins.slice", CONSTRUCT, "slice(start, stop, step) value"),
    Entry("builtins.list", REFERENCE, "type stored as data (a defaultdict factory)"),
    Entry("collections.OrderedDict", CONSTRUCT, "ordered dict; filled by SETITEMS like a dict"),
    Entry("datetime.timedelta", CONSTRUCT, "duration value (datetime features)"),
    Entry("datetime.timezone", CONSTRUCT, "fixed-offset timezone value (datetime features)"),
    Entry("fastai.tabular.core.Categorify", REFERENCE, "fastai proc class listed in NeuralNetFastAI's settings; never called while loading"),
    *NUMPY_PANDAS,
)

# Strict mode's own unpickler checks BUILD states at run time with the same rules (DUNDER_STATE and
# these additions); types whose own __setstate__ parses a sequence state:
STRICT_SEQUENCE_STATE: dict[str, str] = {
    "numpy.ndarray": "(version, shape, dtype, fortran, data): an object dtype needs a list that fills the shape",
    "numpy.dtype": "dtype states: after BUILD the dtype must equal one numpy builds from its own description "
                   "(flags, fields and itemsize cannot be forged)",
    "pandas.core.arrays.categorical.Categorical": "NDArrayBacked state (codes, dtype, ...): pandas' own Cython parser",
    "pandas.core.internals.managers.SingleBlockManager": "(axes, values, ...) legacy tuple: pandas' own parser",
    "functools.partial": "(func, args, kwargs, dict): the partial shim checks the function again",
}
STRICT_DUNDER_STATE: dict[str, tuple[Pattern, str]] = {
    "__networkx_cache__": (Pattern("empty-dict"), "networkx's per-graph cache of backend conversions: must be empty"),
}

# Strict-mode shims (``strict``): the real objects never reach the unpickler.
STRICT_SHIMS: dict[str, str] = {
    "collections.defaultdict": "only with the factories below, and SETITEMS only on such dicts",
    "pandas.core.indexes.base._new_Index": "pandas index reconstructor: only for pandas Index subclasses",
    "functools.partial": "only around the functions below, checked again when BUILD restores its state",
    "torch.storage._load_from_bytes": "torch pickles storages as torch.save bytes and reloads them with full pickle; "
                                      "the shim reloads them weights-only and accepts only a storage",
}
# Strict mode checks every call's arguments at run time: no argument may be a class or a function (the callee
# could call it: numpy's __randomstate_ctor calls its second argument) except these, by callee (the argument
# tuples themselves: STRICT_CALLS below).
STRICT_CALLABLE_ARGS: dict[str, tuple[str, ...]] = {
    "numpy._core.multiarray._reconstruct": ("numpy.ndarray",),
    "numpy.core.multiarray._reconstruct": ("numpy.ndarray",),
    "numpy.random._pickle.__randomstate_ctor": ("numpy.random._pickle.__bit_generator_ctor",
                                                "numpy.random._mt19937.MT19937"),
    "numpy.random._pickle.__bit_generator_ctor": ("numpy.random._mt19937.MT19937",),
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked": ("<construct>",),  # the array class it rebuilds
    "pandas.core.indexes.base._new_Index": ("<construct>", "<reference>"),  # the shim checks for Index classes
    "collections.defaultdict": ("<reference>", "<construct>"),  # the shim checks its factories
    "functools.partial": ("<reference>",),  # the shim checks its functions
}
STRICT_DEFAULTDICT_FACTORIES: dict[str, str] = {
    "builtins.list": "AutoGluon's feature-type groupings (defaultdict(list))",
    "collections.OrderedDict": "AutoGluon's nested model-info maps (defaultdict(OrderedDict))",
}
STRICT_PARTIAL_FUNCS: dict[str, str] = {
    "numpy.clip": "NeuralNetFastAI's y-range clipping: partial(np.clip, a_min=..., a_max=...)",
    "sklearn.metrics._classification.f1_score": "f1_macro/micro/weighted: partial(f1_score, average=...)",
    "sklearn.metrics._classification.precision_score": "precision_*: partial(precision_score, average=...)",
    "sklearn.metrics._classification.recall_score": "recall_*: partial(recall_score, average=...)",
    "autogluon.core.metrics.customized_roc_auc": "roc_auc_ovo/ovr variants: partial(customized_roc_auc, ...)",
}

# --- strict mode: the arguments of every call, and the values the libraries trust -------------------------
# Genuine AutoGluon pickles construct every class with NEWOBJ and no arguments (then BUILD); the only calls with
# arguments are these rebuild functions and value types, each with the argument tuples its library's own
# __reduce__ writes (measured over the CPU zoo and the writers' goldens: tools/sweep_values.py).  A call
# not listed here, or with other arguments, is refused before it runs: an admitted constructor called with sizes,
# shapes or strides of the file's choosing allocates or reads what the file says.
_TIMEDELTA, _NDARRAY = made("datetime.timedelta"), made("numpy.ndarray")
_MT19937 = made("numpy.random._mt19937.MT19937")
STRICT_CALLS: dict[str, tuple[tuple[tuple[Pattern, ...], ...], str]] = {
    "autogluon.core.models.abstract._auxiliary_params.ParamsAuxDict": (((DICT,),), "its __reduce__: (cls, (dict,))"),
    "autogluon.core.models.abstract._mutation_deprecated_dict.ParamsDict": (((DICT,),), "its __reduce__: (cls, (dict,))"),
    "builtins.slice": (_SLICE, "slice.__reduce__: (start, stop, step); block placements"),
    "collections.OrderedDict": (((),), "OrderedDict.__reduce__: no arguments, items by SETITEMS"),
    "collections.defaultdict": (((GLOBAL,),), "defaultdict.__reduce__: (factory,); the shim checks the factory"),
    "datetime.timedelta": (((INT, INT, INT),), "timedelta.__reduce__: (days, seconds, microseconds), range-checked by C"),
    "datetime.timezone": (((_TIMEDELTA,), (_TIMEDELTA, STR)), "timezone.__getinitargs__: (offset[, name])"),
    "functools.partial": (((GLOBAL,),), "partial.__reduce__: (func,), then BUILD; the shim checks the function"),
    "numpy._core.multiarray._reconstruct": (_RECONSTRUCT, "ndarray.__reduce__: an empty array, filled by BUILD"),
    "numpy.core.multiarray._reconstruct": (_RECONSTRUCT, "numpy 1.x name of _reconstruct"),
    "numpy._core.multiarray.scalar": (_SCALAR, "generic.__reduce__: (dtype, raw bytes of exactly its itemsize)"),
    "numpy.core.multiarray.scalar": (_SCALAR, "numpy 1.x name of scalar"),
    "numpy.dtype": (((STR, BOOL, BOOL),), "dtype.__reduce__: (type code, align, copy), then BUILD"),
    "numpy.random._pickle.__bit_generator_ctor": (((GLOBAL,), (STR,)), "bit generator by class (numpy 2) or name (1.x)"),
    "numpy.random._pickle.__randomstate_ctor": (((_MT19937,), (STR,), (STR, GLOBAL), (GLOBAL,), (_MT19937, GLOBAL)),
                                                "RandomState around a bit generator (numpy 2) or its name (1.x)"),
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked": (((GLOBAL, INT, NONE),), "Cython __reduce_cython__: (cls, "
                                                         "checksum, None), then BUILD (a state here skips the check)"),
    "pandas._libs.internals._unpickle_block": (((either(_NDARRAY, made("pandas.core.arrays.base.ExtensionArray")),
                                                 either(made("builtins.slice"), _NDARRAY), INT),),
                                               "Block.__reduce__: (values, placement, ndim)"),
    "pandas._libs.tslibs.timestamps._unpickle_timestamp": (((INT, ANY, ANY, INT), (INT, ANY, ANY)),
                                                           "Timestamp.__reduce__: (value, freq, tz[, unit])"),
    "pandas.core.indexes.base._new_Index": (((GLOBAL, DICT),), "Index.__reduce__: (cls, dict of constructor arguments)"),
    "pandas.core.internals.managers.BlockManager": (((tuple_of(made("pandas.core.internals.blocks.Block")), LIST),),
                                                    "BlockManager.__reduce__ (pandas >= 2.1): (blocks, axes)"),
    "sklearn.tree._tree.Tree": (((INT, _NDARRAY, INT),), "Tree.__reduce__: (n_features, n_classes, n_outputs)"),
    "torch._utils._rebuild_parameter": (((made("torch.Tensor"), BOOL, EMPTY_ORDEREDDICT),),
                                        "Parameter.__reduce_ex__: (tensor, requires_grad, no hooks)"),
    "torch._utils._rebuild_tensor_v2": (((made("torch.storage.TypedStorage", "torch.storage.UntypedStorage"), INT,
                                          tuple_of(INT), tuple_of(INT), BOOL, EMPTY_ORDEREDDICT),
                                         (made("torch.storage.TypedStorage", "torch.storage.UntypedStorage"), INT,
                                          tuple_of(INT), tuple_of(INT), BOOL, EMPTY_ORDEREDDICT, NONE)),
                                        "Tensor.__reduce_ex__: (storage, offset, size, stride, requires_grad, hooks)"),
    "torch.device": (((STR,), (STR, INT)), "device.__reduce__: (type[, index])"),
    "torch.storage._load_from_bytes": (((BYTES,),), "storage.__reduce__: (torch.save bytes,); the shim checks them"),
}

# Values strict mode checks when they are made, before any library code sees them: each invariant is one the
# library assumes and does not check itself (the code that relies on it in the reason).  value_invariants.py
# implements them; tests/test_strict_values.py shows each violation crash, hang or allocate without the check.
STRICT_INVARIANTS: dict[str, str] = {
    "numpy.ndarray":
        "at most MAX_EQUAL_HASHES values of an object array share a hash, full or folded to 32 bits: pandas' hash "
        "tables (Categorical, get_loc, isin) fold hashes that way, sklearn builds sets of categories_ at transform",
    "pandas.core.arrays.categorical.Categorical":
        "codes are one-dimensional integers in [-1, len(categories)): take_nd/Categorical.__array__ index categories "
        "by code in C without a bounds check (an out-of-range code reads or writes outside the array)",
    "pandas.core.internals.blocks.Block":
        "values have one row per placement and the placement lies inside the frame: BlockManager indexes blocks by "
        "mgr_locs in Cython (_unpickle_block skips new_block's check_ndim)",
    "pandas.core.internals.managers.BlockManager":
        "blocks cover every column exactly once with rows equal to the index length: _rebuild_blknos_and_blklocs "
        "and iget index by these (gaps are AssertionErrors at predict)",
    "pandas.core.internals.managers.SingleBlockManager":
        "one block of exactly the index's length: the legacy state path sets axes and blocks without verification",
    "pandas.core.indexes.range.RangeIndex":
        "at most MAX_RANGE_INDEX positions: 24 bytes of state describe any length, which AutoGluon and pandas "
        "materialise (reindex, _values) at predict",
    "pandas.core.indexes.base.Index":
        "built from an array and a name only (what Index.__reduce__ writes): Index(**d) passes any keyword on (a dtype "
        "string makes sparse or Arrow arrays strict mode never reviewed); its labels are hash-checked as object arrays",
    "pandas.core.frame.DataFrame":
        "state keys are pandas' own (_mgr, _typ, _metadata, _attrs, _flags): NDFrame.__setstate__ sets every other "
        "key as an attribute, which code reading the frame may call or trust",
    "pandas.core.series.Series":
        "state keys are pandas' own (_mgr, _typ, _metadata, _attrs, _flags, _name)",
    "torch.Tensor":
        "a contiguous view inside its storage: torch trusts size and stride (a zero stride repeats one element into "
        "gigabytes when the tensor is copied at predict)",
    "sklearn.tree._tree.Tree":
        "n_outputs x max(n_classes) within MAX_TREE_OUTPUTS: every node's value row is that long (value_stride), "
        "so the shape multiplies what __setstate__ and predict_proba allocate per node",
    "builtins.dict":
        "keys of one dict or set hash alike at most MAX_EQUAL_HASHES times: inserting n keys with one hash costs n**2 "
        "comparisons (ints k*(2**61-1) all hash to 0)",
}
MAX_RANGE_INDEX = 100_000_000  # 800 MB when materialised as int64
MAX_TREE_OUTPUTS = 1_000_000   # n_outputs x max(n_classes) of one sklearn tree
MAX_EQUAL_HASHES = 16
STRICT_FRAME_STATE = {
    "pandas.core.frame.DataFrame": frozenset({"_mgr", "_typ", "_metadata", "_attrs", "attrs", "_flags", "_data"}),
    "pandas.core.series.Series": frozenset({"_mgr", "_typ", "_metadata", "_attrs", "attrs", "_flags", "_name", "_data", "name"}),
}
STRICT_INDEX_ARGS = {
    "pandas.core.indexes.base.Index": frozenset({"data", "name"}),
    "pandas.core.indexes.range.RangeIndex": frozenset({"start", "stop", "step", "name"}),
}
