"""Red team against strict mode's value checks (issue 18): what got through, and the controls it tried.

Each test builds its payload from real AutoGluon, pandas and numpy objects, shows it LIVE without strict mode
(plain pickle, or the check skipped) in a bounded subprocess (timeout, 3 GiB address space), then asserts what
strict mode should do: a typed ``SecureLoadError`` and nothing run.  Every finding (RT-1..RT-8) is fixed; the
comment or docstring of each test says what it was; they stay as regression tests.
"""

from __future__ import annotations

import copyreg
import json
import pickle
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from helpers import TEXT_FRAME, fitted_generator

import ag_torchfix
from ag_torchfix.load import strict_mode

NOWHERE = "/nonexistent/predictor/models/M/model.pkl"  # outside any predictor: no file-kind check

LIVE = """
import pickle, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
obj = pickle.loads(sys.stdin.buffer.read())
{use}
"""

STRICT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import ag_torchfix
from ag_torchfix import strict_mode
try:
    strict_mode.load_pickle(sys.stdin.buffer.read(), path={path!r})
    print("LOADED")
except ag_torchfix.SecureLoadError as err:
    print("REFUSED", str(err).splitlines()[0])
"""


def live(data: bytes, use: str = "pass", timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    """Plain pickle (what AutoGluon does without strict mode), limited to 3 GiB, then ``use``."""
    return subprocess.run([sys.executable, "-c", LIVE.format(use=use)], input=data, capture_output=True,
                          timeout=timeout, cwd=cwd)


def strict_child(data: bytes, *, cwd=None, path: str = NOWHERE, timeout: float = 120) -> str:
    """strict_mode.load_pickle in a child limited to 3 GiB: 'LOADED' or 'REFUSED <message>'."""
    out = subprocess.run([sys.executable, "-c", STRICT.format(path=path)], input=data, capture_output=True,
                         timeout=timeout, cwd=cwd)
    assert out.returncode == 0, out.stderr[-2000:]  # no crash, no untyped exception
    return out.stdout.decode().strip()


def refused(data: bytes, path: str = "/nonexistent/x.pkl"):
    with pytest.raises(ag_torchfix.SecureLoadError) as err:
        strict_mode.load_pickle(data, path=path)
    return err.value


def with_state(cls, args: tuple, state) -> object:
    """An object that pickles as REDUCE cls(*args) then BUILD state."""

    class Reduce:
        def __reduce_ex__(self, protocol):
            return (cls, args, state)

    return Reduce()


def newobj_with_state(cls, state) -> object:
    """An object that pickles as NEWOBJ cls() then BUILD state."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__reduce_ex__", lambda protocol: (copyreg.__newobj__, (cls,), state))
    return obj


@pytest.fixture(scope="module")
def text_frame():
    return pd.DataFrame(TEXT_FRAME)


_generator = fitted_generator


# --- RT-1 / RT-2: a "[*]" row checks a dict's values, AutoGluon iterates the dict's keys --------------------------

# RT-1: dict keys of TextSpecialFeatureGenerator._symbols_per_feature[*] are unchecked; AutoGluon compiles each key
#   into a regex (hang) -- fixed in the working tree during the red-team run: a regression test now
def test_text_symbols_as_dict_keys_reach_the_regular_expression(text_frame):
    """dispatch._walk checks the *values* of a dict under ``_symbols_per_feature[*][*]``; text_special.py does
    ``for symbol in symbols: X.str.count('\\\\' + symbol)``, which iterates the *keys*."""
    from autogluon.features.generators import TextSpecialFeatureGenerator

    generator = _generator(TextSpecialFeatureGenerator, text_frame)
    evil = "d*(a+)+$"
    generator._symbols_per_feature["text"] = {evil: "!"}  # the value is one character, the key is the regex
    generator._feature_names_dict["text"][evil] = {"count": "text.evil.count", "ratio": "text.evil.ratio"}
    data = pickle.dumps(generator)
    with pytest.raises(subprocess.TimeoutExpired):  # catastrophic backtracking on 41 characters
        live(data, "import pandas as pd; obj.transform(pd.DataFrame({'text': ['a' * 40 + '!']}))", timeout=10)
    refused(data)


# RT-2: dict keys of DatetimeFeatureGenerator.features are unchecked; AutoGluon getattr()s each key on Series.dt
#   (untyped AttributeError) -- fixed in the working tree during the red-team run: a regression test now
def test_datetime_features_as_dict_keys_reach_getattr():
    from autogluon.features.generators import DatetimeFeatureGenerator

    frame = pd.DataFrame({"when": pd.to_datetime(["2024-01-02", "2025-03-04"] * 10)})
    generator = _generator(DatetimeFeatureGenerator, frame)
    generator.features = {"year": "year", "tz_localize": "month"}  # values are fields, keys are what is read
    data = pickle.dumps(generator)
    result = live(data, "import pandas as pd; obj.transform(pd.DataFrame({'when': pd.to_datetime(['2024-01-02'])}))")
    assert b"AttributeError" in result.stderr, result.stderr[-1000:]
    refused(data)


# --- RT-3: zero-itemsize arrays of any shape -------------------------------------------------------------------

def _zero_itemsize_index(n: int) -> bytes:
    array = np.ndarray.__new__(np.ndarray, (0,), np.dtype("S0"))
    array.__setstate__((1, (n,), np.dtype("S0"), False, b""))  # 0 bytes fill any shape: numpy accepts it
    from pandas.core.indexes.base import _new_Index

    return pickle.dumps(with_state(_new_Index, (pd.Index, {"data": array, "name": None}), None), protocol=4)


# RT-3: an 'S0' ndarray of 10**9 items is 0 bytes of state; _new_Index converts it to a 7.45 GiB object array (only
#   the rlimit stops it) -- fixed in the working tree during the red-team run: a regression test now
def test_a_zero_itemsize_array_of_a_billion_items_is_refused_before_pandas_allocates():
    data = _zero_itemsize_index(10**9)
    assert len(data) < 300
    result = live(data, "print(len(obj))")
    assert b"MemoryError" in result.stderr and b"7.45 GiB" in result.stderr, result.stderr[-1000:]
    verdict = strict_child(data)
    assert verdict.startswith("REFUSED"), verdict
    assert "MemoryError" not in verdict, verdict  # refused by a value check, not by the address-space limit


# --- RT-4: hash collisions outside pickle's own dicts and sets -------------------------------------------------

# RT-4: the hash budget covers dict/set keys only; an object Index of ints k*(2**61-1) (category_map) makes
#   pd.Categorical quadratic at predict -- fixed in the working tree during the red-team run: a regression test now
def test_an_index_of_colliding_hashes_is_refused():
    """CategoryFeatureGenerator._generate_features_category: pd.Categorical(X[col], categories=category_map[col])
    validates the categories' uniqueness with a hash table: 25,000 labels of one hash take seconds, 300,000 (3 MB)
    a quarter of an hour."""
    modulus = 2**61 - 1
    labels = np.empty(25_000, dtype=object)
    labels[:] = [k * modulus for k in range(1, len(labels) + 1)]
    data = pickle.dumps({"cat": pd.Index(labels, dtype=object)}, protocol=4)
    timed = live(data, "t = time.time(); __import__('pandas').Categorical(['a'], categories=obj['cat']); "
                       "print(time.time() - t)", timeout=120)
    assert float(timed.stdout) > 2.0, timed  # 25,000 distinct labels: milliseconds when their hashes differ
    refused(data)


# --- RT-5: scan --strict checks each file alone; the strict load checks the class AutoGluon asked for ---------------

# RT-5: scan --strict exits 0 on a model.pkl holding another model class; the strict load refuses it
#   (dispatch._check_dispatching_class) -- fixed in the working tree during the red-team run: a regression test now
def test_scan_agrees_with_the_strict_load_on_a_model_of_another_class(zoo_predictors, tmp_path):
    predictor = shutil.copytree(zoo_predictors["zoo-multiclass"], tmp_path / "p")
    shutil.copy(predictor / "models" / "ExtraTrees" / "model.pkl", predictor / "models" / "RandomForest" / "model.pkl")
    from autogluon.common.loaders import load_pkl

    with ag_torchfix.strict(), pytest.raises(ag_torchfix.SecureLoadError, match="RFModel.load"):
        from autogluon.tabular.models.rf.rf_model import RFModel

        RFModel.load(str(predictor / "models" / "RandomForest"))
    with ag_torchfix.strict():  # the file itself loads strictly when nothing asks for a class
        assert type(load_pkl.load(path=str(predictor / "models" / "RandomForest" / "model.pkl"))).__name__ == "XTModel"
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--strict", "--json", str(predictor)],
                         capture_output=True, text=True, timeout=600)
    assert json.loads(out.stdout)
    assert out.returncode != 0, "scan --strict calls a predictor clean that the strict load refuses"


# --- RT-6: instance attributes of dict subclasses and OrderedDicts: never walked, and called by the walk ----------

def _params_aux(state: dict) -> bytes:
    from autogluon.core.models.abstract._auxiliary_params import ParamsAuxDict

    return pickle.dumps(with_state(ParamsAuxDict, ({"max_memory_usage_ratio": 1.0},), state), protocol=4)


# RT-6a: BUILD plants 'items' on a ParamsAuxDict; dispatch._walk calls value.items(), which runs the file's class
#   (LGBModel() creates directories) -- fixed in the working tree during the red-team run: a regression test now
def test_the_strict_check_does_not_call_a_method_the_file_planted(tmp_path):
    from autogluon.tabular.models.lgb.lgb_model import LGBModel

    data = _params_aux({"items": LGBModel})
    (tmp_path / "live").mkdir()
    live(data, "obj.items()", cwd=tmp_path / "live")
    assert (tmp_path / "live" / "AutogluonModels").is_dir()  # LGBModel() ran: it made its output directory
    (tmp_path / "strict").mkdir()
    verdict = strict_child(data, cwd=tmp_path / "strict")
    assert verdict.startswith("REFUSED"), verdict
    assert not (tmp_path / "strict" / "AutogluonModels").exists(), "strict mode ran LGBModel() while checking"


# RT-6b: classes in a dict subclass's (or OrderedDict's) instance __dict__ are never walked: 'every class sits in a
#   slot' does not hold -- fixed in the working tree during the red-team run: a regression test now
def test_a_class_hidden_in_a_dict_subclass_attribute_is_seen(tmp_path):
    from collections import OrderedDict

    from autogluon.tabular.models.lgb.lgb_model import LGBModel

    data = _params_aux({"items": OrderedDict, "values": OrderedDict, "get": LGBModel, "copy": LGBModel})
    live(data, "obj.copy()", cwd=tmp_path)
    assert (tmp_path / "AutogluonModels").is_dir()  # params_aux.copy() runs the file's class
    refused(data)


# --- RT-7: _new_Index's dtype turns numpy data into extension arrays strict mode never reviewed ---------------------

# RT-7: _new_Index accepts any 'dtype' value: 'Sparse[int64]', 'int64[pyarrow]', 'string[pyarrow]' build non-
#   allowlisted arrays -- fixed in the working tree during the red-team run: a regression test now
@pytest.mark.parametrize("dtype", ["Sparse[int64]", "int64[pyarrow]"])
def test_an_index_dtype_cannot_name_an_extension_type(dtype):
    from pandas.core.indexes.base import _new_Index

    data = pickle.dumps(with_state(_new_Index, (pd.Index, {"data": np.arange(3), "dtype": dtype}), None), protocol=4)
    result = live(data, "print(type(obj.array).__module__, type(obj.array).__qualname__)")
    assert b"Sparse" in result.stdout or b"Arrow" in result.stdout, result
    refused(data)


# --- controls: what the red team tried that strict mode refuses ------------------------------------------------------

def _frame_state(**overrides):
    state = {"_typ": "dataframe", "_metadata": [], "_attrs": {}, "_flags": {"allows_duplicate_labels": True}}
    state.update(overrides)
    return state


@pytest.mark.parametrize("mgr", ["series-manager", "int", "frame"])
def test_a_frame_whose_manager_is_not_a_block_manager_is_refused(mgr):
    series = pd.Series(np.arange(5.0))
    frame = pd.DataFrame({"a": np.arange(5.0)})
    value = {"series-manager": series._mgr, "int": 5, "frame": frame}[mgr]
    refused(pickle.dumps(newobj_with_state(pd.DataFrame, _frame_state(_mgr=value)), protocol=4))


def test_a_datetime_index_dtype_cannot_name_a_timezone_file():
    from pandas.core.indexes.base import _new_Index

    data = pickle.dumps(with_state(_new_Index, (pd.Index, {"data": np.arange(3),
                                                           "dtype": "datetime64[ns, dateutil//etc/passwd]"}), None))
    refused(data)


def test_a_trillion_item_zero_itemsize_array_stops_at_the_walk_bound():
    array = np.ndarray.__new__(np.ndarray, (0,), np.dtype("S0"))
    array.__setstate__((1, (10**12,), np.dtype("S0"), False, b""))
    started = time.monotonic()
    refused(pickle.dumps([array], protocol=4))  # the walk's 2,000,000-part bound
    assert time.monotonic() - started < 60


# --- open findings -------------------------------------------------------------------------------------------------

def _swapped_with_node_path(source, dest, node_path):
    """models/RandomForest/model.pkl replaced by ExtraTrees' (an XTModel), and the RandomForest node's path spelled
    ``node_path``: AutoGluon joins it (os.path.join(self.path, *path)) into the same directory."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from helpers import dump_obj, load_obj

    predictor = shutil.copytree(source, dest)
    shutil.copy(predictor / "models" / "ExtraTrees" / "model.pkl", predictor / "models" / "RandomForest" / "model.pkl")
    trainer = load_obj(predictor / "models" / "trainer.pkl")  # our own genuine file
    assert trainer.model_graph.nodes["RandomForest"]["path"] == ["RandomForest"]
    trainer.model_graph.nodes["RandomForest"]["path"] = node_path
    dump_obj(trainer, predictor / "models" / "trainer.pkl")
    return predictor


@pytest.mark.parametrize("node_path, match", [(("RandomForest",), "RFModel.load"),
                                              (["RandomForest", ""], "an empty path or path component")],
                         ids=["tuple", "empty-part"])
def test_scan_finds_the_class_of_a_model_whose_node_path_is_spelled_otherwise(zoo_predictors, tmp_path, node_path,
                                                                              match):
    """RT-5b (fixed): the scanner joins a node's path as AutoGluon does; an empty component is refused outright."""
    predictor = _swapped_with_node_path(zoo_predictors["zoo-multiclass"], tmp_path / "p", node_path)
    from autogluon.tabular import TabularPredictor

    with ag_torchfix.strict(), pytest.raises(ag_torchfix.SecureLoadError, match=match):
        loaded = TabularPredictor.load(str(predictor), verbosity=0)
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
        from helpers import make_table

        loaded.predict(make_table(10, loaded.problem_type, seed=5).drop(columns=["label"]), model="RandomForest")
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--strict", "--json", str(predictor)],
                         capture_output=True, text=True, timeout=600)
    assert json.loads(out.stdout)
    assert out.returncode != 0, "scan --strict calls a predictor clean that the strict load refuses"


def test_index_labels_whose_pandas_hash_collides_are_refused():
    """RT-8 (fixed: the folded hash is counted too).  label_hash_problem counted ``hash(v)``: (k << 32) | k are 25,000 distinct hashes.  pandas'
    PyObjectHashTable (kh_python_hash_func) uses ``(h >> 32) ^ h`` truncated to 32 bits: 0 for every one of them,
    so Categorical's uniqueness check is quadratic (25,000 labels: seconds; 300,000 in 2.4 MB: ten minutes)."""
    labels = np.empty(25_000, dtype=object)
    labels[:] = [(k << 32) | k for k in range(1, len(labels) + 1)]
    data = pickle.dumps({"cat": pd.Index(labels, dtype=object)}, protocol=4)
    timed = live(data, "t = time.time(); __import__('pandas').Categorical(['a'], categories=obj['cat']); "
                       "print(time.time() - t)", timeout=120)
    assert float(timed.stdout) > 2.0, timed
    refused(data)
