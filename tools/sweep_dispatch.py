"""Map the slots of AutoGluon's pickled objects that AutoGluon later *dispatches on* (research tool).

Strict mode restricts which globals a predictor's pickles may reference, but AutoGluon then calls
classes and functions stored in the loaded objects (``predictor._learner_type.load(path)``, the model
graph's node attribute ``type``, ``_child_type``, ``_compiler`` ...) and joins stored strings into
paths.  This tool loads every pickle of *genuine* predictor directories with plain ``pickle.load``
(only ever run it on directories you trust) and walks each object graph to report:

(a) per file: its role (from its path) and the exact type of its top-level object;
(b) every location whose value is a class or a function / builtin / partial / method, as a normalised
    slot pattern (owner class qualname + attribute, ``[*]`` for container elements and dict values,
    ``['key']`` for fixed record keys, ``-> node attrs['type']`` for networkx graph data), with the
    set of values seen;
(c) every string-valued slot that looks like a path or a path component (``path``, ``path_root``,
    names of models and bagged children, graph node ids ...), with example values;
(d) for AutoGluon-owned slots, the exact types of the objects they hold (e.g. what ``model_base`` is);
(e) instance state keys that shadow a class attribute (a method or a class constant such as a file name),
    which is how a pickle could redirect ``self.<constant>`` / ``self.<method>()`` lookups.

Usage: .venv/bin/python tools/sweep_dispatch.py PREDICTOR_DIR [PREDICTOR_DIR ...] [--out FILE]
Prints the JSON report and writes it to /tmp/dispatch_report.json (or --out).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import pickle
import re
import sys
import types
import zipfile
from collections import defaultdict

MAX_NODES_PER_FILE = 400_000
MAX_DEPTH = 80
MAX_EXAMPLES = 4
MAX_STR_VALUES = 12

LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice, memoryview)
LEAF_MODULE_PREFIXES = ("numpy", "pandas", "torch._tensor", "torch.nn.parameter", "scipy.sparse")
CALLABLE_TYPES = (
    types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.BuiltinMethodType,
    types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType,
    types.ClassMethodDescriptorType, functools.partial, staticmethod, classmethod, property,
)
PATHLIKE_ATTR = re.compile(r"(path|name|dir|file|folder|root|suffix|prefix)", re.I)
RECORD_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")


# --- file roles ----------------------------------------------------------------------------------------

def role_of(rel: str) -> str:
    p = rel.split("/")
    if rel == "predictor.pkl":
        return "predictor.pkl"
    if rel == "learner.pkl":
        return "learner.pkl"
    if rel == "models/trainer.pkl":
        return "models/trainer.pkl"
    if p[0] == "models" and len(p) == 3 and p[2] == "model.pkl":
        return "models/<m>/model.pkl"
    if p[0] == "models" and len(p) == 4 and p[3] == "model.pkl":
        return "models/<m>/<child>/model.pkl"
    if p[0] == "models" and p[-1] == "model-internals.pkl":
        return "models/<m>/[<child>/]model-internals.pkl (fastai, torch format)"
    if p[0] == "models" and len(p) == 4 and p[2] == "utils":
        return f"models/<m>/utils/{p[3]}"
    if p[0] == "models" and p[-1] == "model_native.pkl":
        return "models/<m>/[<child>/]model_native.pkl (compiler)"
    if p[0] == "utils" and len(p) >= 2 and p[1] == "data":
        return "utils/data/" + p[-1]
    if p[0] == "utils" and len(p) >= 2 and p[1] == "attr":
        return "utils/attr/<m>/" + p[-1]
    return "other:" + rel


def qualname(obj) -> str:
    mod = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{mod}.{name}"


def describe_callable(value) -> str:
    """A stable name for a class or callable value."""
    if isinstance(value, type):
        meta = type(value)
        plain = meta is type or qualname(meta) == "abc.ABCMeta"
        return f"class {qualname(value)}" + ("" if plain else f" (metaclass {qualname(meta)})")
    if isinstance(value, functools.partial):
        return f"partial({describe_callable(value.func)}, args={len(value.args)}, kw={sorted(value.keywords)})"
    if isinstance(value, types.MethodType):
        self_ = value.__self__
        bound = qualname(self_) if isinstance(self_, type) else f"<{qualname(type(self_))} instance>"
        return f"method {value.__func__.__qualname__} bound to {bound}"
    if isinstance(value, (staticmethod, classmethod)):
        return f"{type(value).__name__}({describe_callable(value.__func__)})"
    if isinstance(value, property):
        return "property"
    if isinstance(value, types.FunctionType):
        return f"function {qualname(value)}"
    if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        self_ = getattr(value, "__self__", None)
        if self_ is not None and not isinstance(self_, types.ModuleType):
            return f"builtin method {getattr(value, '__qualname__', value.__name__)} bound to <{qualname(type(self_))}>"
        return f"builtin {qualname(value)}"
    return f"{type(value).__name__} {qualname(value)}"


def is_leaf(value) -> bool:
    if isinstance(value, LEAF_TYPES):
        return True
    mod = type(value).__module__ or ""
    return mod.startswith(LEAF_MODULE_PREFIXES) or _is_tensor(value)


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_nx_graph(value) -> bool:
    nx = sys.modules.get("networkx")
    return nx is not None and isinstance(value, nx.Graph)


# --- the walker ----------------------------------------------------------------------------------------

class Report:
    def __init__(self) -> None:
        self.files: list[dict] = []
        self.callables: dict[str, dict] = {}
        self.strings: dict[str, dict] = {}
        self.objects: dict[str, dict] = {}
        self.shadows: dict[str, dict] = {}  # instance state keys that shadow a class attribute
        self.names: set[str] = set()  # model and child names (directory names) of all predictors

    @staticmethod
    def _slot(table: dict, pattern: str) -> dict:
        return table.setdefault(pattern, {"values": defaultdict(int), "roles": set(), "predictors": set(),
                                          "examples": []})

    def add(self, table: dict, pattern: str, value: str, ctx: "Walk", where: str) -> None:
        slot = self._slot(table, pattern)
        slot["values"][value] += 1
        slot["roles"].add(ctx.role)
        slot["predictors"].add(ctx.predictor)
        if len(slot["examples"]) < MAX_EXAMPLES:
            slot["examples"].append(f"{ctx.predictor}/{ctx.rel}: {where}")


class Walk:
    def __init__(self, report: Report, predictor: str, rel: str, role: str) -> None:
        self.report, self.predictor, self.rel, self.role = report, predictor, rel, role
        self.seen_owners: set[int] = set()
        self.seen_containers: set[tuple[int, str]] = set()
        self.nodes = 0
        self.truncated = False
        self.keep: list = []  # keep __getstate__ results alive so ids stay unique
        self.claimed: set[int] = set()  # networkx data dicts, reported once under "-> node attrs" etc.

    # the pattern of a value: (owner pattern, where) where owner pattern is "Owner.attr[*]..."
    def visit(self, value, pattern: str, where: str, depth: int, key_hint=None, owner_mod: str = "") -> None:
        if self.nodes >= MAX_NODES_PER_FILE or depth > MAX_DEPTH:
            self.truncated = True
            return
        self.nodes += 1
        if isinstance(value, type) or isinstance(value, CALLABLE_TYPES):
            self.report.add(self.report.callables, pattern, describe_callable(value), self, where)
            if isinstance(value, functools.partial):  # its args may hold more callables
                self.visit(value.args, pattern + "<partial.args>", where + ".args", depth + 1, owner_mod=owner_mod)
                self.visit(value.keywords, pattern + "<partial.keywords>", where + ".keywords", depth + 1, owner_mod=owner_mod)
            return
        if isinstance(value, types.ModuleType):
            self.report.add(self.report.callables, pattern, f"module {value.__name__}", self, where)
            return
        if isinstance(value, (str, pathlib.PurePath)):
            self._string(value, pattern, where, key_hint)
            return
        if is_leaf(value):
            if type(value).__module__.startswith("numpy") and getattr(value, "dtype", None) is not None \
                    and value.dtype == object and getattr(value, "size", 0) <= 10_000:
                for i, item in enumerate(value.ravel().tolist()):  # object arrays: look for code, cheaply
                    if isinstance(item, type) or isinstance(item, CALLABLE_TYPES):
                        self.visit(item, pattern + "<ndarray>[*]", f"{where}.flat[{i}]", depth + 1, owner_mod=owner_mod)
            return
        if isinstance(value, (dict, list, tuple, set, frozenset)) and not hasattr(value, "__dict__"):
            self._container(value, pattern, where, depth, owner_mod)
            return
        # an object: record what kind of object this slot holds, then recurse with a fresh owner pattern
        tname = qualname(type(value))
        if owner_mod.startswith("autogluon") or tname.startswith("autogluon") or pattern == "<root>":
            self.report.add(self.report.objects, pattern, tname, self, where)
        if isinstance(value, (dict, list, tuple, set, frozenset)):  # subclass with a __dict__ (ParamsDict)
            self._container(value, f"{type(value).__qualname__}<items>", where, depth, type(value).__module__)
        if id(value) in self.seen_owners:
            return
        self.seen_owners.add(id(value))
        owner, mod = type(value).__qualname__, type(value).__module__ or ""
        if _is_nx_graph(value):
            self._graph(value, pattern, where, depth, owner_mod)
        attrs = self._attrs(value)
        self._shadowing(value, owner)
        pickled = self._pickled_keys(value)
        for name, item in attrs:
            slot = f"{owner}.{name}"
            if pickled is not None and name not in pickled:
                slot += " (rebuilt by __setstate__, not in the pickle)"
            self.visit(item, slot, f"{where}.{name}", depth + 1, key_hint=name, owner_mod=mod)

    def _shadowing(self, value, owner: str) -> None:
        """Instance __dict__ keys that hide a class-level attribute (a method, a constant such as a file name)."""
        try:
            d = object.__getattribute__(value, "__dict__")
        except Exception:
            return
        if not isinstance(d, dict):
            return
        for key in d:
            if not isinstance(key, str):
                continue
            for klass in type(value).__mro__[:-1]:  # not object
                if key in vars(klass):
                    attr = vars(klass)[key]
                    has_get, has_set = hasattr(type(attr), "__get__"), hasattr(type(attr), "__set__")
                    if isinstance(attr, (types.FunctionType, classmethod, staticmethod)):
                        kind = f"method {klass.__qualname__}.{key}"
                    elif has_set and has_get:
                        kind = f"data descriptor {klass.__qualname__}.{key} (its __get__ wins over the instance value)"
                    elif has_set:
                        kind = f"set-only descriptor {klass.__qualname__}.{key} (instance value is what reads see)"
                    elif has_get:
                        kind = f"non-data descriptor {klass.__qualname__}.{key} = {type(attr).__name__} (instance value wins)"
                    else:
                        kind = f"class constant {klass.__qualname__}.{key} = {type(attr).__name__}"
                    self.report.add(self.report.shadows, f"{owner}.{key}", kind, self, key)
                    break

    def _pickled_keys(self, value):
        """For types with their own __getstate__: the attribute names pickle stores (None: all of __dict__)."""
        getstate = getattr(type(value), "__getstate__", None)
        if getstate is None or getstate is object.__getstate__ or not hasattr(value, "__dict__"):
            return None
        mod = type(value).__module__ or ""
        if mod.startswith(("torch", "fastai", "fastcore", "fasttransform")):
            return None  # nn.Module etc.: __getstate__ is __dict__ (minus caches); not worth the noise
        try:
            state = value.__getstate__()
        except Exception:
            return None
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
            state = {**(state[0] or {}), **state[1]}
        return set(state) if isinstance(state, dict) else None

    def _attrs(self, value):
        out = []
        try:
            d = object.__getattribute__(value, "__dict__")
        except Exception:
            d = None
        if isinstance(d, dict):
            out.extend((str(k), v) for k, v in d.items())
        for klass in type(value).__mro__:
            for slot in getattr(klass, "__slots__", ()) or ():
                if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                    try:
                        out.append((slot, object.__getattribute__(value, slot)))
                    except Exception:
                        pass
        if d is None and not out:
            # C-level state (e.g. sklearn's Tree): what pickle would store
            getstate = getattr(type(value), "__getstate__", None)
            if getstate is not None and getstate is not object.__getstate__:
                try:
                    state = value.__getstate__()
                    self.keep.append(state)
                    if isinstance(state, dict):
                        out.extend((f"__getstate__[{k!r}]", v) for k, v in state.items())
                    else:
                        out.append(("__getstate__()", state))
                except Exception:
                    pass
        return out

    def _container(self, value, pattern: str, where: str, depth: int, owner_mod: str) -> None:
        key = (id(value), pattern)
        if key in self.seen_containers or id(value) in self.claimed:
            return
        self.seen_containers.add(key)
        if isinstance(value, dict):
            keys = list(value.keys())
            record = len(keys) <= 40 and all(isinstance(k, str) and RECORD_KEY.match(k) and k not in self.report.names
                                             for k in keys)
            for k, v in value.items():
                if isinstance(k, type) or isinstance(k, CALLABLE_TYPES):
                    self.visit(k, pattern + "<key>", f"{where}<key {describe_callable(k)}>", depth + 1, owner_mod=owner_mod)
                elif isinstance(k, str) and k in self.report.names:
                    self._string(k, pattern + "<key>", f"{where}<key>", None, force=True)
                elif not isinstance(k, (str, int, float, bool, type(None))):
                    self.visit(k, pattern + "<key>", f"{where}<key>", depth + 1, owner_mod=owner_mod)
                sub = f"[{k!r}]" if record else "[*]"
                self.visit(v, pattern + sub, f"{where}[{k!r}]", depth + 1, key_hint=k if isinstance(k, str) else None, owner_mod=owner_mod)
        else:
            for i, v in enumerate(value):
                self.visit(v, pattern + "[*]", f"{where}[{i}]", depth + 1, owner_mod=owner_mod)

    def _graph(self, g, pattern: str, where: str, depth: int, owner_mod: str) -> None:
        """networkx data as "<slot> -> node id / node attrs['k'] / edge attrs['k'] / graph attrs['k']"; the
        internal dicts (_node, _adj, _succ, _pred and the views' references to them) are then not walked again."""
        base = f"{pattern} ->"
        for d in (g._node, g._adj, getattr(g, "_pred", {}), getattr(g, "_succ", {}), g.graph):
            self.claimed.add(id(d))
            for inner in d.values():
                if isinstance(inner, dict):
                    self.claimed.add(id(inner))
                    for attrs in inner.values():
                        if isinstance(attrs, dict):
                            self.claimed.add(id(attrs))
        for n, attrs in g._node.items():
            if isinstance(n, str):
                self._string(n, f"{base} node id", f"{where}.nodes", None, force=True)
            else:
                self.visit(n, f"{base} node id", f"{where}.nodes", depth + 1, owner_mod=owner_mod)
            for k, v in attrs.items():
                self.visit(v, f"{base} node attrs[{k!r}]", f"{where}.nodes[{n!r}][{k!r}]", depth + 1, key_hint=k, owner_mod=owner_mod)
        for u, nbrs in g._adj.items():
            for v, attrs in nbrs.items():
                for k, val in attrs.items():
                    self.visit(val, f"{base} edge attrs[{k!r}]", f"{where}.edges[{u!r},{v!r}][{k!r}]", depth + 1, owner_mod=owner_mod)
        for k, v in g.graph.items():
            self.visit(v, f"{base} graph attrs[{k!r}]", f"{where}.graph[{k!r}]", depth + 1, owner_mod=owner_mod)

    def _string(self, value, pattern: str, where: str, key_hint, force: bool = False) -> None:
        s = str(value)
        attr = pattern.rsplit(".", 1)[-1]
        hint = key_hint if isinstance(key_hint, str) else ""
        reasons = []
        if force:
            reasons.append("model/child name key or graph node id")
        if isinstance(value, pathlib.PurePath):
            reasons.append("pathlib object")
        if PATHLIKE_ATTR.search(attr) or PATHLIKE_ATTR.search(hint):
            reasons.append("path-like attribute name")
        if s in self.report.names:
            reasons.append("value is a model/child name")
        if "/" in s or os.sep in s:
            reasons.append("contains a path separator")
        if reasons:
            shown = s if len(s) < 200 else s[:200] + "..."
            if isinstance(value, pathlib.PurePath):
                shown = f"{type(value).__name__}({shown})"
            self.report.add(self.report.strings, pattern, shown, self, where)
            self.report.strings[pattern].setdefault("reasons", set()).update(reasons)


# --- driver --------------------------------------------------------------------------------------------

def load_any(path: pathlib.Path):
    """Plain pickle, or torch's format (fastai's model-internals.pkl): for trusted files only."""
    if zipfile.is_zipfile(path):
        import torch
        return torch.load(path, weights_only=False, map_location="cpu"), "torch.load(weights_only=False)"
    with open(path, "rb") as fh:
        return pickle.load(fh), "pickle.load"


def collect_names(dirs: list[pathlib.Path]) -> set[str]:
    names = set()
    for d in dirs:
        models = d / "models"
        if models.is_dir():
            for m in models.iterdir():
                if m.is_dir():
                    names.add(m.name)
                    for c in m.iterdir():
                        if c.is_dir() and c.name != "utils":
                            names.add(c.name)
    return names


def sweep(dirs: list[pathlib.Path]) -> dict:
    report = Report()
    report.names = collect_names(dirs)
    for d in dirs:
        for file in sorted(p for p in d.rglob("*.pkl") if p.is_file()):
            rel = str(file.relative_to(d))
            role = role_of(rel)
            entry = {"predictor": d.name, "file": rel, "role": role}
            try:
                obj, how = load_any(file)
            except Exception as exc:  # noqa: BLE001  (report and go on)
                entry["error"] = f"{type(exc).__name__}: {exc}"
                report.files.append(entry)
                continue
            entry["loader"] = how
            entry["top_type"] = qualname(type(obj))
            walk = Walk(report, d.name, rel, role)
            walk.visit(obj, "<root>", "<root>", 0)
            entry["nodes"] = walk.nodes
            if walk.truncated:
                entry["truncated"] = True
            report.files.append(entry)
            print(f"{d.name}/{rel}: {entry['top_type']} ({walk.nodes} nodes)", file=sys.stderr, flush=True)

    def dump(table: dict, limit: int | None = None) -> dict:
        out = {}
        for pattern in sorted(table):
            slot = table[pattern]
            values = dict(sorted(slot["values"].items()))
            out[pattern] = {
                "values": values if limit is None else dict(list(values.items())[:limit]),
                "n_distinct": len(values),
                "roles": sorted(slot["roles"]),
                "predictors": sorted(slot["predictors"]),
                "examples": slot["examples"],
            }
            if "reasons" in slot:
                out[pattern]["reasons"] = sorted(slot["reasons"])
        return out

    roles: dict[str, dict] = {}
    for f in report.files:
        r = roles.setdefault(f["role"], {"top_types": defaultdict(int), "files": 0})
        r["files"] += 1
        r["top_types"][f.get("top_type", "ERROR")] += 1
    return {
        "predictors": [str(d) for d in dirs],
        "roles": {k: {"files": v["files"], "top_types": dict(v["top_types"])} for k, v in sorted(roles.items())},
        "callable_slots": dump(report.callables),
        "string_slots": dump(report.strings, MAX_STR_VALUES),
        "object_slots": dump(report.objects),
        "shadowing_instance_attrs": dump(report.shadows),
        "files": report.files,
    }


def main(argv: list[str]) -> None:
    out = pathlib.Path("/tmp/dispatch_report.json")
    if "--out" in argv:
        i = argv.index("--out")
        out = pathlib.Path(argv[i + 1])
        del argv[i:i + 2]
    dirs = [pathlib.Path(a).resolve() for a in argv]
    if not dirs:
        sys.exit(__doc__)
    report = sweep(dirs)
    text = json.dumps(report, indent=1, default=str)
    out.write_text(text + "\n")
    print(text)
    print(f"{len(report['callable_slots'])} callable slots, {len(report['string_slots'])} string slots -> {out}",
          file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
