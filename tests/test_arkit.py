"""The ARKit rule (thunder_blender/arkit.py): shape-key names, a take's 52 weights and rotations, the jaw
calibration, the Live Link CSV and JSON; and `thunder arkit`, which writes them from a take file by the same
rule (the Blender side is tested by the arkit_character case of tests/blender_cases.py)."""

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend import cli
from backend.arkit_export import arkit as backend_arkit
from backend.take_file import Take, save_take
from test_properties import examples
from thunder_blender import arkit, rig_math

EXAMPLES = examples(200)   # the project's Hypothesis profiles (tests/test_properties.py): ten times as many in `thorough`


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("key, name", [
    ("BrowInnerUp", "browInnerUp"), ("browInnerUp", "browInnerUp"), ("brow_inner_up", "browInnerUp"),
    ("A01_Brow_Inner_Up", "browInnerUp"), ("blendShape1.browInnerUp", "browInnerUp"),
    ("eyeBlink_L", "eyeBlinkLeft"), ("EyeBlinkRight", "eyeBlinkRight"), ("Eye_Blink_R", "eyeBlinkRight"),
    ("L_eyeBlink", "eyeBlinkLeft"), ("Face:mouthSmile_Left", "mouthSmileLeft"), ("ARKit_jawOpen", "jawOpen"),
    ("mouthLeft", "mouthLeft"), ("JawRight", "jawRight"), ("EyeLookInL", "eyeLookInLeft"),
    ("jawOpen.001", "jawOpen"), ("A25_Jaw_Open", "jawOpen"), ("cheek-puff", "cheekPuff"),
])
def test_shape_key_names_that_spell_arkit_names(key, name):
    assert arkit.arkit_name(key) == name


@pytest.mark.parametrize("key", ["Basis", "Key 1", "smile", "eyeBlink", "mouthSmile", "jaw", "", "...", "L", "12"])
def test_names_that_are_not_arkit_names(key):
    assert arkit.arkit_name(key) is None


def _spell(name, style, side_style, prefix):
    """An ARKit name as some rig spells it: words joined in a style, sides spelled their way, a prefix."""
    words = [w.lower() for w in __import__("re").findall(r"[A-Za-z][a-z]*", name[0].upper() + name[1:])]
    side = words[-1] if words[-1] in ("left", "right") and name not in ("mouthLeft", "mouthRight",
                                                                         "jawLeft", "jawRight") else None
    if side:
        words = words[:-1] + [{"L": side[0], "Left": side, "_l": side[0]}[side_style]]
    if style == "camel":
        text = words[0] + "".join(w.capitalize() for w in words[1:])
    elif style == "pascal_underscore":
        text = "_".join(w.capitalize() for w in words)
    elif style == "snake":
        text = "_".join(words)
    elif style == "upper":
        text = "_".join(words).upper()
    else:
        text = "-".join(words)
    return prefix + text


@EXAMPLES
@given(st.sampled_from(arkit.ARKIT_NAMES), st.sampled_from(["camel", "pascal_underscore", "snake", "upper", "kebab"]),
       st.sampled_from(["L", "Left", "_l"]),
       st.sampled_from(["", "A01_", "blendShape1.", "Face:", "ARKit_", "bs_", "Mesh|", "B12-"]))
def test_every_arkit_name_is_found_however_a_rig_spells_it(name, style, side_style, prefix):
    spelled = _spell(name, style, side_style, prefix)
    assert arkit.arkit_name(spelled) == name, spelled


@EXAMPLES
@given(st.text(max_size=40))
def test_any_shape_key_name_is_an_arkit_name_or_none(text):
    """Whatever a rig calls its shape keys, matching answers (never raises) with one of the 52 or None."""
    assert arkit.arkit_name(text) in (None, *arkit.ARKIT_NAMES)
    assert set(arkit.match_shape_keys([text, text + ".001"]).values()) <= {text, text + ".001"}


def test_matching_a_partial_set_prefers_the_exact_spelling():
    keys = ["Basis", "A01_Brow_Inner_Up", "browInnerUp", "eyeBlink_L", "eyeBlink_R", "JawOpen", "wink", "jawOpen.001"]
    mapping = arkit.match_shape_keys(keys)
    assert mapping == {"eyeBlinkLeft": "eyeBlink_L", "eyeBlinkRight": "eyeBlink_R", "jawOpen": "JawOpen",
                       "browInnerUp": "browInnerUp"}
    assert list(mapping) == [n for n in arkit.ARKIT_NAMES if n in mapping]   # ARKit's order


def test_mappings_are_checked_and_survive_json():
    mapping = {"jawOpen": "A25_Jaw_Open", "eyeBlinkLeft": "eyeBlink_L"}
    assert arkit.read_mapping_json(arkit.mapping_json(mapping)) == {"eyeBlinkLeft": "eyeBlink_L",
                                                                   "jawOpen": "A25_Jaw_Open"}
    for bad, words in [({"jawOpenn": "x"}, "not one of ARKit's 52"), ({"jawOpen": ""}, "must be a name"),
                       ({"jawOpen": "k", "mouthClose": "k"}, "both jawOpen and mouthClose"), ([], "JSON object")]:
        with pytest.raises(arkit.ArkitError, match=words):
            arkit.check_mapping(bad)
    with pytest.raises(arkit.ArkitError, match="no shape key 'gone'"):
        arkit.check_mapping({"jawOpen": "gone"}, shape_keys=["Basis", "jaw"])
    for text, words in [("{", "not valid JSON"), ('{"format": "x"}', "not a Thunder ARKit mapping"),
                        ('{"format": "thunder-arkit-mapping", "version": 9}', "version 9"),
                        ('{"format": "thunder-arkit-mapping", "version": 1, "mapping": {"x": "y"}}', "'x' is not")]:
        with pytest.raises(arkit.ArkitError, match=words):
            arkit.read_mapping_json(text, "m.json")


# ---------------------------------------------------------------------------------------------- weights
def _parts(frames=4, seed=0, expression_names=None):
    rng = np.random.default_rng(seed)
    n = len(expression_names or [])
    return {"expression": rng.uniform(-0.3, 1.3, (frames, n)), "jaw": rng.normal(0, 0.15, (frames, 3)),
            "neck": rng.normal(0, 0.1, (frames, 3)), "eyes": rng.normal(0, 0.2, (frames, 6))}


def test_expression_components_become_their_arkit_weights(head):
    names = list(head.expression_names)
    parts = _parts(6, 1, names)
    weights = arkit.arkit_weights(parts, names)
    assert weights.shape == (6, 52) and weights.min() >= 0.0 and weights.max() <= 1.0
    for k, name in enumerate(names):
        np.testing.assert_allclose(weights[:, arkit.ARKIT_NAMES.index(name)], np.clip(parts["expression"][:, k], 0, 1))
    assert len(names) == 39 and not set(names) & set(arkit.FROM_ROTATIONS)
    assert set(names) | set(arkit.FROM_ROTATIONS) == set(arkit.ARKIT_NAMES)
    for name in ("jawForward", "tongueOut"):
        assert not weights[:, arkit.ARKIT_NAMES.index(name)].any()


@EXAMPLES
@given(st.floats(-0.4, 0.6), st.floats(0.05, 1.0))
def test_jaw_open_is_the_jaw_pitch_over_the_calibrated_angle(pitch, angle):
    parts = {"expression": np.zeros((1, 1)), "jaw": np.array([[pitch, 0.0, 0.0]]), "neck": np.zeros((1, 3)),
             "eyes": np.zeros((1, 6))}
    weights = arkit.arkit_weights(parts, ["mouthClose"], arkit.ArkitCalibration(jaw_open_angle=angle))
    assert weights[0, arkit.ARKIT_NAMES.index("jawOpen")] == pytest.approx(min(1.0, max(0.0, pitch / angle)))


def _gaze_axis_angle(yaw, pitch):
    """The axis-angle turning FLAME's forward (+z) to the gaze of `yaw` (toward the subject's left) and `pitch`
    (up), without roll: Ry(yaw) Rx(-pitch) as one rotation vector."""
    rotation = rig_math.axis_angle_to_matrix(np.array([0.0, yaw, 0.0])) @ rig_math.axis_angle_to_matrix(
        np.array([-pitch, 0.0, 0.0]))
    angle = math.acos(np.clip((np.trace(rotation) - 1) / 2, -1, 1))
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    return axis / (2 * math.sin(angle)) * angle


@EXAMPLES
@given(st.floats(-0.8, 0.8), st.floats(-0.7, 0.7))
def test_eye_look_weights_follow_the_gaze(yaw, pitch):
    """Both eyes look the same way: toward the subject's left is out for the left eye and in for the right;
    the weights are the angles over the calibrated ranges, and at most one of each opposite pair is on."""
    gaze = _gaze_axis_angle(yaw, pitch)
    parts = {"expression": np.zeros((1, 1)), "jaw": np.zeros((1, 3)), "neck": np.zeros((1, 3)),
             "eyes": np.concatenate([gaze, gaze])[None]}
    calibration = arkit.ArkitCalibration()
    w = dict(zip(arkit.ARKIT_NAMES, arkit.arkit_weights(parts, ["mouthClose"], calibration)[0]))
    side = min(1.0, abs(yaw) / calibration.eye_side_angle)
    up = min(1.0, max(0.0, pitch) / calibration.eye_up_angle)
    down = min(1.0, max(0.0, -pitch) / calibration.eye_down_angle)
    toward_left = side if yaw > 0 else 0.0
    toward_right = side if yaw < 0 else 0.0
    expected = {"eyeLookOutLeft": toward_left, "eyeLookInRight": toward_left, "eyeLookInLeft": toward_right,
                "eyeLookOutRight": toward_right, "eyeLookUpLeft": up, "eyeLookUpRight": up,
                "eyeLookDownLeft": down, "eyeLookDownRight": down}
    for name, value in expected.items():
        assert w[name] == pytest.approx(value, abs=1e-7), name
    angles = arkit.head_eye_angles(parts)[0]
    np.testing.assert_allclose(angles[3:5], [yaw, pitch], atol=1e-8)
    np.testing.assert_allclose(angles[6:8], [yaw, pitch], atol=1e-8)


def test_head_angles_name_the_turn():
    parts = {"neck": np.array([[0.0, 0.3, 0.0], [-0.2, 0.0, 0.0], [0.0, 0.0, 0.1]]), "eyes": np.zeros((3, 6))}
    angles = arkit.head_eye_angles(parts)
    np.testing.assert_allclose(angles[:, :3], [[0.3, 0, 0], [0, 0.2, 0], [0, 0, 0.1]], atol=1e-12)


def test_a_take_without_arkit_components_is_refused():
    with pytest.raises(arkit.ArkitError, match="no ARKit-named expression components"):
        arkit.arkit_weights(_parts(2, 0, ["exp000", "exp001"]), ["exp000", "exp001"])
    with pytest.raises(arkit.ArkitError, match="must be a positive angle"):
        arkit.ArkitCalibration(jaw_open_angle=0.0)


@EXAMPLES
@given(st.floats(0.02, 0.6), st.floats(-0.05, 0.05), st.floats(-0.05, 0.05), st.integers(0, 2**31))
def test_the_jaw_calibration_measures_the_turn_of_a_jaw_open_shape(angle, pivot_y, pivot_z, seed):
    """A jawOpen shape that turns the chin by `angle` about a sideways axis anywhere: the fit finds the angle,
    and says the shape is a pure turn."""
    rng = np.random.default_rng(seed)
    rest = rng.uniform(-0.1, 0.1, (300, 3))
    jaw = rest[:, 1] < 0.0   # the lower half moves
    rotation = rig_math.axis_angle_to_matrix(np.array([angle, 0.0, 0.0]))
    pivot = np.array([0.0, pivot_y, pivot_z])
    opened = rest.copy()
    opened[jaw] = (rest[jaw] - pivot) @ rotation.T + pivot
    found, residual = arkit.jaw_open_angle_of_shape(rest, opened)
    assert found == pytest.approx(angle, rel=1e-6, abs=1e-7)
    assert residual < 1e-6
    noisy = opened + rng.normal(0, 0.2 * angle * 0.05, opened.shape) * jaw[:, None]
    assert arkit.jaw_open_angle_of_shape(rest, noisy)[1] > residual


def test_the_jaw_calibration_refuses_shapes_that_do_not_turn():
    rest = np.random.default_rng(0).uniform(-0.1, 0.1, (50, 3))
    with pytest.raises(arkit.ArkitError, match="does not move"):
        arkit.jaw_open_angle_of_shape(rest, rest)


# ---------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("seconds, rate, text", [
    (0.0, 25, "00:00:00:00.000"), (1.0, 25, "00:00:01:00.000"), (0.52, 25, "00:00:00:13.000"),
    (3661.04, 25, "01:01:01:01.000"), (1.001 / 59.94 * 1.0, 60, "00:00:00:01.002"), (59.99, 60, "00:00:59:59.400"),
])
def test_live_link_timecodes(seconds, rate, text):
    assert arkit.live_link_timecode(seconds, rate) == text


@EXAMPLES
@given(st.floats(0, 86000), st.integers(1, 120))
def test_timecodes_never_overflow_their_fields(seconds, rate):
    hours, minutes, secs, rest = arkit.live_link_timecode(seconds, rate).split(":")
    frame, fraction = rest.split(".")
    assert 0 <= int(minutes) < 60 and 0 <= int(secs) < 60 and 0 <= int(frame) < rate and len(fraction) == 3
    total = int(hours) * 3600 + int(minutes) * 60 + int(secs) + (int(frame) + int(fraction) / 1000) / rate
    assert total == pytest.approx(seconds, abs=1e-3 / rate + 1e-9)


def test_the_csv_has_the_live_link_layout_and_the_takes_values(head):
    names = list(head.expression_names)
    parts = _parts(5, 3, names)
    weights, angles = arkit.arkit_weights(parts, names), arkit.head_eye_angles(parts)
    text = arkit.live_link_csv(weights, angles, 25.0, start=2.0)
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert header[:2] == ["Timecode", "BlendShapeCount"] and header[-9:] == list(arkit.HEAD_EYE_COLUMNS)
    assert header[2:54] == list(arkit.LIVE_LINK_NAMES) and len(header) == 63
    assert header[2 + 14:2 + 18] == ["JawForward", "JawRight", "JawLeft", "JawOpen"]
    assert len(rows) == 6
    for k, row in enumerate(rows[1:]):
        assert row[0] == arkit.live_link_timecode(2.0 + k / 25.0, 25) and row[1] == "61"
        values = dict(zip(header[2:], map(float, row[2:])))
        for name in arkit.LIVE_LINK_NAMES:
            assert values[name] == pytest.approx(weights[k, arkit.ARKIT_NAMES.index(name[0].lower() + name[1:])],
                                                 abs=1e-6)
        mouth_close = float(np.clip(parts["expression"][k, names.index("mouthClose")], 0, 1))
        assert values["MouthClose"] == pytest.approx(mouth_close, abs=1e-6)
        assert values["JawOpen"] == pytest.approx(float(np.clip(parts["jaw"][k, 0] / 0.30, 0, 1)), abs=1e-6)
        np.testing.assert_allclose([values[c] for c in arkit.HEAD_EYE_COLUMNS], angles[k], atol=1e-6)
    data = arkit.arkit_json(weights, angles, 25.0, 2.0)
    assert data["names"] == list(arkit.ARKIT_NAMES) and np.allclose(data["weights"], weights, atol=1e-6)
    with pytest.raises(arkit.ArkitError, match="positive number"):
        arkit.live_link_csv(weights, angles, 0.0)


def _take_of_builtin(head, frames=30, seed=0):
    parts = _parts(frames, seed, list(head.expression_names))
    parts = {name: value.astype(np.float32) for name, value in parts.items()}
    return Take(**parts, fps=25.0, seed=seed, settings={}, model={"name": "test", "hash": "0"},
                head={"name": head.name, "identity": head.identity},
                audio={"sha256": "0", "hashed": "file", "file": "voice.wav", "seconds": 3.0, "start": 0.4,
                       "end": 1.6})


def test_thunder_arkit_writes_the_csv_and_json_of_a_take(head, tmp_path, capsys):
    take = _take_of_builtin(head)
    path = save_take(tmp_path / "voice.take1.seed0.npz", take)
    assert cli.main(["arkit", str(path)]) == 0
    written = capsys.readouterr().out.split()
    csv_path, json_path = tmp_path / "voice.take1.seed0.arkit.csv", tmp_path / "voice.take1.seed0.arkit.json"
    assert written == [str(csv_path), str(json_path)]
    parts = {name: getattr(take, name).astype(np.float64) for name in ("expression", "jaw", "neck", "eyes")}
    weights = arkit.arkit_weights(parts, head.expression_names)
    rows = list(csv.reader(csv_path.open()))
    assert len(rows) == 31 and rows[1][0] == "00:00:00:10.000"   # audio second 0.4 at 25 fps
    column = rows[0].index("JawOpen")
    np.testing.assert_allclose([float(r[column]) for r in rows[1:]], weights[:, arkit.ARKIT_NAMES.index("jawOpen")],
                               atol=1e-6)
    data = json.loads(json_path.read_text())
    assert data["format"] == "thunder-arkit" and data["take"]["seed"] == 0 and data["frames"] == 30
    np.testing.assert_allclose(data["weights"], weights, atol=1e-6)
    # The backend uses the add-on's rule itself, loaded from its file.
    assert backend_arkit.__file__ == arkit.__file__ and backend_arkit.ARKIT_NAMES == arkit.ARKIT_NAMES

    # Nothing is overwritten; bad input is one sentence.
    assert cli.main(["arkit", str(path)]) == 2
    assert "already exists; Thunder does not overwrite ARKit files" in capsys.readouterr().err
    assert cli.main(["arkit", str(path), "--overwrite"]) == 0
    capsys.readouterr()
    assert cli.main(["arkit", str(tmp_path / "nothing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["arkit", str(path), "--csv", str(tmp_path / "no" / "x.csv"), "--json", str(tmp_path / "y.json")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "y.json").exists()


def test_thunder_generate_arkit_writes_each_takes_arkit_files(tiny_model, head, tmp_path, capsys):
    from generation_fixtures import write_speech

    from backend.take_file import load_take

    speech = write_speech(tmp_path / "hi.wav", 1.0)
    status = cli.main(["generate", str(speech), "--out", str(tmp_path / "out"), "--takes", "2", "--steps", "1",
                       "--checkpoint", str(tiny_model), "--device", "cpu", "--quiet", "--arkit"])
    assert status == 0, capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["hi.take1.seed0.arkit.csv", "hi.take1.seed0.arkit.json", "hi.take1.seed0.npz",
                     "hi.take2.seed1.arkit.csv", "hi.take2.seed1.arkit.json", "hi.take2.seed1.npz"]
    assert sorted(capsys.readouterr().out.split()) == sorted(str(tmp_path / "out" / n) for n in names)
    take = load_take(tmp_path / "out" / "hi.take2.seed1.npz")
    rows = list(csv.reader((tmp_path / "out" / "hi.take2.seed1.arkit.csv").open()))
    assert len(rows) == take.n_frames + 1
    blink = rows[0].index("EyeBlinkLeft")
    np.testing.assert_allclose([float(r[blink]) for r in rows[1:]],
                               np.clip(take.expression[:, list(head.expression_names).index("eyeBlinkLeft")], 0, 1),
                               atol=1e-6)
    # Again: the ARKit files (and takes) exist, so nothing is written.
    assert cli.main(["generate", str(speech), "--out", str(tmp_path / "out"), "--takes", "2", "--steps", "1",
                     "--checkpoint", str(tiny_model), "--device", "cpu", "--quiet", "--arkit"]) == 1
    assert "already exists" in capsys.readouterr().err
