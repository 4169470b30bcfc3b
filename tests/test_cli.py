"""The `thunder` command: head info/convert, and one-line errors for bad input."""

import json
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np

from flame_fixtures import make_synthetic_flame, write_flame_pickle


def thunder(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "backend.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, *words):
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thunder: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_console_script_is_declared():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("thunder") == "backend.cli:main"


def test_head_info_on_the_builtin_head():
    result = thunder("head", "info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["name"] == "thunder-builtin-v1"
    assert "mouthPucker" in info["expression_components"]
    assert set(info["landmarks"]) == {"upper_lip_center", "lower_lip_center", "mouth_corner_left",
                                      "mouth_corner_right"}
    assert info["vertex_sets"]["mouth_region"] > 50
    human = thunder("head", "info")
    assert human.returncode == 0 and "vertex sets" in human.stdout and "mouthSmileLeft" in human.stdout


def test_bad_head_files_give_one_line(tmp_path):
    assert_one_line_error(thunder("head", "info", tmp_path / "generic_model.pkl"), "no such file")
    damaged = tmp_path / "flame2023.pkl"
    damaged.write_bytes(b"\x80\x02}q\x00(X")
    assert_one_line_error(thunder("head", "info", damaged), str(damaged), "truncated or damaged")
    # FLAME's structure but no mouth opening: the math works, the lip sets cannot be found.
    no_mouth = write_flame_pickle(tmp_path / "generic_model.pkl", make_synthetic_flame())
    assert_one_line_error(thunder("head", "info", no_mouth), "cannot find the mouth opening")


def test_convert_writes_npz_and_never_overwrites(tmp_path):
    source = write_flame_pickle(tmp_path / "generic_model.pkl", make_synthetic_flame(n_verts=60))
    out = tmp_path / "generic_model.npz"
    result = thunder("head", "convert", source, out)
    assert result.returncode == 0, result.stderr
    with np.load(out, allow_pickle=False) as npz:
        assert npz["shapedirs"].shape == (60, 3, 320)
    before = out.read_bytes()
    assert_one_line_error(thunder("head", "convert", source, out), "already exists")
    assert out.read_bytes() == before
