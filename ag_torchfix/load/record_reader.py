"""Read a fastai internals archive into inert records without importing torch, numpy or pandas: the scanner's
way to the learner schema.

The secure load lets torch's weights-only unpickler read ``data.pkl`` with fastai's classes replaced by inert
records (``formats.records``) and checks what it returns against ``policy.learner_schema`` (``materialize.check``).
``ag-torchfix scan`` must give the same verdict without importing the libraries whose files it audits (importing
torch and fastai costs seconds).  This module does the same read with pickle's own unpickler, after the same
static pass (``policy.verdicts.check_internals``, which bounds every opcode, container and size first): every
name resolves to exactly what the secure load's scope gives torch (records, references, the shims, the few
standard-library values), except that torch's, numpy's and pandas' objects are stand-ins that carry what the
schema check reads (a tensor's geometry over its storage record, an array's dtype kind, a frame's class) and
nothing else.  ``check`` then runs ``materialize``'s checker over them (``OFFLINE``: the checker's view of the
stand-ins).

What only the loader sees: a library's own reconstructor refusing checked data (pandas rebuilding a frame whose
blocks disagree with its axes, torch reading a storage record) and the build itself.  Those refusals are typed
errors in the loader (nothing runs); the scanner, which never builds, reports such a file as the schema judges it.
A name this reader has no stand-in for raises ``Undecided``: the caller falls back to the secure load itself.
"""

from __future__ import annotations

import collections
import inspect
import io
import pathlib
import pickle
import random
import struct

from ..formats import archive
from ..formats.pickle_scan import normalise_global
from ..formats.records import Ref, record_type, ref
from ..policy import allowlist, learner_schema, shims

_ITEMSIZE = {"torch.FloatStorage": ("f4", 4), "torch.DoubleStorage": ("f8", 8), "torch.HalfStorage": ("f2", 2),
             "torch.BFloat16Storage": ("bf16", 2), "torch.LongStorage": ("i8", 8), "torch.IntStorage": ("i4", 4),
             "torch.ShortStorage": ("i2", 2), "torch.CharStorage": ("i1", 1), "torch.ByteStorage": ("u1", 1),
             "torch.BoolStorage": ("b1", 1)}


class Undecided(Exception):
    """The file names something this reader has no stand-in for: only the secure load itself can judge it."""


class Unbuildable(Exception):
    """A library would refuse to rebuild this value (what the loader reports as a failed rebuild)."""


# --- stand-ins ------------------------------------------------------------------------------------------------

class ClassStub:
    """A library class used as a value (``torch.Tensor`` in a batch type map, ``numpy.ndarray`` for _reconstruct)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<class {self.name}>"


class StorageStub:
    __slots__ = ("dtype", "itemsize", "numel", "key")

    def __init__(self, dtype: str, itemsize: int, numel: int, key: str):
        self.dtype, self.itemsize, self.numel, self.key = dtype, itemsize, numel, key


class TensorStub:
    """A tensor as torch would rebuild it: its class, its geometry over a storage, its plain attributes."""

    __slots__ = ("cls", "parameter", "storage", "offset", "size", "stride", "attrs")

    def __init__(self, storage: StorageStub, offset: int, size: tuple, stride: tuple):
        self.cls, self.parameter, self.attrs = "torch.Tensor", False, {}
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __repr__(self) -> str:
        return f"<{'parameter' if self.parameter else self.cls} {self.size}>"


class DeviceStub:
    __slots__ = ("spec",)

    def __init__(self, *spec):
        self.spec = spec


class DtypeStub:
    __slots__ = ("code", "state")

    def __init__(self, code, *_flags):
        if type(code) is not str:
            raise Unbuildable(f"a dtype from {type(code).__name__}")
        self.code, self.state = code, None

    def __setstate__(self, state):
        self.state = state

    @property
    def kind(self) -> str:
        return self.code[:1] if self.code[:1] in "biufcmMOSUV" else "?"


class NdarrayStub:
    __slots__ = ("dtype", "shape", "data")

    def __init__(self):
        self.dtype, self.shape, self.data = None, (0,), b""

    def __setstate__(self, state):
        if type(state) is not tuple or len(state) != 5 or type(state[2]) is not DtypeStub:
            raise Unbuildable("an ndarray state numpy would refuse")
        self.shape, self.dtype, self.data = state[1], state[2], state[4]


class ScalarStub:
    """A numpy scalar: its dtype kind and its value (numeric kinds and str decoded; equal and hashed like it)."""

    __slots__ = ("kind", "value")

    _FORMATS = {"b1": "?", "i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q", "u8": "Q",
                "f2": "e", "f4": "f", "f8": "d"}

    def __init__(self, dtype, raw=b""):
        if type(dtype) is not DtypeStub or type(raw) is not bytes:
            raise Unbuildable("a numpy scalar from something else than a dtype and bytes")
        self.kind = dtype.kind
        order = ">" if type(dtype.state) is tuple and len(dtype.state) > 1 and dtype.state[1] == ">" else "<"
        code = dtype.code.lstrip("<>|=")
        if self.kind == "U":
            self.value = raw.decode("utf-32-le" if order == "<" else "utf-32-be", "replace").rstrip("\x00")
        elif code in self._FORMATS and struct.calcsize(self._FORMATS[code]) == len(raw):
            self.value = struct.unpack(order + self._FORMATS[code], raw)[0]
        else:
            self.value = raw

    def __hash__(self):
        return hash(self.value)

    def __eq__(self, other):
        return self.value == (other.value if type(other) is ScalarStub else other)

    def __repr__(self) -> str:
        return f"<numpy {self.kind} {self.value!r}>"


class PandasStub:
    """A pandas object: its class and the arguments and state it was made with (pandas' reconstructors run no code
    from the file; what they would refuse, only the loader finds)."""

    __slots__ = ("name", "args", "state")

    def __init__(self, name: str, args=()):
        self.name, self.args, self.state = name, args, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _pandas_class(name: str):
    return type(f"Stub[{name}]", (PandasStub,), {"__slots__": (), "__new__": _pandas_new(name)})


def _pandas_new(name):
    def __new__(cls, *args):
        inst = object.__new__(cls)
        PandasStub.__init__(inst, name, args)
        return inst
    return __new__


# --- what each name resolves to (the secure load's scope, with stand-ins for the libraries) ------------------

def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if type(storage) is not StorageStub or type(storage_offset) is not int or type(size) is not tuple \
            or type(stride) is not tuple or len(size) != len(stride) \
            or not all(type(n) is int for n in (*size, *stride)):
        raise Unbuildable("a tensor rebuilt from arguments torch would refuse")
    return TensorStub(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None):
    if type(data) is not TensorStub:
        raise Unbuildable("a parameter around something else than a tensor")
    data.parameter = True
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if type(args) is not tuple:
        raise Unbuildable("a tensor subclass rebuilt from arguments torch would refuse")
    tensor = func(*args)
    if type(tensor) is not TensorStub or type(new_type) is not ClassStub:
        raise Unbuildable("a tensor subclass torch would refuse")
    tensor.cls = new_type.name
    if type(state) is tuple and len(state) == 2:  # torch's _set_obj_state: (dict state, slot state)
        state, slots = state
        if slots:
            raise Unbuildable("a tensor with slot state")
    if state is not None:
        if type(state) is not dict:
            raise Unbuildable("a tensor state that is not a dict")
        tensor.attrs.update(state)
    return tensor


def _reconstruct(cls, shape, code):
    if type(cls) is not ClassStub or cls.name != "numpy.ndarray":
        raise Unbuildable("_reconstruct of something else than an ndarray")
    return NdarrayStub()


def _scalar(dtype, raw=b""):
    return ScalarStub(dtype, raw)


def _unpickle_block(values, placement, ndim=None):
    return PandasStub("pandas.Block", (values, placement, ndim))


def _new_index(cls, d):
    if type(cls) is not ClassStub or not cls.name.startswith("pandas.core.indexes.") or type(d) is not dict:
        raise Unbuildable("_new_Index with arguments the shim refuses")
    return PandasStub(cls.name, (d,))


_STDLIB = {  # the standard library objects the secure load's scope resolves to themselves
    "builtins.int": int, "builtins.float": float, "builtins.str": str, "builtins.tuple": tuple,
    "builtins.bytes": bytes, "builtins.set": set, "builtins.slice": slice, "builtins.print": print,
    "_codecs.encode": __import__("codecs").encode, "collections.OrderedDict": collections.OrderedDict,
    "inspect.Signature": inspect.Signature, "inspect.Parameter": inspect.Parameter,
    "inspect._ParameterKind": inspect._ParameterKind, "inspect._empty": inspect._empty,
    "random.Random": random.Random, "pathlib.PosixPath": pathlib.PosixPath,
}

_LIBRARY = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.device": DeviceStub,
    "numpy._core.multiarray._reconstruct": _reconstruct,
    "numpy.core.multiarray._reconstruct": _reconstruct,
    "numpy._core.multiarray.scalar": _scalar,
    "numpy.core.multiarray.scalar": _scalar,
    "numpy.dtype": DtypeStub,
    "pandas._libs.internals._unpickle_block": _unpickle_block,
    "pandas.core.indexes.base._new_Index": _new_index,
    "pandas.core.frame.DataFrame": _pandas_class("pandas.core.frame.DataFrame"),
    "pandas.core.internals.managers.BlockManager": _pandas_class("pandas.core.internals.managers.BlockManager"),
}
_CLASS_VALUES = ("torch.Tensor", "numpy.ndarray", "fastai.torch_core.TensorBase", "pandas.core.indexes.base.Index",
                 "pandas.core.indexes.range.RangeIndex")


def resolve(name: str):
    """What ``name`` (any spelling) stands for in an offline read; ``Undecided`` when this reader has no stand-in."""
    own = allowlist.canonical(name)
    if own in learner_schema.CLASSES:
        return record_type(own)
    if own in learner_schema.FUNCTIONS:
        return ref(own)
    if own == "builtins.getattr":
        return shims.inert_getattr
    if own == "collections.defaultdict":
        return shims.pickled_defaultdict
    for table in (_STDLIB, _LIBRARY):
        if own in table:
            return table[own]
    if own in _CLASS_VALUES:
        return ClassStub(own)
    if own in _ITEMSIZE:
        return ClassStub(own)
    raise Undecided(own)


class _Reader(pickle.Unpickler):
    """pickle's unpickler with the offline scope (every name through ``find_class``, every storage through
    ``persistent_load``): runs only after the static pass accepted and bounded the stream."""

    def __init__(self, data: bytes, arch: archive.TorchArchive):
        super().__init__(io.BytesIO(data))
        self.archive = arch
        self.names: dict[tuple[str, str], object] = {}

    def find_class(self, module, name):
        key = (module, name)
        if key not in self.names:
            self.names[key] = resolve(normalise_global(module, name))  # Python 2 spellings, as torch maps them
        return self.names[key]

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage" and type(pid[1]) is ClassStub
                and pid[1].name in _ITEMSIZE and type(pid[2]) is str and type(pid[4]) is int and pid[4] >= 0):
            raise Unbuildable(f"a persistent id torch would refuse: {pid!r:.200}")
        dtype, itemsize = _ITEMSIZE[pid[1].name]
        record = self.archive.find(f"data/{pid[2]}")
        if record is None or record.size != pid[4] * itemsize:
            raise Unbuildable(f"storage {pid[2]!r}: no record of {pid[4] * itemsize} bytes in the archive")
        return StorageStub(dtype, itemsize, pid[4], pid[2])


def read(data: bytes, arch: archive.TorchArchive):
    """The records of ``data.pkl`` (already accepted by the static pass).  Raises ``Undecided`` or ``Unbuildable``."""
    try:
        return _Reader(data, arch).load()
    except (Undecided, Unbuildable):
        raise
    except (pickle.UnpicklingError, TypeError, ValueError, AttributeError, KeyError, IndexError, EOFError,
            struct.error, OverflowError, RecursionError, MemoryError) as exc:
        raise Unbuildable(f"{type(exc).__name__}: {str(exc)[:200]}") from None


# --- the checker's view of the stand-ins (materialize.check(world=OFFLINE)) -----------------------------------

class Offline:
    """``materialize``'s questions about library objects, answered for the stand-ins."""

    @staticmethod
    def numpy_scalar(value) -> bool:
        return type(value) is ScalarStub and value.kind in "biuf"

    @staticmethod
    def numpy_bool(value) -> bool:
        return type(value) is ScalarStub and value.kind == "b"

    @staticmethod
    def numpy_str(value) -> bool:
        return type(value) is ScalarStub and value.kind == "U"

    @staticmethod
    def is_tensor(value) -> bool:
        return type(value) is TensorStub

    @staticmethod
    def tensor_of_class(value) -> bool:
        return type(value) is TensorStub and (value.parameter or value.cls in learner_schema.TENSOR_TYPES)

    @staticmethod
    def is_parameter(value) -> bool:
        return type(value) is TensorStub and value.parameter

    @staticmethod
    def geometry(value):
        return (value.size, value.stride, value.offset, value.storage.numel * value.storage.itemsize,
                value.storage.itemsize, value.attrs)

    @staticmethod
    def attributes(value):
        return value.attrs

    @staticmethod
    def is_device(value) -> bool:
        return type(value) is DeviceStub

    @staticmethod
    def is_ndarray(value) -> bool:
        return type(value) is NdarrayStub

    @staticmethod
    def numeric_ndarray(value) -> bool:
        return type(value) is NdarrayStub and type(value.dtype) is DtypeStub and value.dtype.kind in "biuf"

    @staticmethod
    def is_dataframe(value) -> bool:
        return isinstance(value, PandasStub) and value.name == "pandas.core.frame.DataFrame"

    @staticmethod
    def is_class(value, name: str) -> bool:
        if name in _STDLIB:
            return value is _STDLIB[name]
        return type(value) is ClassStub and value.name == allowlist.canonical(name)

    @staticmethod
    def is_type(value) -> bool:
        return isinstance(value, type) or type(value) is ClassStub

    @staticmethod
    def is_reference(value) -> bool:
        return isinstance(value, Ref)


OFFLINE = Offline()
