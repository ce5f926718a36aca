"""The curated allowlist for AutoGluon's fastai ``model-internals.pkl``: data, not code.

Every entry is an exact dotted name (as torch's weights-only unpickler spells it after mapping
Python-2 names) with one line saying why loading it cannot run code, touch files, import modules,
reflect on objects, or load another pickle.  No module-prefix wildcards.  The candidates came from
``tools/sweep_exports.py`` (real exports over problem types, metrics, bagging, refit_full, sample
weights and column kinds, on each supported stack); each was reviewed before it was added here.

How an entry may be used by the pickle (enforced at load time, see ``torch_scope``):
- CONSTRUCT: a class the pickle may call or ``NEWOBJ``, and whose instances may receive ``BUILD``;
- CALL: a function the pickle calls to rebuild a value;
- REFERENCE: a value the pickle only stores (a logger, a metric function, a type used as data);
  the loader refuses to call it during the load.
Everything a file may reference must also be harmless to *call later* with attacker-chosen
arguments, because fastai calls stored callables (callbacks, metrics, transforms) while predicting.

torch's own weights-only defaults (tensor rebuild functions, storages, ``torch.device``,
``collections.OrderedDict``, ...) stay torch's decision and are not repeated here.
"""

from __future__ import annotations

from dataclasses import dataclass

CONSTRUCT = "construct"
CALL = "call"
REFERENCE = "reference"


@dataclass(frozen=True)
class Entry:
    name: str
    use: str
    reason: str


_MODULE_STATE = "object.__new__ then a plain __dict__ update; no I/O, imports or nested loads"
_NN_MODULE = "torch nn.Module: Module.__setstate__ only updates __dict__ and fills default hook dicts"
_PURE_FN = "pure numeric function of its arguments; no I/O, imports or reflection"

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
    Entry("fastai.data.load._wif", REFERENCE, "DataLoader worker-init function: sets thread count and seeds; no I/O"),
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
    Entry("fastai.torch_core.TensorBase", REFERENCE, "tensor subclass passed to torch's _rebuild_from_type_v2; no custom state hooks run"),
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
    # --- numpy: arrays, scalars and dtypes (numpy 2 and numpy 1 spellings) ----------------------
    Entry("numpy._core.multiarray._reconstruct", CALL, "allocates an empty ndarray subclass; refuses non-ndarray types"),
    Entry("numpy.core.multiarray._reconstruct", CALL, "numpy 1.x name of _reconstruct"),
    Entry("numpy._core.multiarray.scalar", CALL, "builds a numpy scalar from a dtype and raw bytes"),
    Entry("numpy.core.multiarray.scalar", CALL, "numpy 1.x name of scalar"),
    Entry("numpy.ndarray", CONSTRUCT, "ndarray.__setstate__ copies raw bytes, or takes a list for object arrays (no nested unpickle)"),
    Entry("numpy.dtype", CONSTRUCT, "dtype from a type code; __setstate__ sets byte order and flags"),
    *(
        Entry(f"numpy.dtypes.{cls}", CONSTRUCT, "dtype instances are BUILT with their dtype class; __setstate__ sets flags only")
        for cls in (
            "BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType",
            "UInt32DType", "UInt64DType", "Float16DType", "Float32DType", "Float64DType", "ObjectDType",
            "StrDType", "BytesDType", "DateTime64DType", "TimeDelta64DType",
        )
    ),
    # --- pandas: the (empty) DataFrame the exported TabularPandas keeps --------------------------
    Entry("pandas.core.frame.DataFrame", CONSTRUCT, "NDFrame.__setstate__ assigns the block manager and attrs; no I/O"),
    Entry("pandas.core.internals.managers.BlockManager", CONSTRUCT, "container of blocks and axes; __setstate__ rebuilds blocks from arrays"),
    Entry("pandas._libs.internals._unpickle_block", CALL, "wraps an ndarray into a pandas Block at given positions"),
    Entry("pandas.core.indexes.base.Index", REFERENCE, "index class handed to the _new_Index shim, which only accepts Index subclasses"),
    Entry("pandas.core.indexes.range.RangeIndex", REFERENCE, "index class handed to the _new_Index shim (start/stop/step only)"),
    # --- standard library values -----------------------------------------------------------------
    Entry("builtins.bytes", CONSTRUCT, "bytes from ints or nothing; no I/O"),
    Entry("builtins.slice", CONSTRUCT, "slice(start, stop, step) value"),
    Entry("builtins.int", REFERENCE, "type stored as data (annotations, defaultdict factory)"),
    Entry("builtins.float", REFERENCE, "type stored as data (annotations)"),
    Entry("builtins.str", REFERENCE, "type stored as data (annotations)"),
    Entry("builtins.tuple", REFERENCE, "type stored as data (annotations)"),
    Entry("builtins.print", REFERENCE, "the learner's logger; writes only to stdout (file= is keyword-only)"),
    Entry("inspect.Signature", CONSTRUCT, "signature value object (fastcore stores __signature__); no reflection when rebuilt"),
    Entry("inspect.Parameter", CONSTRUCT, "parameter value object; validates name and kind only"),
    Entry("inspect._ParameterKind", CONSTRUCT, "int enum lookup by value"),
    Entry("inspect._empty", REFERENCE, "sentinel class for 'no default'; stored, never called"),
    Entry("random.Random", CONSTRUCT, "pseudo-random generator; __setstate__ restores the Mersenne Twister state"),
    Entry("pathlib.PosixPath", CONSTRUCT, "path value (learner.path, model_dir); constructing a path touches no file"),
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


def names() -> frozenset[str]:
    """Every name a fastai internals file may reference besides torch's own defaults."""
    return frozenset(e.name for e in FASTAI_INTERNALS) | frozenset(SHIMS)
