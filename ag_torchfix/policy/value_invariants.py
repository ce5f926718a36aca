"""Strict mode's value checks: the arguments of every call, and the values libraries trust without checking.

The restricted unpickler decides which classes and functions a file may use; this module decides which *values*
they may be used with.  Each check is one row of ``allowlist.STRICT_CALLS`` (the argument tuples a library's own
``__reduce__`` writes) or ``allowlist.STRICT_INVARIANTS`` (an invariant the library assumes and does not check:
categorical codes inside their categories, a block's rows inside its frame, a tensor's view inside its storage,
a RangeIndex's length, dict keys whose hashes the file cannot make collide).  A value that breaks one is refused
while it is made, before pandas, numpy, torch or sklearn code (or AutoGluon's at predict) sees it.
"""

from __future__ import annotations

import collections
import functools
import inspect
import math
import pickle

from . import allowlist

Pattern = allowlist.Pattern


class ValueRefused(pickle.UnpicklingError):
    """A value the file supplies breaks an invariant its library relies on."""


# --- call arguments ------------------------------------------------------------------------------------

def call_problem(name: str | None, opname: str, args, resolve) -> str | None:
    """Why calling ``name`` (an allowlisted global, or a shim) with ``args`` is not a call genuine files make."""
    if opname in ("NEWOBJ", "NEWOBJ_EX"):
        empty = args == () if opname == "NEWOBJ" else (type(args) is tuple and len(args) == 2 and args[0] == ()
                                                         and args[1] == {})
        return None if empty else f"{opname} of {name} with arguments (genuine files construct with none, then BUILD)"
    row = allowlist.STRICT_CALLS.get(name or "")
    if row is None:
        return f"REDUCE of {name}, which genuine files never call with arguments (they construct it, then BUILD)"
    alternatives, _ = row
    if type(args) is not tuple or not any(len(alt) == len(args) and all(
            matches(value, pattern, resolve) for value, pattern in zip(args, alt)) for alt in alternatives):
        return f"{name} called with arguments no genuine file passes: {_show(args)}"
    check = _CALL_CHECKS.get(name)
    return check(args) if check is not None else None


def matches(value, pattern: Pattern, resolve) -> bool:
    """Whether a real value matches an ``allowlist`` argument pattern (``resolve`` maps a dotted name to the object
    strict mode resolved for it)."""
    kind = pattern.kind
    if kind == "str":
        return type(value) is str
    if kind == "int":
        return type(value) is int
    if kind == "bool":
        return type(value) is bool
    if kind == "none":
        return value is None
    if kind == "bytes":
        return type(value) is bytes
    if kind == "dict":
        return type(value) is dict
    if kind == "list":
        return type(value) is list
    if kind == "any":
        return not is_code(value)
    if kind == "global":
        return is_code(value)
    if kind == "empty-ordereddict":
        return type(value) is collections.OrderedDict and not value
    if kind == "lit":
        return any(type(value) is type(v) and value == v for v in pattern.values)
    if kind == "made":
        return bool(type_names(type(value)) & set(pattern.values))
    if kind == "name":
        return any(value is resolve(n) for n in pattern.values)
    if kind == "tuple-of":
        return type(value) is tuple and all(matches(v, pattern.values[0], resolve) for v in value)
    if kind == "either":
        return any(matches(value, p, resolve) for p in pattern.values)
    return False


def is_code(value) -> bool:
    """A class or something callable that pickle can name: what a callee could call."""
    return isinstance(value, type) or inspect.isroutine(value) or isinstance(value, functools.partial)


@functools.lru_cache(maxsize=None)
def type_names(cls: type) -> frozenset[str]:
    return frozenset(f"{k.__module__}.{k.__qualname__}" for k in cls.__mro__)


def _tree_args(args) -> str | None:
    n_features, n_classes, n_outputs = args
    import numpy

    if not (0 < n_outputs <= allowlist.MAX_TREE_OUTPUTS and 0 <= n_features < 2**31
            and n_classes.dtype.kind in "iu" and n_classes.shape == (n_outputs,)):
        return f"sklearn Tree({n_features}, n_classes of shape {n_classes.shape}, {n_outputs}) is not a tree's shape"
    if n_classes.size and (n_classes.min() < 1 or int(numpy.max(n_classes)) * n_outputs > allowlist.MAX_TREE_OUTPUTS):
        return f"sklearn Tree with {n_outputs} outputs of up to {int(numpy.max(n_classes))} classes (Tree.__cinit__ " \
               f"allocates their product, over {allowlist.MAX_TREE_OUTPUTS})"
    return None


def _scalar_args(args) -> str | None:
    dtype, data = args
    if dtype.hasobject or len(data) != dtype.itemsize:
        return f"a numpy scalar of {dtype} from {len(data)} bytes (numpy writes exactly its itemsize)"
    return None


def _block_args(args) -> str | None:
    values, placement, ndim = args
    if ndim not in (1, 2):
        return f"a pandas block of {ndim} dimensions"
    return None


def _tensor_args(args) -> str | None:
    storage, offset, size, stride = args[:4]
    return tensor_view_problem(len(storage), offset, size, stride)  # elements (bytes for an untyped storage)


def tensor_view_problem(numel_storage: int, offset: int, size: tuple, stride: tuple, max_dims: int = 64) -> str | None:
    """torch.save writes contiguous views inside their storage; torch's set_ trusts any size and stride.  Shared by
    the default loader's static pass (symbols) and strict mode (real storages)."""
    if len(size) != len(stride) or len(size) > max_dims:
        return f"size {size} and stride {stride} do not describe a tensor"
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        return f"a negative offset, size or stride ({offset}, {size}, {stride})"
    expected = 1
    for n, s in zip(reversed(size), reversed(stride)):
        if n > 1 and s != expected:
            return (f"stride {stride} is not the contiguous stride of size {size} (torch.save writes tensors as "
                    "contiguous views; a zero or overlapping stride repeats the storage)")
        expected *= n
    numel = math.prod(size)
    if numel and offset + numel > numel_storage:
        return f"elements {offset}..{offset + numel} lie outside its storage of {numel_storage} elements"
    return None


_CALL_CHECKS = {
    "sklearn.tree._tree.Tree": _tree_args,
    "numpy._core.multiarray.scalar": _scalar_args,
    "numpy.core.multiarray.scalar": _scalar_args,
    "pandas._libs.internals._unpickle_block": _block_args,
    "torch._utils._rebuild_tensor_v2": _tensor_args,
}


# --- values, once made ---------------------------------------------------------------------------------

def made_problem(obj) -> str | None:
    """Why an object just made (by a call or by BUILD) breaks an invariant its library trusts; None if fine."""
    check = _made_check(type(obj))
    return check(obj) if check is not None else None


def needs_build(obj) -> bool:
    """Whether an object made empty (NEWOBJ, or pandas' Cython reconstructor) is only valid once BUILD fills it:
    such an object left unbuilt is refused when the load ends (AutoGluon would read attributes it lacks)."""
    return _made_check(type(obj)) is not None


@functools.lru_cache(maxsize=None)
def _made_check(cls: type):
    names = type_names(cls)
    return next((check for name, check in _MADE_CHECKS if name in names), None)


def _categorical(cat) -> str | None:
    import numpy

    codes = getattr(cat, "_ndarray", None)
    categories = getattr(getattr(cat, "dtype", None), "categories", None)
    if not isinstance(codes, numpy.ndarray) or codes.ndim != 1 or codes.dtype.kind != "i":
        return "a pandas Categorical whose codes are not a one-dimensional integer array"
    if categories is None:
        return "a pandas Categorical without categories"
    if codes.size and (int(codes.min()) < -1 or int(codes.max()) >= len(categories)):
        return (f"a pandas Categorical with codes {int(codes.min())}..{int(codes.max())} for {len(categories)} "
                "categories (pandas indexes the categories by code without a bounds check)")
    return None


def _block(block) -> str | None:
    import numpy

    values = block.values
    locs = block.mgr_locs.as_array
    shape = getattr(values, "shape", None)
    if block.ndim == 2 and isinstance(values, numpy.ndarray):
        if values.ndim != 2 or shape[0] != len(locs):
            return f"a pandas block with {len(locs)} placements over values of shape {shape}"
    elif block.ndim == 2 and (len(locs) != 1 or len(shape or ()) != 1):
        return f"a pandas extension block with {len(locs)} placements over values of shape {shape}"
    if len(locs) and int(locs.min()) < 0:
        return "a pandas block placed at a negative column"
    return None


def _block_manager(mgr) -> str | None:
    import numpy

    if len(mgr.axes) != 2:
        return f"a pandas BlockManager with {len(mgr.axes)} axes"
    columns, rows = len(mgr.axes[0]), len(mgr.axes[1])
    placed = numpy.zeros(columns, dtype=numpy.int64)
    for block in mgr.blocks:
        problem = _block(block)
        if problem:
            return problem
        locs = block.mgr_locs.as_array
        if len(locs) and int(locs.max()) >= columns:
            return f"a pandas block placed at column {int(locs.max())} of a frame with {columns} columns"
        numpy.add.at(placed, locs, 1)
        if len(block.values) and block.shape[-1] != rows:
            return f"a pandas block of {block.shape[-1]} rows in a frame indexed by {rows}"
    if (placed != 1).any():
        return "pandas blocks that do not cover every column exactly once"
    return None


def _single_block_manager(mgr) -> str | None:
    axes, blocks = getattr(mgr, "axes", None), getattr(mgr, "blocks", None)
    if not (type(axes) is list and len(axes) == 1 and type(blocks) is tuple and len(blocks) == 1):
        return "a pandas SingleBlockManager that is not one block over one index"
    block = blocks[0]
    if len(block.values) != len(axes[0]) or getattr(block.values, "ndim", 1) != 1:
        return f"a pandas Series of {len(axes[0])} positions over {len(block.values)} values"
    if block.mgr_locs.indexer != slice(0, len(block.values), 1) and list(block.mgr_locs.as_array) != [0]:
        return f"a pandas Series block placed at {block.mgr_locs.indexer} (pandas writes slice(0, {len(block.values)}, 1))"
    return None


def _range_index(index) -> str | None:
    if len(index) > allowlist.MAX_RANGE_INDEX:
        return f"a pandas RangeIndex of {len(index)} positions (more than {allowlist.MAX_RANGE_INDEX})"
    return None


def _tensor(tensor) -> str | None:
    try:
        storage = tensor.untyped_storage()
        numel = storage.nbytes() // tensor.element_size()
    except (RuntimeError, ZeroDivisionError):
        return "a torch tensor without a readable storage"
    return tensor_view_problem(numel, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))


_MADE_CHECKS = (
    ("numpy.ndarray", lambda array: label_hash_problem(array)),  # defined below, with the other hash checks
    ("pandas.core.arrays.categorical.Categorical", _categorical),
    ("pandas.core.internals.managers.SingleBlockManager", _single_block_manager),
    ("pandas.core.internals.managers.BlockManager", _block_manager),
    ("pandas.core.internals.blocks.Block", _block),
    ("pandas.core.indexes.range.RangeIndex", _range_index),
    ("torch.Tensor", _tensor),
)
assert {n for n, _ in _MADE_CHECKS} <= allowlist.STRICT_INVARIANTS.keys()


# --- BUILD states of the pandas types whose __setstate__ sets what the state says ---------------------------

def state_problem(obj, state) -> str | None:
    """A DataFrame or Series state may only hold pandas' own keys; a Categorical's state is (dtype, codes, {})."""
    names = type_names(type(obj))
    for name, allowed in allowlist.STRICT_FRAME_STATE.items():
        if name in names:
            if type(state) is not dict:
                return f"a pandas {name.rsplit('.', 1)[-1]} state that is not a dict"
            extra = sorted(k for k in state if k not in allowed)
            if extra:
                return (f"a pandas {name.rsplit('.', 1)[-1]} state sets {extra[:5]} (NDFrame.__setstate__ would make "
                        "them attributes of the frame)")
            return None
    if "pandas.core.arrays.categorical.Categorical" in names:
        if not (type(state) is tuple and len(state) == 3 and state[2] == {} and type(state[2]) is dict):
            return "a pandas Categorical state that is not (dtype, codes, {}) (a dict there sets attributes)"
    return None


def index_problem(cls, d: dict) -> str | None:
    """``_new_Index(cls, d)``: only the arguments pandas' own Index.__reduce__ writes, with an array as data."""
    names = type_names(cls)
    for name, allowed in sorted(allowlist.STRICT_INDEX_ARGS.items(), key=lambda row: -len(row[0])):
        if name in names:  # the most specific class first (a RangeIndex is an Index)
            extra = sorted(str(k) for k in d if k not in allowed)
            if extra:
                return f"a pandas {cls.__name__} built with {extra[:5]} (pandas writes {sorted(allowed)})"
            if name.endswith("RangeIndex"):
                if not all(type(d.get(k, 0)) is int for k in ("start", "stop", "step")) or d.get("step", 1) == 0:
                    return "a pandas RangeIndex whose start, stop or step is not a non-zero int"
                length = len(range(d.get("start", 0), d.get("stop", 0), d.get("step", 1)))
                if length > allowlist.MAX_RANGE_INDEX:
                    return f"a pandas RangeIndex of {length} positions (more than {allowlist.MAX_RANGE_INDEX})"
                return None
            data = d.get("data")
            if not bool(type_names(type(data)) & {"numpy.ndarray", "pandas.core.arrays.base.ExtensionArray"}):
                return f"a pandas {cls.__name__} built from a {type(data).__name__}, not an array"
            return label_hash_problem(data)
    return f"a pandas {cls.__name__}, which strict mode does not rebuild"


# --- hash flooding ---------------------------------------------------------------------------------------

def label_hash_problem(data) -> str | None:
    """Object values that share a hash: pandas' hash table of them (built by get_loc, by Categorical's check that
    categories are unique, by isin) folds each Python hash to 32 bits (``h >> 32 ^ h``), and sklearn builds
    Python sets of categories at transform: values sharing either hash make both quadratic.  (Numeric labels
    hash with pandas' own function: not checked here.)"""
    import numpy

    if not isinstance(data, numpy.ndarray) or not data.dtype.hasobject or data.size <= allowlist.MAX_EQUAL_HASHES:
        return None
    hashes = [hash(v) for v in data.ravel() if type(v) is not str and _hashable(v)]
    for kind, keys in (("Python", hashes), ("pandas' 32-bit", (((h & _MASK64) >> 32 ^ h) & 0xFFFFFFFF for h in hashes))):
        worst = max(collections.Counter(keys).values(), default=0)
        if worst > allowlist.MAX_EQUAL_HASHES:
            return (f"{worst} values of one object array share a {kind} hash (a hash table of them, built by pandas "
                    "or sklearn at predict, is quadratic)")
    return None


_MASK64 = (1 << 64) - 1


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True



class HashBudget:
    """Counts, per container, the keys that share one hash (str keys excepted: their hash is randomised per
    process).  A dict or set built from keys that hash alike is quadratic to build and to look up."""

    def __init__(self):
        self._counts: dict[int, collections.Counter] = {}
        self._keep: list = []

    def once(self, keys, what: str) -> None:
        """Keys of a container made in one step (pickle's DICT and FROZENSET opcodes)."""
        self._count(collections.Counter(), keys, what)

    def add(self, container, keys) -> None:
        """Keys added to ``container`` (SETITEM(S), ADDITEMS): counted with the keys it got before."""
        counts = self._counts.get(id(container))
        if counts is None:
            if all(type(key) is str for key in keys):
                return
            counts = self._counts[id(container)] = collections.Counter()
            self._keep.append(container)  # keeps the id unique for this load
        self._count(counts, keys, type(container).__name__)

    @staticmethod
    def _count(counts: collections.Counter, keys, what: str) -> None:
        for key in keys:
            if type(key) is str:
                continue
            try:
                h = hash(key)
            except TypeError:
                continue  # pickle's own insertion raises the TypeError
            counts[h] += 1
            if counts[h] > allowlist.MAX_EQUAL_HASHES:
                raise ValueRefused(f"more than {allowlist.MAX_EQUAL_HASHES} keys of one {what} "
                                   "share a hash (inserting them is quadratic)")


def _show(args) -> str:
    text = repr(args) if not isinstance(args, (bytes, str)) else f"{type(args).__name__} of {len(args)}"
    return text if len(text) <= 160 else text[:157] + "..."
