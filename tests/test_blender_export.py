"""Exporting takes (thunder_blender/export.py), proved by reading every file back.

The built-in head and two synthetic takes (nonzero expression, jaw, neck and eyes) are made here with the
backend; tests/export_scene_script.py builds and keys them in a Blender of its own (a subprocess: Blender
keeps global state), exports every take as FBX, Alembic and USD, and reads the FBX and Alembic files back
through Blender. USD is read here with pxr. Runs on this environment's bpy and on every Blender Python in
THUNDER_BLENDER_PYTHONS (tests/blender_harness.py).

    FBX       shape-key values = the take's expression and pose correctives, at the take's own frames;
              bone rotations = the take's jaw, neck and eyes
    Alembic   vertices = Blender's evaluated mesh = the backend's FLAME mesh (turned to z-up)
    USD       blend-shape weights = the take's expression and correctives, at time codes = frames;
              joint rotations = the take's
"""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from backend import lbs
from backend.head import head_mesh_arrays
from backend.take_file import Take, save_take, take_vertices
from blender_harness import blender_pythons, python_id
from export_readback import usd_blendshape_weights, usd_joint_rotations

SCRIPT = Path(__file__).resolve().parent / "export_scene_script.py"
FPS = 25
FRAME_START = {"a": 11, "b": 40}
FRAMES = {"a": 15, "b": 9}
HEAD_NAME = "Thunder head"   # head_build's default object name
FILE_STEMS = ["Thunder_head_Take_1", "Thunder_head_Take_2_loud_soft"]   # "Take 2: loud/soft?", made safe


def synthetic_take(head, frames: int, seed: int) -> Take:
    """Smooth, signed, nonzero motion in every part."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / FPS
    n = head.n_expression
    expression = rng.uniform(0.3, 1.8, (1, n)) * np.sin(2 * np.pi * rng.uniform(0.5, 2.0, (1, n)) * t
                                                         + rng.uniform(0, 2 * np.pi, (1, n)))
    jaw = np.column_stack([0.12 + 0.1 * np.sin(2 * np.pi * 2.0 * t[:, 0]), 0.03 * np.sin(2 * np.pi * t[:, 0]),
                           0.02 * np.cos(2 * np.pi * t[:, 0])])
    neck = 0.12 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5, (1, 3)) * t + rng.uniform(0, 6, (1, 3)))
    eyes = 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5, (1, 6)) * t + rng.uniform(0, 6, (1, 6)))
    seconds = frames / FPS
    return Take(expression.astype(np.float32), jaw.astype(np.float32), neck.astype(np.float32),
                eyes.astype(np.float32), float(FPS), seed, {"emotion": "neutral", "steps": 1},
                {"name": "synthetic", "hash": "none"}, {"name": head.name, "identity": head.identity},
                {"sha256": "none", "hashed": "samples", "file": None, "seconds": seconds, "start": 0.0,
                 "end": seconds})


def unwritable_folder(tmp_path) -> Path:
    """A folder that cannot be made: under a read-only folder, or (root writes there anyway) under /sys."""
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        (locked / "probe").touch()
    except PermissionError:
        return locked / "export"
    (locked / "probe").unlink()
    return Path("/sys/thunder_export_test/export")


def run_script(python, work: Path, timeout=300) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST_", "BLENDER_USER_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1",
               BLENDER_USER_RESOURCES=str(work / "blender_user"))
    process = subprocess.Popen([python, str(SCRIPT), str(work)], cwd=work, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{SCRIPT.name} ran past {timeout} s on {python}:\n{output[-6000:]}", pytrace=False)
    (work / "script.log").write_text(output)
    if process.returncode != 0 or "THUNDER_RESULT done" not in output:
        pytest.fail(f"{SCRIPT.name} failed on {python} (status {process.returncode}):\n{output[-6000:]}",
                    pytrace=False)
    return output


@pytest.fixture(scope="module", params=blender_pythons(), ids=python_id)
def exported(request, head, tmp_path_factory):
    """Run the export script once per Blender; the takes, what it reported and what it read back."""
    work = tmp_path_factory.mktemp("export")
    np.savez(work / "head.npz", **head_mesh_arrays(head))
    info = {"name": head.name, "identity": head.identity, "source": "builtin",
            "joint_names": list(head.joint_names), "expression_names": list(head.expression_names),
            "face_region_names": list(head.face_region_names or [])}
    (work / "info.json").write_text(json.dumps(info))
    made = {"a": synthetic_take(head, FRAMES["a"], 5), "b": synthetic_take(head, FRAMES["b"], 6)}
    for key, take in made.items():
        save_take(work / f"take_{key}.npz", take)
    args = {"fps": FPS, "frame_start_a": FRAME_START["a"], "frame_start_b": FRAME_START["b"],
            "unwritable": str(unwritable_folder(work))}
    (work / "args.json").write_text(json.dumps(args))
    run_script(request.param, work)
    result = json.loads((work / "result.json").read_text())
    with np.load(work / "readback.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    return {"work": work, "takes": [made["a"], made["b"]], "result": result, "arrays": arrays, "info": info}


# ---------------------------------------------------------------------------------------------- expectations
def corrective_names(joint_names):
    return [f"pose.{joint}.{row}{col}" for joint in joint_names[1:] for row in range(3) for col in range(3)]


def take_pose(take) -> np.ndarray:
    """(T, 5, 3) axis-angle: root (zero), neck, jaw, left eye, right eye."""
    pose = np.zeros((take.n_frames, 5, 3))
    pose[:, 1], pose[:, 2], pose[:, 3:5] = take.neck, take.jaw, take.eyes.reshape(-1, 2, 3)
    return pose


def expected_shape_values(take, info) -> dict:
    """{shape key name: (T,)}: the expression, and the pose correctives computed by the backend's FLAME layer."""
    pose = torch.from_numpy(take_pose(take))
    rotations = lbs.axis_angle_to_matrix(pose.reshape(-1, 3)).reshape(take.n_frames, -1, 3, 3)
    correctives = lbs.pose_corrective_features(rotations).numpy()
    values = {name: take.expression[:, k].astype(np.float64) for k, name in enumerate(info["expression_names"])}
    values.update({name: correctives[:, k] for k, name in enumerate(corrective_names(info["joint_names"]))})
    return values


def quaternions(axis_angle: np.ndarray) -> np.ndarray:
    """(T, 3) axis-angle to (T, 4) unit quaternions w, x, y, z."""
    angle = np.linalg.norm(axis_angle, axis=1, keepdims=True)
    axis = np.divide(axis_angle, angle, out=np.zeros_like(axis_angle), where=angle > 0)
    return np.column_stack([np.cos(angle[:, 0] / 2), axis * np.sin(angle / 2)])


def quaternion_error(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference between two quaternion sequences, q and -q being the same rotation."""
    return float(np.minimum(np.abs(a - b).max(axis=1), np.abs(a + b).max(axis=1)).max())


def expected_bone_rotations(take) -> dict:
    pose = take_pose(take)
    return {joint: quaternions(pose[:, j]) for j, joint in enumerate(["global", "neck", "jaw", "eye_left",
                                                                       "eye_right"])}


def usd_name(name: str) -> str:
    """A shape key's name as a USD prim name (Blender replaces what USD names cannot hold)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def readback(arrays, prefix: str, kind: str) -> dict:
    names = {key.split("|")[2] for key in arrays if key.startswith(f"{prefix}|{kind}|")}
    return {name: (arrays[f"{prefix}|{kind}|{name}|frames"], arrays[f"{prefix}|{kind}|{name}|values"])
            for name in names}


def exported_paths(exported, suffix):
    return [Path(p) for p in exported["result"]["paths"] if p.endswith(suffix)]


# ---------------------------------------------------------------------------------------------- tests
def test_every_take_in_every_format_with_safe_names(exported):
    result = exported["result"]
    expected = sorted(f"{stem}.{ext}" for stem in FILE_STEMS for ext in ("fbx", "abc", "usd"))
    assert result["file_names"] == expected
    assert sorted(Path(p).name for p in result["paths"]) == expected
    assert all(size > 10_000 for size in result["sizes"]), result["sizes"]
    assert [Path(p).name for p in result["playing_only"]] == [f"{FILE_STEMS[1]}.usd"]   # take 2 plays
    # Names that come out the same (ignoring case) are told apart; nothing starts with a dot.
    assert result["planned"] == ["Thunder_head_Take_1.fbx", "Thunder_head_take_1_2.fbx", "Thunder_head_Take_1_3.fbx",
                                 "Thunder_head.fbx", "Thunder_head_CON.fbx"]


def test_exports_leave_the_scene_as_it_was(exported):
    result = exported["result"]
    before = result["state_before"]
    assert before["selected"] == ["Bystander"] and before["active"] == "Bystander"
    assert (before["frame_start"], before["frame_end"], before["frame_current"]) == (1, 250, 7)
    assert before["active_take"] == 1 and before["keys_playing"][0].startswith(f"{HEAD_NAME} Take 2")
    for moment in ("state_after", "state_after_playing_only", "state_before_failures", "state_after_failures",
                   "state_after_readback"):
        assert result[moment] == before, moment


def test_fbx_shape_keys_are_the_take(exported):
    worst = 0.0
    for index, take in enumerate(exported["takes"]):
        start = FRAME_START["ab"[index]]
        shapes = readback(exported["arrays"], f"fbx{index}", "shape")
        expected = expected_shape_values(take, exported["info"])
        assert set(shapes) == set(expected)
        assert len(expected) == len(exported["info"]["expression_names"]) + 36
        for name, values in expected.items():
            frames, read = shapes[name]
            np.testing.assert_array_equal(frames, start + np.arange(take.n_frames), err_msg=name)
            assert np.abs(values).max() > 0 or name.startswith("pose.")
            worst = max(worst, float(np.abs(read - values).max()))
        assert np.abs(take.expression).max() > 1.0   # the signed weights beyond Blender's default 0..1 survive
    assert worst < 1e-4, worst
    print(f"FBX shape keys: max error {worst:.2e}")


def test_fbx_bones_are_the_take(exported):
    worst = 0.0
    for index, take in enumerate(exported["takes"]):
        start = FRAME_START["ab"[index]]
        bones = readback(exported["arrays"], f"fbx{index}", "bone")
        for joint, rotations in expected_bone_rotations(take).items():
            frames, read = bones[joint]
            np.testing.assert_array_equal(frames, start + np.arange(take.n_frames), err_msg=joint)
            worst = max(worst, quaternion_error(read, rotations))
        jaw_angle = 2 * np.degrees(np.arccos(np.clip(np.abs(bones["jaw"][1][:, 0]), 0, 1)))
        assert jaw_angle.max() > 5.0   # the jaw really opens in the file
    assert worst < 1e-4, worst
    print(f"FBX bone rotations: max error {worst:.2e}")


def test_alembic_vertices_are_blenders_mesh_and_the_backends(exported, head):
    arrays, take = exported["arrays"], exported["takes"][0]
    np.testing.assert_array_equal(arrays["blender_frames0"], FRAME_START["a"] + np.arange(take.n_frames))
    alembic, blender = arrays["abc0"], arrays["blender0"]
    assert alembic.shape == blender.shape == (take.n_frames, head.n_vertices, 3)
    error = float(np.abs(alembic - blender).max())
    assert error < 1e-4, error
    # Blender's world is FLAME's y-up turned 90 degrees about x: (x, y, z) -> (x, -z, y).
    flame = take_vertices(take, head).astype(np.float64)
    backend_world = np.stack([flame[..., 0], -flame[..., 2], flame[..., 1]], axis=-1)
    backend_error = float(np.abs(alembic - backend_world).max())
    assert backend_error < 1e-4, backend_error
    motion = float(np.abs(alembic - alembic[:1]).max())
    assert motion > 1e-3, motion   # the frames differ: the file is animated, not one pose repeated
    print(f"Alembic: max error {error:.2e} against Blender, {backend_error:.2e} against the backend; "
          f"motion {motion:.3f} m")


def test_usd_blend_shape_weights_and_joints_are_the_take(exported):
    from pxr import Usd

    worst = worst_joint = 0.0
    for index, take in enumerate(exported["takes"]):
        start = FRAME_START["ab"[index]]
        path = exported_paths(exported, ".usd")[index]
        assert Usd.Stage.Open(str(path)).GetTimeCodesPerSecond() == FPS
        weights = usd_blendshape_weights(path)
        expected = {usd_name(name): values for name, values in expected_shape_values(take, exported["info"]).items()}
        assert set(weights) == set(expected)
        for name, values in expected.items():
            times, read = weights[name]
            np.testing.assert_array_equal(times, start + np.arange(take.n_frames), err_msg=name)
            worst = max(worst, float(np.abs(read - values).max()))
        joints = usd_joint_rotations(path)
        for joint, rotations in expected_bone_rotations(take).items():
            times, read = joints[joint]
            np.testing.assert_array_equal(times, start + np.arange(take.n_frames), err_msg=joint)
            worst_joint = max(worst_joint, quaternion_error(read, rotations))
    assert worst < 1e-5, worst
    assert worst_joint < 1e-5, worst_joint
    print(f"USD: blend-shape weights max error {worst:.2e}, joint rotations {worst_joint:.2e}")


def test_refusals_are_sentences_and_nothing_is_replaced(exported):
    result, work = exported["result"], exported["work"]
    errors = result["errors"]
    for name, error in errors.items():
        assert error["type"] == "ExportError", (name, error)
        message = error["message"]
        assert "\n" not in message and "Traceback" not in message and len(message) < 400, (name, message)
    assert "already exist" in errors["again"]["message"] and FILE_STEMS[0] in errors["again"]["message"]
    assert result["untouched_after_again"]
    assert "already exists" in errors["existing_file"]["message"]
    assert result["keep_bytes"] == "the user's own file"
    assert result["keep_shape_keys_after_overwrite"] == len(exported["info"]["expression_names"]) + 36
    assert errors["folder_is_file"]["message"] == \
        f"the export folder {work / 'a_file'} cannot be written: it is a file, not a folder"
    assert errors["folder_under_file"]["message"].startswith(
        f"the export folder {work / 'a_file' / 'sub'} cannot be written: ")
    unwritable = json.loads((work / "args.json").read_text())["unwritable"]
    assert errors["unwritable_folder"]["message"].startswith(f"the export folder {unwritable} cannot be written: ")
    assert "must" in errors["wrong_suffix"]["message"] and "obj" in errors["unknown_format"]["message"]
    assert "no take number 6" in errors["no_such_take"]["message"]
    for fmt, label in (("fbx", "FBX"), ("abc", "Alembic"), ("usd", "USD")):
        message = errors[f"exporter_fails_{fmt}"]["message"]
        assert message.startswith(f"the {label} export to {work / 'failing'}"), message
    assert not (work / "missing").exists()
