"""Reading FLAME files safely: the official pickle layout without chumpy, .npz conversions, bad files."""

import os
import pickle
import sys

import numpy as np
import pytest

from backend.errors import HeadFileError
from backend.flame_file import load_head_file, save_head_npz
from backend.head import load_head
from flame_fixtures import make_synthetic_flame, write_flame_pickle


@pytest.fixture
def model():
    return make_synthetic_flame(n_verts=90, n_shape=300, n_expr=100, seed=1)


def _check_same(data, model):
    np.testing.assert_allclose(data.v_template, model["v_template"], atol=1e-7)
    np.testing.assert_allclose(data.shapedirs, model["shapedirs"][:, :, :300], atol=1e-7)
    np.testing.assert_allclose(data.exprdirs, model["shapedirs"][:, :, 300:], atol=1e-7)
    np.testing.assert_allclose(data.posedirs, model["posedirs"], atol=1e-7)
    np.testing.assert_allclose(data.joint_regressor, model["J_regressor"], atol=1e-7)
    np.testing.assert_allclose(data.weights, model["weights"], atol=1e-7)
    np.testing.assert_array_equal(data.faces, model["f"])
    np.testing.assert_array_equal(data.parents, [-1, 0, 1, 1, 1])


@pytest.mark.parametrize("protocol", [1, 2])
def test_flame2020_chumpy_pickle_loads_without_chumpy(tmp_path, model, protocol):
    path = write_flame_pickle(tmp_path / "generic_model.pkl", model, protocol=protocol)
    raw = path.read_bytes()
    assert b"chumpy.ch" in raw and b"scipy.sparse.csc" in raw  # the official layout's classes
    assert "chumpy" not in sys.modules  # the fixture's stand-in modules are gone again
    data = load_head_file(path)
    _check_same(data, model)
    assert data.name == "flame:generic_model.pkl"
    assert "chumpy" not in sys.modules  # nothing was imported to read it


def test_flame2023_plain_array_pickle_and_npz_conversion(tmp_path, model):
    pkl = write_flame_pickle(tmp_path / "flame2023_Open.pkl", model, chumpy=False)
    _check_same(load_head_file(pkl), model)
    npz = tmp_path / "flame2023.npz"
    np.savez(npz, **model)
    _check_same(load_head_file(npz), model)


def test_save_and_reload_npz_round_trip_and_no_overwrite(tmp_path, model):
    data = load_head_file(write_flame_pickle(tmp_path / "generic_model.pkl", model))
    out = save_head_npz(data, tmp_path / "converted.npz")
    again = load_head_file(out)
    _check_same(again, model)
    assert again.name == data.name
    before = out.read_bytes()
    with pytest.raises(HeadFileError, match="already exists"):
        save_head_npz(data, out)
    assert out.read_bytes() == before


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, model):
    marker = tmp_path / "pwned"
    content = dict(model, v_template=_Exploit(marker))
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(HeadFileError) as info:
        load_head_file(path)
    assert str(path) in str(info.value) and "refusing" in str(info.value)
    assert ("posix.system" in str(info.value)) or ("os.system" in str(info.value))
    assert not marker.exists()


def _bad_files(tmp_path, model):
    good = write_flame_pickle(tmp_path / "good.pkl", model).read_bytes()
    files = {
        "truncated.pkl": (good[: len(good) // 2], "truncated or damaged"),
        "text.pkl": (b"this is not a pickle\n", "truncated or damaged"),
        "list.pkl": (pickle.dumps([1, 2, 3]), "holds a list, not a FLAME model"),
        "missing.pkl": (pickle.dumps({"v_template": np.zeros((3, 3))}), "missing f, shapedirs"),
        "bad_shape.pkl": (pickle.dumps(dict(model, posedirs=np.zeros((90, 3, 10)))), "posedirs has shape"),
        "nan.pkl": (pickle.dumps(dict(model, v_template=np.full((90, 3), np.nan))), "NaN"),
        "truncated.npz": (b"PK\x03\x04garbage", "truncated or damaged"),
        "model.obj": (b"v 0 0 0\n", "unknown head file type"),
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    return {tmp_path / name: words for name, (_, words) in files.items()}


def test_bad_files_give_one_sentence_naming_the_file(tmp_path, model):
    for path, words in _bad_files(tmp_path, model).items():
        with pytest.raises(HeadFileError) as info:
            load_head_file(path)
        message = str(info.value)
        assert message.startswith(str(path)), message
        assert words in message, message
        assert "\n" not in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(HeadFileError, match="no such file"):
        load_head(tmp_path / "generic_model.pkl")
    with pytest.raises(HeadFileError, match="is a folder"):
        load_head(tmp_path)


def test_npz_with_pickled_objects_is_refused(tmp_path, model):
    path = tmp_path / "objects.npz"
    np.savez(path, **dict(model, f=np.array([object()], dtype=object)))
    with pytest.raises(HeadFileError, match="Python objects"):
        load_head_file(path)
