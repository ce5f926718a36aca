"""The genuine fastai learner AutoGluon exports, position by position: data for ``materialize``.

A secure load hands torch's weights-only unpickler inert records for every class below and inert references for
every function (``records``).  ``materialize`` then accepts a record only where this schema puts its class, an
attribute only if its class lists it, a value only if it matches the attribute's pattern, and a function only at a
position that names it (then it places the genuine function from code).  Everything else is refused with the path
of the offending position.  Derived from genuine learners of every golden writer (tests/goldens/) and the test
matrix's stacks (``tools/sweep_schema.py``), and from fastai's own code for what each position is used for.

Patterns: ``BOOL``, ``INT`` (bounded), ``NUMBER`` (int, float or numpy scalar, bounded), ``STR`` (bounded),
``NONE``, ``lit(...)``, ``either(...)``, ``rec(class...)``, ``fn(function...)``, ``bound(attr)`` (the record's own
method, as ``getattr`` pickles it), ``list_of``/``tuple_of``/``set_of``/``dict_of`` (str keys), ``L(item)``
(fastcore's ``L`` record holding items), ``typ(type...)`` (a class stored as data), ``TENSOR``, ``PARAMETER``,
``DEVICE``, ``PATH``, ``NDARRAY``, ``DATAFRAME``, ``SIGNATURE``, ``RANDOM``, ``EMPTY_ODICT`` (a hook dict: must be
empty), ``O2I`` (a category-to-index map), ``ATOM`` (None, bool, number or short str).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class P:
    kind: str
    args: tuple = ()

    def __repr__(self) -> str:
        return f"{self.kind}{self.args if self.args else ''}"


BOOL, INT, NUMBER, STR, NONE = P("bool"), P("int"), P("number"), P("str"), P("none")
ATOM = P("atom")
TENSOR, PARAMETER, DEVICE, PATH = P("tensor"), P("parameter"), P("device"), P("path")
NDARRAY, DATAFRAME, SIGNATURE, RANDOM = P("ndarray"), P("dataframe"), P("signature"), P("random")
EMPTY_ODICT, O2I = P("empty-odict"), P("o2i")


def lit(*values) -> P:
    return P("lit", values)


def either(*patterns: P) -> P:
    return P("either", patterns)


def rec(*classes: str) -> P:
    return P("record", classes)


def fn(*functions: str) -> P:
    return P("function", functions)


def bound(attr: str) -> P:
    return P("bound", (attr,))


def list_of(item: P, most: int | None = None, unique: bool = False) -> P:
    """A list of items matching ``item``; at most ``most`` of them, and with ``unique`` each object only once (fastai
    does its work once per occurrence: a loader listed 5,000 times is walked 5,000 times)."""
    return P("list", (item, most, unique))


def tuple_of(item: P) -> P:
    return P("tuple", (item,))


def set_of(item: P) -> P:
    return P("set", (item,))


def dict_of(value: P) -> P:
    return P("dict", (value,))


def L(item: P, most: int | None = None, unique: bool = False) -> P:  # noqa: N802  (fastcore's class is called L)
    """fastcore's ``L`` (a record whose state is just its items), holding items as ``list_of`` says."""
    return P("L", (item, most, unique))


def typ(*names: str) -> P:
    return P("type", names)


@dataclass(frozen=True)
class Class:
    """A class the learner may hold: why it is harmless as rebuilt here, and its attributes (closed world)."""

    reason: str
    attrs: dict[str, P]
    required: tuple[str, ...] = ()


MAX_INT = 2**31  # settings and counts; anything larger is no genuine learner's
MAX_COLUMNS = 100_000  # column names of one role (fastai works per name: each must be distinct)
MAX_STR = 1 << 16

# --- the functions fastai keeps, and where ------------------------------------------------------------
METRIC_FUNCTIONS = ("fastai.metrics.accuracy", "fastai.metrics.mae", "fastai.metrics.mse", "fastai.metrics._rmse",
                    "autogluon.tabular.models.fastainn.fastai_helpers.medae")
SKLEARN_METRICS = ("sklearn.metrics._classification.fbeta_score", "sklearn.metrics._classification.precision_score",
                   "sklearn.metrics._classification.recall_score", "sklearn.metrics._regression.r2_score")
FUNCTIONS: dict[str, str] = {
    **{name: "AvgMetric.func / AccumMetric.func: fastai calls it on predictions and targets (a pure metric)"
       for name in METRIC_FUNCTIONS},
    **{name: "AccumMetric.func: fastai calls it on accumulated arrays (a pure sklearn metric)" for name in SKLEARN_METRICS},
    "fastai.data.load._wif": "_FakeLoader.worker_init_fn: what fastai itself sets; only worker processes call it, and "
                             "the schema pins num_workers to 0",
    "fastai.optimizer.Adam": "Learner.opt_func: builds an optimizer from parameters (only when training)",
    "fastai.torch_core.trainable_params": "Learner.splitter: the model's trainable parameters",
    "builtins.print": "Learner.logger: writes a line to stdout",
}

# --- building blocks -----------------------------------------------------------------------------------
_HOOK_DICTS = ("_backward_hooks", "_backward_pre_hooks", "_forward_hooks", "_forward_hooks_always_called",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
               "_load_state_dict_post_hooks", "_load_state_dict_pre_hooks", "_state_dict_hooks",
               "_state_dict_pre_hooks")
_MODULE_BOOKKEEPING: dict[str, P] = {
    "training": BOOL,
    "_parameters": dict_of(either(PARAMETER, NONE)),
    "_buffers": dict_of(either(TENSOR, NONE)),
    "_non_persistent_buffers_set": set_of(STR),
    "_is_full_backward_hook": either(NONE, BOOL),
    **{name: EMPTY_ODICT for name in _HOOK_DICTS},  # torch calls every hook: genuine exports have none
}
_MODULE_REQUIRED = ("training", "_parameters", "_buffers", "_modules")


def module(reason: str, modules: P | None = None, **attrs: P) -> Class:
    """A torch Module: bookkeeping, sub-modules of the given classes, and its own settings."""
    return Class(reason, {**_MODULE_BOOKKEEPING, "_modules": dict_of(modules or NONE), **attrs}, _MODULE_REQUIRED)


LEARNER = "fastai.tabular.learner.TabularLearner"
PIPELINES = ("fasttransform.transform.Pipeline", "fastcore.transform.Pipeline")
CALLBACKS = ("fastai.callback.core.TrainEvalCallback", "fastai.callback.progress.ProgressCallback",
             "fastai.learner.Recorder", "fastai.learner.CastToTensor")
LOSSES = ("fastai.losses.BaseLoss", "fastai.losses.CrossEntropyLossFlat",
          "autogluon.tabular.models.fastainn.quantile_helpers.HuberPinballLoss")
TORCH_LOSSES = ("torch.nn.modules.loss.CrossEntropyLoss", "torch.nn.modules.loss.MSELoss")
METRICS = ("fastai.learner.AvgMetric", "fastai.metrics.AccumMetric")
TRANSFORMS = ("fastai.tabular.core.ReadTabBatch", "fastai.tabular.core.Categorify", "fastai.data.transforms.Categorize",
              "fastai.data.transforms.RegressionSetup")
LAYERS = ("torch.nn.modules.activation.ReLU", "torch.nn.modules.batchnorm.BatchNorm1d",
          "torch.nn.modules.dropout.Dropout", "torch.nn.modules.linear.Linear")
# fastcore's Pipeline names an attribute after each transform's class (snake case): fixed, known names only
PIPELINE_NAMES = {"read_tab_batch": "fastai.tabular.core.ReadTabBatch", "categorify": "fastai.tabular.core.Categorify",
                  "categorize": "fastai.data.transforms.Categorize",
                  "regression_setup": "fastai.data.transforms.RegressionSetup"}

COLUMNS = L(STR, MAX_COLUMNS, True)
_STORED_VALUE = either(ATOM, PATH, DEVICE, tuple_of(NUMBER), dict_of(rec("fastai.data.transforms.CategoryMap")),
                       rec(LEARNER, *CALLBACKS, *LOSSES, *TORCH_LOSSES, *METRICS, *TRANSFORMS, *PIPELINES,
                           "fastai.tabular.core.TabularPandas", "fastai.tabular.core.TabWeightedDL",
                           "fastai.data.transforms.CategoryMap", "fastcore.foundation.L"),
                       fn(*FUNCTIONS))
STORED_ARGS = dict_of(_STORED_VALUE)  # fastcore's store_attr bookkeeping: read by repr helpers, never called
_ANNOTATIONS = dict_of(typ("builtins.int", "builtins.float", "builtins.str", "builtins.tuple", "builtins.bool"))
_WRAPPER = {  # functools.update_wrapper copies these onto fastai's loss wrappers
    "__annotations__": _ANNOTATIONS, "__doc__": either(STR, NONE), "__module__": STR,
    "__wrapped__": rec(*TORCH_LOSSES), "__stored_args__": STORED_ARGS,
}
_TRANSFORM = {"__signature__": SIGNATURE, "__stored_args__": STORED_ARGS, "split_idx": either(NONE, INT),
              "order": INT, "init_enc": either(NONE, BOOL), "input_types": NONE}
_CALLBACK = {"learn": rec(LEARNER), "run": BOOL, "__stored_args__": STORED_ARGS}
TENSOR_TYPES = ("torch.Tensor", "fastai.torch_core.TensorBase")  # the tensor classes genuine files rebuild

CLASSES: dict[str, Class] = {
    LEARNER: Class("the learner; rebuilt as fastai's Learner.__setstate__ does (a __dict__ update and a new lock)", {
        "model": rec("fastai.tabular.model.TabularModel"),
        "dls": rec("fastai.tabular.data.TabularDataLoaders"),
        "loss_func": rec(*LOSSES),
        "opt_func": fn("fastai.optimizer.Adam"), "splitter": fn("fastai.torch_core.trainable_params"),
        "logger": fn("builtins.print"),
        "cbs": L(rec(*CALLBACKS), 16, True), "_metrics": L(rec(*METRICS), 16, True),
        "metrics": L(rec(*METRICS), 16, True),
        # add_cb names each callback after its class: exactly these names, each its own class
        "train_eval": rec("fastai.callback.core.TrainEvalCallback"), "recorder": rec("fastai.learner.Recorder"),
        "cast_to_tensor": rec("fastai.learner.CastToTensor"), "progress": rec("fastai.callback.progress.ProgressCallback"),
        "path": PATH, "model_dir": either(STR, PATH), "lr": NUMBER, "wd": either(NONE, NUMBER),
        "moms": tuple_of(NUMBER), "train_bn": BOOL, "wd_bn_bias": BOOL, "create_mbar": BOOL, "default_cbs": BOOL,
        "training": BOOL, "epoch": INT, "n_epoch": INT, "iter": INT, "n_iter": INT, "train_iter": INT,
        "pct_train": NUMBER, "dl": NONE, "opt": NONE, "pred": either(NONE, TENSOR), "loss": either(NONE, TENSOR),
        "loss_grad": either(NONE, TENSOR), "smooth_loss": either(NONE, TENSOR, NUMBER),
        "xb": tuple_of(NONE), "yb": tuple_of(NONE), "final_record": L(ATOM), "lock": NONE,
        "__stored_args__": STORED_ARGS,
    }, ("model", "dls", "loss_func")),
    # --- data --------------------------------------------------------------------------------------------
    "fastai.tabular.data.TabularDataLoaders": Class("the data loaders: settings and loaders", {
        "loaders": list_of(rec("fastai.tabular.core.TabWeightedDL"), 4, True), "path": PATH, "_device": either(DEVICE, NONE),
        "__stored_args__": STORED_ARGS,
    }, ("loaders",)),
    "fastai.tabular.core.TabWeightedDL": Class("a data loader's settings; AutoGluon predicts through test_dl, which "
                                               "copies them", {
        "dataset": rec("fastai.tabular.core.TabularPandas"), "fake_l": rec("fastai.data.load._FakeLoader"),
        **{hook: rec(*PIPELINES) for hook in ("after_item", "before_batch", "after_batch")},
        "bs": INT, "n": INT, "offs": lit(0), "num_workers": lit(1),  # fastai's own per-loader worker count
        "drop_last": BOOL, "shuffle": BOOL, "indexed": BOOL, "pin_memory": lit(False), "timeout": lit(0),
        "idxs": list_of(INT), "wgts": either(NDARRAY, NONE), "rng": RANDOM, "_device": either(DEVICE, NONE),
        "_n_inp": INT, "_types": P("types-map"), "__stored_args__": STORED_ARGS,
    }, ("dataset", "fake_l", "after_item", "before_batch", "after_batch")),
    "fastai.data.load._FakeLoader": Class("the torch DataLoader stand-in: no worker processes (num_workers 0), so "
                                          "worker_init_fn is never called", {
        "d": rec("fastai.tabular.core.TabWeightedDL"), "default": rec("fastai.tabular.core.TabWeightedDL"),
        "dataset": rec("fastai.data.load._FakeLoader"), "worker_init_fn": fn("fastai.data.load._wif"),
        "num_workers": lit(0), "persistent_workers": lit(False), "pin_memory": lit(False), "timeout": lit(0),
        "pin_memory_device": lit(""), "__stored_args__": STORED_ARGS,
    }, ("num_workers",)),
    "fastai.tabular.core.TabularPandas": Class("the training frame's column roles and preprocessing", {
        "items": DATAFRAME, "procs": rec(*PIPELINES), "cat_names": COLUMNS, "cont_names": COLUMNS, "y_names": COLUMNS,
        "dataloaders": bound("dataloaders"), "device": either(NONE, DEVICE), "split": INT,
        "__stored_args__": STORED_ARGS,
    }, ("items", "procs", "cat_names", "cont_names", "y_names")),
    **{pipeline: Class("a transform pipeline: a list of the transforms below", {
        "fs": L(rec(*TRANSFORMS), 16, True), "split_idx": either(NONE, INT), "default": NONE,
        **{attr: rec(cls) for attr, cls in PIPELINE_NAMES.items()},
    }, ("fs",)) for pipeline in PIPELINES},
    "fastai.tabular.core.ReadTabBatch": Class("turns a batch of rows into tensors", {
        **_TRANSFORM, "to": rec("fastai.tabular.core.TabularPandas")}),
    "fastai.tabular.core.Categorify": Class("maps categories to codes", {
        **_TRANSFORM, "classes": dict_of(rec("fastai.data.transforms.CategoryMap"))}),
    "fastai.data.transforms.Categorize": Class("maps labels to codes", {
        **_TRANSFORM, "vocab": rec("fastai.data.transforms.CategoryMap"), "add_na": BOOL, "sort": BOOL, "c": INT}),
    "fastai.data.transforms.RegressionSetup": Class("regression target setup", {**_TRANSFORM, "c": INT}),
    "fastai.data.transforms.CategoryMap": Class("category list and its index", {
        "items": L(ATOM), "o2i": O2I}, ("items", "o2i")),
    "fastcore.foundation.L": Class("a list; its items are checked where the L stands", {"items": P("any-list")},
                                   ("items",)),
    # --- callbacks and metrics ---------------------------------------------------------------------------------
    "fastai.callback.core.TrainEvalCallback": Class("sets training mode", dict(_CALLBACK)),
    "fastai.callback.progress.ProgressCallback": Class("progress bars while training", dict(_CALLBACK)),
    "fastai.learner.CastToTensor": Class("casts batches to tensors", dict(_CALLBACK)),
    "fastai.learner.Recorder": Class("training history", {
        **_CALLBACK, "add_time": BOOL, "train_metrics": BOOL, "valid_metrics": BOOL, "cancel_train": BOOL,
        "cancel_valid": BOOL, "hps": dict_of(list_of(NUMBER)), "log": L(ATOM), "metric_names": L(STR),
        "loss": rec("fastai.learner.AvgLoss"), "smooth_loss": rec("fastai.learner.AvgSmoothLoss"),
        "start_epoch": NUMBER, "lrs": list_of(NUMBER), "iters": list_of(INT), "losses": list_of(either(TENSOR, NUMBER)),
        "values": list_of(list_of(NUMBER)), "metrics": L(rec(*METRICS)),
    }),
    "fastai.learner.AvgLoss": Class("loss accumulator", {"total": either(NUMBER, TENSOR), "count": INT}),
    "fastai.learner.AvgSmoothLoss": Class("smoothed loss", {"beta": NUMBER, "count": INT, "val": either(TENSOR, NUMBER)}),
    "fastai.learner.AvgMetric": Class("metric accumulator", {
        "func": either(fn(*METRIC_FUNCTIONS), rec("autogluon.tabular.models.fastainn.quantile_helpers.HuberPinballLoss")),
        "total": either(NUMBER, TENSOR), "count": INT}, ("func",)),
    "fastai.metrics.AccumMetric": Class("sklearn metric accumulator", {
        "func": fn(*SKLEARN_METRICS, *METRIC_FUNCTIONS), "_name": STR, "__doc__": either(STR, NONE),
        "activation": lit("no", "sigmoid", "softmax", "binarysoftmax"),
        "dim_argmax": either(NONE, INT), "flatten": BOOL, "invert_args": BOOL, "to_np": BOOL,
        "thresh": either(NONE, NUMBER), "kwargs": dict_of(ATOM), "preds": list_of(TENSOR), "targs": list_of(TENSOR),
        "__stored_args__": STORED_ARGS,
    }, ("func",)),
    # --- losses ------------------------------------------------------------------------------------------------
    **{loss: module("fastai's loss wrapper around a torch loss (functools.update_wrapper copies its attributes)",
                    func=rec(*TORCH_LOSSES), axis=INT, flatten=BOOL, floatify=BOOL, is_2d=BOOL,
                    reduction=lit("mean", "sum", "none"), ignore_index=INT, label_smoothing=NUMBER,
                    weight=either(NONE, TENSOR), **_WRAPPER)
       for loss in ("fastai.losses.BaseLoss", "fastai.losses.CrossEntropyLossFlat")},
    "autogluon.tabular.models.fastainn.quantile_helpers.HuberPinballLoss": module(
        "AutoGluon's quantile loss (also its quantile metric)", alpha=NUMBER, quantile_levels=TENSOR),
    "torch.nn.modules.loss.CrossEntropyLoss": module("torch loss", ignore_index=INT, label_smoothing=NUMBER,
                                                     reduction=lit("mean", "sum", "none"), __annotations__=_ANNOTATIONS),
    "torch.nn.modules.loss.MSELoss": module("torch loss", reduction=lit("mean", "sum", "none"),
                                            __annotations__=_ANNOTATIONS),
    # --- the model ---------------------------------------------------------------------------------------------
    "fastai.tabular.model.TabularModel": module("fastai's tabular network", rec(
        "torch.nn.modules.container.ModuleList", "torch.nn.modules.dropout.Dropout",
        "torch.nn.modules.batchnorm.BatchNorm1d", "torch.nn.modules.container.Sequential"), n_emb=INT, n_cont=INT),
    "torch.nn.modules.container.ModuleList": module("the embeddings", rec("fastai.layers.Embedding")),
    "torch.nn.modules.container.Sequential": module("the layers", rec("fastai.layers.LinBnDrop", *LAYERS)),
    "fastai.layers.LinBnDrop": module("linear, batch norm, dropout, activation", rec(*LAYERS)),
    "fastai.layers.Embedding": module("an embedding table", num_embeddings=INT, embedding_dim=INT, padding_idx=NONE,
                                      max_norm=NONE, norm_type=NUMBER, scale_grad_by_freq=BOOL, sparse=BOOL),
    "torch.nn.modules.linear.Linear": module("a linear layer", in_features=INT, out_features=INT),
    "torch.nn.modules.batchnorm.BatchNorm1d": module("batch norm", num_features=INT, eps=NUMBER,
                                                     momentum=either(NONE, NUMBER), affine=BOOL,
                                                     track_running_stats=BOOL),
    "torch.nn.modules.dropout.Dropout": module("dropout", p=NUMBER, inplace=BOOL),
    "torch.nn.modules.activation.ReLU": module("activation", inplace=BOOL),
}

ROOT = rec(LEARNER)
# fastai's TabularModel passes one activation instance to every layer: stateless modules may sit in several places;
# any other module sits in exactly one (the same Linear listed 2,000 times ran 2,000 times per batch)
SHARED_MODULES = ("torch.nn.modules.activation.ReLU", "torch.nn.modules.dropout.Dropout")
MAX_SUBMODULES = 256
TYPES_MAP_KEYS = ("builtins.tuple", *TENSOR_TYPES)  # TabWeightedDL._types: batch structure -> tensor types
