"""Judge a scanned pickle against an allowlist: the one verdict the loaders and the scanner share.

Each global is *allowed* (in the allowlist or a shim), *dangerous* (in the catalogue of dangerous
callables, ``denylist``) or *unknown* (would need trust).  Constructs a loader refuses whatever the
names (BUILD/SETITEM on a class object, calling a value-only entry, opcodes torch's unpickler does not
execute, ...) are listed too.

For the fastai internals, which torch's weights-only unpickler loads, ``TorchRules`` rides along
with the scan and checks, before torch reads a byte, what torch's unpickler would do with the
allowlisted names.  It compensates for these behaviours of torch's ``_weights_only_unpickler``
(torch 2.6-2.14):

1. BUILD looks ``__setstate__`` up on the *instance* (``hasattr(inst, "__setstate__")``), and without
   one updates ``inst.__dict__`` with the state, or setattr's slot state: a first BUILD could plant
   ``__setstate__`` (or ``__class__``, ``__deepcopy__``...) for a second one to call.  Every BUILD's
   state must be a plain dict with plain string keys and no dunder name (``allowlist.DUNDER_STATE``
   lists the few genuine ones with the values they must hold), no slot state, at most one BUILD per
   object, and only on objects whose type the scan can tell is a CONSTRUCT entry.
2. REDUCE calls anything in the allowed set with any arguments, including torch's own defaults:
   ``_rebuild_from_type_v2(func, ...)`` calls ``func`` whatever it is, ``bytearray(2**31)`` allocates
   2 GiB, ``_rebuild_tensor_v2`` stores its ``backward_hooks`` argument.  Every call must match the
   argument patterns of its entry (``allowlist.Entry.args``), NEWOBJ takes no arguments, and torch
   defaults that exports never use are refused (only the ``torch_default`` entries are accepted).
3. numpy's ``dtype.__setstate__`` trusts the flags and fields it is given, and ``ndarray.__setstate__``
   trusts an object array's list length: both crash the interpreter (forged object pointers, reads
   past the list).  dtype states must be exactly what numpy writes for the type code, and array
   data must fill the shape (``allowlist.SEQUENCE_STATE``).
4. A persistent id names a storage record and an element count that torch multiplies into a byte
   size without comparing it to the record: the record must exist, in the archive the scan read,
   with exactly that size.
5. SETITEM(S) on torch < 2.10 calls ``__setitem__`` of any allowed type: targets must be dicts,
   OrderedDicts or the defaultdict shim's dicts.
6. Its reading of the zip archive differs from Python's (``archive`` handles that), and it ignores
   anything after STOP (refused here).
7. It builds real dicts with the file's keys and runs every opcode it is given: keys whose hashes the file
   chooses (ints that are multiples of 2**61-1, numpy int64 scalars alike) make a dict quadratic, a tuple
   key nested 400k deep crashes CPython's recursive hash, and 185M NONE pushes fill 2 GiB.  Keys must be
   what genuine files hold (``TorchRules.key_problem``), every opcode and the nesting are bounded
   (``TORCH_LIMITS``), and a container checked with a call or a BUILD may not change afterwards.
8. ``_rebuild_tensor_v2`` trusts size, stride and offset: a (5e6, 36) weight with strides (0, 0) over a
   tiny storage made 2.6 GiB from a 137 KB file.  A tensor must be what torch.save writes: a contiguous
   view inside its storage (``_tensor_view_problem``).
"""

from __future__ import annotations

import dataclasses

import functools
import math
import types
from dataclasses import dataclass, field
from typing import BinaryIO

from . import allowlist, denylist
from ..formats import archive, pickle_scan
from .allowlist import CALL, CONSTRUCT, REFERENCE, Pattern
from ..formats.pickle_scan import NUMBER, Global, Key, LongBytes, LongStr, Obj, SSet, is_dunder

ALLOWED, UNKNOWN, DANGEROUS = "allowed", "unknown", "dangerous"

MAX_IN_MEMORY = 1 << 30  # internals files up to this size are read once into memory: the check and torch see the same bytes

# A fastai internals pickle is a few thousand opcodes; these bounds leave room for models a hundred
# times bigger and keep torch's unpickler (whose objects weigh more than the scan's) far from 512 MiB.
# Measured on every genuine internals file at hand, 27 of them: binary, multiclass, regression, quantile, bagged and
# refit predictors of AutoGluon 1.6 / fastai 2.8 / torch 2.13, and the golden writers' files (AutoGluon 1.1-1.5,
# fastai 2.7.18-2.8.12, torch 2.6-2.14, numpy 1.26, pandas 2.2/2.3, Python 3.10-3.13, a GPU-trained file): at most
# 7,038 opcodes, 635 calls, 1,040 objects, containers nested 3 deep (objects 24 deep).  opcodes 750,000 is ~107x the
# largest; torch's unpickler then holds at most 750k pushes (measured ~8 bytes per NONE: 6 MB; 750k empty dicts:
# ~60 MB).  Containers nested 100 deep is ~33x the genuine depth and far below what CPython's recursive tuple hash
# survives (it crashed at 200k).
TORCH_LIMITS = pickle_scan.Limits(objects=1_000_000, memo=500_000, depth=1_000, calls=50_000, opcodes=750_000,
                                  nesting=100)
# Strict mode's files (AutoGluon's own pickles) may be larger than the fastai internals (a forest, cached data):
# the default bounds, with the internals' nesting bound (genuine files nest under 50; code that later walks or
# deep-copies what the file nests recurses once per level).  Calls are checked at run time (STRICT_CALLS).
STRICT_LIMITS = dataclasses.replace(pickle_scan.DEFAULT_LIMITS, nesting=TORCH_LIMITS.nesting)
# CPython hashes an int k below the modulus (sys.hash_info.modulus) as k itself: such keys have distinct hashes.
HASH_MODULUS = (1 << 61) - 1
# Elements of one tensor (genuine: at most 20,000).  A view lies inside its storage, whose record size is checked
# against the archive, so this only bounds what one declared shape may claim (1 GiB of float32).
MAX_TENSOR_ELEMENTS = 1 << 28
MAX_TENSOR_DIMS = 64
# The pickle record and the payload bytes torch copies out of its strings (``_codecs.encode``, array data).  Genuine:
# a data.pkl of at most 38,798 bytes, at most 451 bytes of copies (the 27 genuine files above).  With these, torch's
# unpickler holds at most the record, its strings and the copies (~192 MiB) whatever the file, next to the 750k
# pushes above.
MAX_INTERNALS_PICKLE = 64 << 20
MAX_COPIED = 64 << 20


@dataclass(frozen=True, eq=False)
class Profile:
    """An allowlist and how the loader that enforces it behaves."""

    name: str
    entries: dict[str, allowlist.Entry]
    shims: dict[str, str]  # name -> why the shim is narrow
    torch_opcodes_only: bool = True  # torch's weights-only unpickler executes a subset of opcodes
    check_calls: bool = True  # argument patterns and BUILD states are checked statically (TorchRules)
    limits: pickle_scan.Limits = TORCH_LIMITS


@dataclass
class Judgement:
    globals: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (status, reason)
    constructs: list[str] = field(default_factory=list)
    error: str | None = None  # the stream is unreadable past some point (findings before it are kept)

    def names(self, status: str) -> list[str]:
        return sorted(n for n, (s, _) in self.globals.items() if s == status)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.constructs and all(s == ALLOWED for s, _ in self.globals.values())

    @property
    def dangerous(self) -> bool:
        return any(s == DANGEROUS for s, _ in self.globals.values())

    def disallowed_labels(self) -> list[str]:
        """'name' or 'name (dangerous: why)' for every global that is not allowed."""
        return [f"{n} (dangerous: {r})" if s == DANGEROUS else n
                for n, (s, r) in sorted(self.globals.items()) if s != ALLOWED]


@functools.lru_cache(maxsize=1)
def fastai_internals() -> Profile:
    """The profile of AutoGluon's ``model-internals.pkl``: loaded by torch's weights-only unpickler."""
    return Profile("fastai-internals", {e.name: e for e in allowlist.FASTAI_INTERNALS}, allowlist.SHIMS)


@functools.lru_cache(maxsize=1)
def strict() -> Profile:
    """The profile of AutoGluon's own pickles in strict mode (checked at run time by ``StrictUnpickler``)."""
    return Profile("strict", {e.name: e for e in allowlist.STRICT}, allowlist.STRICT_SHIMS,
                   torch_opcodes_only=False, check_calls=False, limits=STRICT_LIMITS)


def judge(scan: pickle_scan.ScanResult, profile: Profile, rules: TorchRules | None = None) -> Judgement:
    verdict = Judgement(constructs=[str(p) for p in scan.problems], error=scan.error)
    if rules is not None:
        verdict.constructs.extend(str(p) for p in rules.problems)
    if profile.torch_opcodes_only:
        unsupported = scan.unsupported_by_torch()
        if unsupported:
            verdict.constructs.append("opcodes torch's weights-only unpickler does not execute: " + ", ".join(unsupported))
    for name, uses in sorted(scan.globals.items()):
        own = allowlist.canonical(name)
        entry = profile.entries.get(own)
        spelled = "" if own == name else f" (spelled {name}: {allowlist.ALIASES[name][1]})"
        if own in profile.shims:
            verdict.globals[name] = (ALLOWED, "served by a narrow shim: " + profile.shims[own] + spelled)
        elif entry is not None:
            verdict.globals[name] = (ALLOWED, entry.reason + spelled)
            if entry.use == REFERENCE and uses - {pickle_scan.REFERENCED}:
                verdict.constructs.append(f"{name} is allowlisted as a value only, but the file calls it")
            elif entry.use == CALL and pickle_scan.CONSTRUCTED in uses:
                verdict.constructs.append(f"{name} is a function, but the file constructs it (NEWOBJ)")
        else:
            danger = denylist.danger(name)
            verdict.globals[name] = (DANGEROUS, danger) if danger else (UNKNOWN, "not in the allowlist")
    return verdict


# --- the fastai internals: one archive, one reading, checked before torch sees it ---------------------

@dataclass
class InternalsCheck:
    archive: archive.TorchArchive
    scan: pickle_scan.ScanResult
    judgement: Judgement
    data: bytes = b""  # the data.pkl that was judged: later steps read these bytes, not the file again


class Unreadable(Exception):
    """The file is not a torch archive this package reads (the reason is for the user)."""


def check_internals(stream: BinaryIO, profile: Profile | None = None,
                    payloads: pickle_scan.Payloads | None = None) -> InternalsCheck:
    """Read a torch zip archive's structure and its ``data.pkl`` exactly once and judge it: what the
    secure loader and ``ag-torchfix scan`` both do (the scanner's ``payloads`` search for nested pickles rides
    along in the same pass).  Raises ``Unreadable``."""
    profile = profile or fastai_internals()
    try:
        arch = archive.open_archive(stream)
        if arch.find("constants.pkl") is not None:
            raise Unreadable("it is a TorchScript archive, not a torch.save archive")
        record = arch.find("data.pkl")
        if record is None:
            raise Unreadable("it is a zip archive without a data.pkl record, not a torch.save archive")
        data = archive.read_record(stream, arch, record, limit=min(archive.MAX_PICKLE, MAX_INTERNALS_PICKLE))
    except archive.ArchiveError as exc:
        raise Unreadable(f"it is not an archive torch would read the same way: {exc}") from None
    rules = TorchRules(profile, arch) if profile.check_calls else None
    result = pickle_scan.scan(data, rules=rules, limits=profile.limits, payloads=payloads)
    if result.error is None and result.end != len(data):
        result.problem("trailing-data", f"{len(data) - result.end} bytes after the pickle's STOP opcode "
                       "(torch ignores them; genuine files have none)", result.end)
    return InternalsCheck(arch, result, judge(result, profile, rules), data)


# --- TorchRules: what torch's unpickler would do, checked on symbols -----------------------------------

class TorchRules:
    """Scan-time checks of calls, BUILD states, SETITEM targets and persistent ids (see the module doc)."""

    def __init__(self, profile: Profile, arch: archive.TorchArchive | None = None):
        self.entries = profile.entries
        self.calls = _call_table(profile)
        self.archive = arch
        self.problems: list[pickle_scan.Problem] = []
        self.copied = 0  # bytes the unpickler copies out of strings the file may reuse (MAX_COPIED)

    def _problem(self, kind: str, detail: str, offset: int) -> None:
        if len(self.problems) < 100:
            self.problems.append(pickle_scan.Problem(kind, detail, offset))

    def call(self, opname: str, func, args, obj: Obj, offset: int) -> None:
        if type(func) is not Global:
            return  # the scan already reports calling a computed object
        own = allowlist.canonical(func.name)
        row = self.calls.get(own)
        if row is None:
            return  # an unknown global, or a value-only entry called: judge() reports both
        use, match, returns, empty_ok = row
        if args == () and empty_ok and opname == "REDUCE":  # the commonest call: OrderedDict(), Random(), bytes()
            obj.type = own if use == CONSTRUCT else returns
            return
        if use is None:  # a shim: it checks its own arguments at run time, and the scan checks them too
            rule = _SHIM_CALLS.get(own)
            made = rule(args) if rule is not None else _result_type(returns, args)
            if made is None:
                self._problem("call-arguments", f"{func.name} called with arguments no genuine file passes: "
                              f"{_show(args)}", offset)
            obj.type = made
            return
        if type(args) is tuple:
            for arg in args:  # checked now: the file may not change them later (a memoized OrderedDict of hooks)
                if type(arg) is Obj:
                    arg.passed = True
        if opname == "NEWOBJ":
            if use != CONSTRUCT or args != ():
                self._problem("call-arguments", f"NEWOBJ of {func.name} with arguments (genuine files construct "
                              "with none, then BUILD)", offset)
            obj.type = own
            return
        if opname != "REDUCE":
            return  # INST/OBJ/NEWOBJ_EX: torch's unpickler lacks them (reported as opcodes)
        if not match(args):
            self._problem("call-arguments", f"{func.name} called with arguments no genuine file passes: "
                          f"{_show(args)}", offset)
        else:
            view = (args if own == "torch._utils._rebuild_tensor_v2" else
                    args[2] if own == "torch._tensor._rebuild_from_type_v2" else None)
            problem = _tensor_view_problem(view) if view is not None else None
            if problem:
                self._problem("tensor-view", f"{func.name}: {problem}", offset)
            if own == "_codecs.encode":
                self._copy(_str_size(args[0]), offset)
        obj.type = own if use == CONSTRUCT else _result_type(returns, args)

    def _copy(self, size: int, offset: int) -> None:
        """Count a copy the unpickler makes of a payload: one memoized string encoded again and again (each
        ``_codecs.encode`` makes new bytes) would multiply the file's size without a single new opcode."""
        before = self.copied
        self.copied += size
        if before <= MAX_COPIED < self.copied:
            self._problem("copies", f"the file makes the unpickler copy more than {MAX_COPIED} bytes out of its "
                          "strings (genuine files copy a few kilobytes)", offset)

    def key_problem(self, key) -> str | None:
        """Why a dict key (not a plain str) is not one genuine fastai internals hold, or None.  Genuine files hold
        str keys, small ints (fastai's index maps), a class (fastcore's type dispatch) and, in a multiclass
        label vocabulary, numpy scalars.  Whatever the key, its hash must not be the file's choice."""
        t = type(key)
        if t is bool or key is None or t is Global:  # a class or function hashes by identity
            return None
        if t is int:
            return None if -HASH_MODULUS < key < HASH_MODULUS else (
                "an int past 2**61-1, whose hash the file chooses (keys hashing alike make the dict quadratic)")
        if t is Obj and key.type == "numpy scalar":
            return _scalar_key_problem(key)
        if key is NUMBER:
            return "a float or an int past 32 bits (genuine files have none; their hashes are the file's choice)"
        if type(key) is LongStr:
            return None  # a str: Python's string hash is randomised per process
        return "genuine fastai files key their dicts by str, small ints, bools, None, classes and numpy scalars only"

    def setitems(self, target: Obj, offset: int) -> None:
        if target.passed:
            self._problem("setitem-target", f"SETITEM(S) on a {target.type or 'computed object'} after it was passed "
                          "to a call (its check is past)", offset)
        elif target.type not in ("collections.OrderedDict", "collections.defaultdict"):
            self._problem("setitem-target", f"SETITEM(S) on a {target.type or 'computed object'} (only dicts, "
                          "OrderedDicts and the defaultdict shim's dicts)", offset)

    def build(self, inst: Obj, state, offset: int) -> None:
        kind = inst.type
        entry = self.entries.get(kind) if kind else None
        if entry is None or entry.use != CONSTRUCT or kind in allowlist.NEVER_BUILT:
            self._problem("build-target", f"BUILD on a {kind or 'object of unknown type'}, which is not allowlisted "
                          "to be built", offset)
            return
        if inst.built > 1 or inst.passed:
            self._problem("build-twice", f"BUILD of a {kind} after it was built or passed to a call (genuine files "
                          "build an object once, before using it)", offset)
            return
        if kind in allowlist.SEQUENCE_STATE:
            problem = _SEQUENCE_RULES[kind](inst, state)
            if kind == "numpy.ndarray" and type(state) is tuple and len(state) == 5:
                self._copy(_bytes_size(state[4]), offset)
        else:
            problem = state_problem(state, slots=False) or _shadowing_problem(kind, state)
        if problem:
            self._problem("build-state", f"BUILD of a {kind}: {problem}", offset)

    def persistent(self, pid, offset: int):
        storage = Obj(None, pid, offset)
        storage.type = "storage"
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage" and type(pid[1]) is Global
                and type(pid[2]) is str and type(pid[3]) is str and type(pid[4]) is int and pid[4] >= 0):
            self._problem("persistent-id", f"persistent id {_show(pid)} is not ('storage', type, key, location, numel)",
                          offset)
            return storage
        itemsize = allowlist.STORAGE_ITEMSIZE.get(pid[1].name.removeprefix("torch."))
        if itemsize is None or not pid[1].name.startswith("torch."):
            self._problem("persistent-id", f"persistent id names {pid[1].name}, not a torch storage type", offset)
        elif self.archive is not None:
            record = self.archive.find(f"data/{pid[2]}") if pid[2].isalnum() else None
            if record is None:
                self._problem("persistent-id", f"storage record data/{pid[2]!r} is not in the archive", offset)
            elif record.size != pid[4] * itemsize:
                self._problem("persistent-id", f"storage data/{pid[2]} declares {pid[4]} x {itemsize} bytes but its "
                              f"record holds {record.size} (torch would read past it)", offset)
        return storage


@functools.lru_cache(maxsize=4)
def _call_table(profile: Profile) -> dict[str, tuple]:
    """name -> (use, argument matcher, result type, no-argument call allowed) for every callable entry and shim
    (None use: a shim)."""
    table = {name: (None, None, returns, False) for name, returns in allowlist.SHIM_RETURNS.items()
             if name in profile.shims}
    for name, entry in profile.entries.items():
        if entry.use != REFERENCE:
            empty_ok = entry.args is not None and () in entry.args and not (entry.returns or "").startswith("arg")
            table[name] = (entry.use, _args_matcher(name), entry.returns, empty_ok)
    return table


def _shadowing_problem(kind: str, state) -> str | None:
    """A state key that names a method of the class puts a value where code calls the method: fastai calls
    ``module.forward`` on every prediction (a file setting ``forward = _wif`` made it call that).  fastai's own
    overrides are listed in ``allowlist.SHADOWING_STATE``.  Needs the class itself (resolved once per key)."""
    mapping = state[0] if type(state) is tuple and len(state) == 2 else state
    if type(mapping) is not dict:
        return None
    for key, value in mapping.items():
        if type(key) is str and _shadows(kind, key):
            rule = allowlist.SHADOWING_STATE.get(key)
            if rule is None or not _matcher(rule[0])(value):
                return f"it sets {key}, which shadows a method of the class (code would call the file's value)"
    return None


# fastai adds methods to its classes with ``@patch`` from other modules (``Learner.fit_one_cycle`` from
# fastai.callback.schedule, ``TabularLearner.to_fp16`` ...); importing a class's own module does not add them.
# AutoGluon imports fastai.tabular.all before it loads internals, so the rule judges the classes as the loading
# process sees them, in the scanner too (which otherwise passed a state key shadowing ``fit_one_cycle``).
_CLASS_CONTEXT = ("fastai.tabular.all",)


@functools.lru_cache(maxsize=4096)
def _shadows(kind: str, key: str) -> bool:
    """Whether ``key`` names a method of allowlisted class ``kind``: from the measured table of this stack
    (``stack_tables``: nothing imported), else from the class itself, imported as AutoGluon's process sees it."""
    from . import shims, stack_tables

    known = stack_tables.methods(kind)
    if known is not None:
        return key in known
    _import_class_context()
    try:
        cls = shims.resolve(kind)
    except LookupError:
        return False  # the loader refuses names it cannot import anyway
    import inspect

    return is_method(inspect.getattr_static(cls, key, None))


@functools.lru_cache(maxsize=1)
def _import_class_context() -> None:
    for module in _CLASS_CONTEXT:
        try:
            __import__(module)
        except ImportError:
            pass  # no fastai: the loader refuses its names anyway


def state_problem(state, *, slots: bool | frozenset = False) -> str | None:
    """Why a BUILD state (or torch's _set_obj_state argument) could plant something, or None.

    ``slots``: False to refuse any slot state, or the names of the class's real ``__slots__``."""
    if state is None:
        return None
    if type(state) is tuple and len(state) == 2:
        state, slot_state = state
        if slot_state is not None and slot_state != {}:
            if slots is False:
                return "it has a slot state (genuine files have none)"
            problem = _mapping_problem(slot_state, "slot state")
            if problem:
                return problem
            extra = [k for k in slot_state if k not in slots]
            if extra:
                return f"its slot state sets {', '.join(map(str, extra[:5]))}, which are not __slots__ of the class"
        if state is None:
            return None
    return _mapping_problem(state, "state")


def _mapping_problem(state, what: str) -> str | None:
    if type(state) is not dict:
        return f"its {what} is {_show(state)}, not a plain dict"
    for key, value in state.items():
        t = type(key)
        if t is Key:
            key = key.value
            t = type(key)
        if t is not str:
            if t is Obj or t is Global:
                return f"its {what} has a computed key ({_show(key)}), which could be a string subclass"
            continue
        if key[:2] == "__" and is_dunder(key):
            rule = allowlist.DUNDER_STATE.get(key)
            if rule is None:
                return f"its {what} sets {key}, a dunder name (it would shadow the class's own)"
            if not _matcher(rule[0])(value):
                return f"its {what} sets {key} to {_show(value)}, not {rule[0]!r}"
    return None


def is_method(attribute) -> bool:
    """A non-data descriptor (a function, a method of a C type ...): an instance attribute of the same name wins
    over it.  Properties and slots are data descriptors: they win over the instance, nothing is shadowed."""
    return isinstance(attribute, (types.FunctionType, classmethod, staticmethod, types.MethodType,
                                  types.MethodDescriptorType, types.WrapperDescriptorType, types.BuiltinFunctionType))


def _ndarray_rule(inst: Obj, state) -> str | None:
    if not (type(state) is tuple and len(state) == 5 and state[0] == 1 and type(state[1]) is tuple
            and all(type(n) is int and n >= 0 for n in state[1]) and type(state[3]) is bool):
        return f"its state {_show(state)} is not (1, shape, dtype, fortran, data)"
    dtype, data = state[2], state[4]
    if not (type(dtype) is Obj and dtype.type == "numpy.dtype" and type(dtype.args) is tuple and dtype.args):
        return "its dtype is not a dtype the file built"
    if dtype.args[0] == "O8":
        if type(data) is not list or len(data) != math.prod(state[1]):
            return (f"an object array of shape {state[1]} needs a list of exactly {math.prod(state[1])} items, "
                    f"not {_show(data)} (numpy reads past a shorter list)")
    elif not _matcher(allowlist.BYTES)(data):
        return "its data is not bytes"
    return None


def _dtype_rule(inst: Obj, state) -> str | None:
    code = inst.args[0] if type(inst.args) is tuple and inst.args else None
    expected = allowlist.DTYPE_STATES.get(code)
    if expected is None:
        return f"type code {_show(code)} is not one genuine files use"
    byteorders, elsize, alignment, flags = expected
    if not (type(state) is tuple and len(state) == 8 and state[0] == 3 and state[1] in tuple(byteorders)
            and state[2:5] == (None, None, None) and state[5:] == (elsize, alignment, flags)):
        return (f"its state {_show(state)} is not what numpy writes for {code} "
                f"(3, {byteorders!r}, None, None, None, {elsize}, {alignment}, {flags})")
    return None


def _random_rule(inst: Obj, state) -> str | None:
    if not (type(state) is tuple and len(state) == 3 and type(state[0]) is int and type(state[1]) is tuple):
        return f"its state {_show(state)} is not (version, state, gauss)"
    return None


def _tensor_view_problem(args) -> str | None:
    """``_rebuild_tensor_v2(storage, offset, size, stride, ...)`` as torch.save writes it: a contiguous view lying
    inside its storage (the element count the persistent id declares, itself checked against the archive record).
    torch trusts all four: strides of 0 over a tiny storage made a 2.6 GiB tensor from a 137 KB file."""
    storage, offset, size, stride = args[:4]
    pid = storage.args if type(storage) is Obj else None
    if not (type(pid) is tuple and len(pid) == 5 and type(pid[4]) is int):
        return None  # the persistent id itself is refused (TorchRules.persistent)
    if len(size) <= MAX_TENSOR_DIMS and math.prod(size) > MAX_TENSOR_ELEMENTS:
        return f"it declares {math.prod(size)} elements (more than {MAX_TENSOR_ELEMENTS})"
    from .value_invariants import tensor_view_problem  # here: the scanner's start-up does not need it

    return tensor_view_problem(pid[4], offset, size, stride, max_dims=MAX_TENSOR_DIMS)


_INT_CODES = frozenset("iu")


def _scalar_key_problem(key: Obj) -> str | None:
    """A numpy scalar as a dict key (a multiclass label vocabulary): numbers only, and 8-byte ints below 2**61-1
    (numpy hashes an integer scalar as the int: multiples of 2**61-1 would all collide)."""
    args = key.args
    dtype = args[0] if type(args) is tuple and len(args) == 2 else None
    code = dtype.args[0] if type(dtype) is Obj and type(dtype.args) is tuple and dtype.args else None
    if type(code) is not str or not code or code[0] not in "iufb":
        return f"a numpy scalar of dtype {_show(code)} (genuine label vocabularies hold numbers)"
    if code[0] not in _INT_CODES or code[1:] != "8":
        return None  # at most 32 bits (distinct hashes), or a float (only a few dozen finite floats share a hash)
    raw = _bytes_value(args[1])
    state = dtype.state
    order = "big" if type(state) is tuple and len(state) > 1 and state[1] == ">" else "little"
    if raw is None or len(raw) != 8:
        return "a numpy int64 scalar whose value the scan cannot read"
    value = int.from_bytes(raw, order, signed=code[0] == "i")
    if not -HASH_MODULUS < value < HASH_MODULUS:
        return f"a numpy integer scalar past 2**61-1 ({value}), whose hash the file chooses"
    return None


def _str_size(value) -> int:
    return value.size if type(value) is LongStr or type(value) is LongBytes else len(value) \
        if type(value) in (str, bytes) else 0


def _bytes_size(value) -> int:
    """The size of what a bytes symbol stands for (a literal, a long payload, or encode(text, 'latin1'))."""
    if type(value) is Obj and value.type == "builtins.bytes" and type(value.args) is tuple and value.args:
        return _str_size(value.args[0])
    return _str_size(value)


def _bytes_value(value) -> bytes | None:
    """The bytes a symbol stands for, when the scan kept them (a literal, or protocol 2's encode(text, 'latin1'))."""
    if type(value) is bytes:
        return value
    if type(value) is Obj and value.type == "builtins.bytes" and type(value.args) is tuple and len(value.args) == 2 \
            and type(value.args[0]) is str and value.args[1] == "latin1":
        try:
            return value.args[0].encode("latin1")
        except UnicodeEncodeError:
            return None
    return None


_SEQUENCE_RULES = {"numpy.ndarray": _ndarray_rule, "numpy.dtype": _dtype_rule, "random.Random": _random_rule}
assert _SEQUENCE_RULES.keys() == allowlist.SEQUENCE_STATE.keys()


def _result_type(returns: str | None, args) -> str | None:
    if returns and returns.startswith("arg"):
        index = int(returns[3:])
        value = args[index] if type(args) is tuple and len(args) > index else None
        return allowlist.canonical(value.name) if type(value) is Global else None
    return returns


def _getattr_made(args) -> str | None:
    """What the getattr shim makes of these arguments: an enum member (``getattr(cls, 'NAME')``, CPython
    3.11.0-3.11.4), a bound method (``allowlist.GETATTR_PAIRS``), or None when it would refuse them."""
    if type(args) is not tuple or len(args) != 2 or type(args[1]) is not str:
        return None
    target, attr = args
    if type(target) is Global:
        members = allowlist.ENUM_MEMBERS.get(allowlist.canonical(target.name))
        return allowlist.canonical(target.name) if members is not None and attr in members[0] else None
    if type(target) is Obj and (target.type, attr) in allowlist.GETATTR_PAIRS:
        return "bound method"
    return None


# Shims whose arguments the scan checks as the shim will (name -> what it makes, or None for a refusal).
_SHIM_CALLS = {
    "builtins.getattr": _getattr_made,
    "pathlib.WindowsPath": lambda args: "pathlib.PosixPath" if _args_matcher("pathlib.PosixPath")(args) else None,
}


@functools.lru_cache(maxsize=None)
def _matcher(pattern: Pattern):
    """Compile a pattern into a predicate on symbols (once per pattern: the scan calls these per opcode)."""
    kind, values = pattern.kind, pattern.values
    simple = {
        "str": lambda v: type(v) is str or type(v) is LongStr,
        "int": lambda v: type(v) is int,
        "bool": lambda v: type(v) is bool,
        "none": lambda v: v is None,
        "number": lambda v: type(v) is int or v is NUMBER,
        "bytes": lambda v: type(v) is bytes or type(v) is LongBytes or (type(v) is Obj and v.type == "builtins.bytes"),
        "list": lambda v: type(v) is list,
        "dict": lambda v: type(v) is dict,
        "any": lambda v: True,
        "global": lambda v: type(v) is Global,
        "object": lambda v: type(v) is Obj,
        "storage": lambda v: type(v) is Obj and v.type == "storage",
        "empty-ordereddict": lambda v: (type(v) is Obj and v.type == "collections.OrderedDict" and v.args == ()
                                        and not v.items and not v.built),
        "state": lambda v: state_problem(v, slots=False) is None,
    }
    if kind in simple:
        return simple[kind]
    if kind == "lit":
        return lambda v: any(type(v) is type(x) and v == x for x in values)
    if kind == "made":
        return lambda v: type(v) is Obj and v.type in values
    if kind == "name":
        return lambda v: type(v) is Global and allowlist.canonical(v.name) in values
    if kind == "tuple-of":
        item = _matcher(values[0])
        return lambda v: type(v) is tuple and all(item(x) for x in v)
    if kind == "tuple":
        items = tuple(_matcher(p) for p in values)
        return lambda v: type(v) is tuple and len(v) == len(items) and all(m(x) for m, x in zip(items, v))
    if kind == "either":
        options = tuple(_matcher(p) for p in values)
        return lambda v: any(m(v) for m in options)
    if kind == "dict-of":
        item = _matcher(values[0])
        return lambda v: type(v) is dict and all(item(x) for x in v.values())
    if kind == "args-of":
        return lambda v: _args_matcher(values[0])(v)
    raise ValueError(f"unknown pattern {pattern!r}")


@functools.lru_cache(maxsize=None)
def _args_matcher(name: str):
    """A predicate on an argument tuple: does it match any of the entry's allowed argument tuples?"""
    entry = {e.name: e for e in allowlist.FASTAI_INTERNALS}.get(name)
    if entry is None or entry.args is None:
        return lambda args: False
    shapes = [(len(allowed), tuple(_matcher(p) for p in allowed)) for allowed in entry.args
              if not (len(allowed) == 1 and allowed[0].kind == "star")]
    stars = [_matcher(allowed[0].values[0]) for allowed in entry.args if len(allowed) == 1 and allowed[0].kind == "star"]

    def match(args) -> bool:
        if type(args) is not tuple:
            return False
        n = len(args)
        for length, matchers in shapes:
            if n == length and all(m(a) for m, a in zip(matchers, args)):
                return True
        return any(all(m(a) for a in args) for m in stars)

    return match


def _show(value, depth: int = 0) -> str:
    """A short description of a symbol for messages."""
    t = type(value)
    if t is Global:
        return value.name
    if t is Obj:
        return f"<{value.type or value.made_by or 'computed'} object>"
    if t is tuple:
        inner = ", ".join(_show(v, depth + 1) for v in value[:4]) if depth < 2 else "..."
        return f"({inner}{', ...' if len(value) > 4 else ''}{',' if len(value) == 1 else ''})"
    if t is list:
        return f"a list of {len(value)}"
    if t is dict:
        return f"a dict of {len(value)}"
    if t is SSet:
        return f"a set of {len(value)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
