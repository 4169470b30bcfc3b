"""Blender test cases, each run in its own process inside a Blender Python (bpy and numpy, no torch).

    python tests/blender_cases.py CASE WORK_DIR JSON_ARGS

tests/blender_harness.py (run_in_blender) starts this script with an isolated BLENDER_USER_RESOURCES,
so extensions install under WORK_DIR and never into the real user's Blender. main() factory-resets
Blender, runs the case, prints its result as the last line `THUNDER_RESULT {json}`, disables every
extension the case enabled, and leaves with os._exit (Blender can hang at exit with classes registered).

A case is a function `(work_dir: Path, args: dict) -> dict | None` decorated with @case; the harness
passes args as JSON (paths as strings: args["zip"] is the extension zip the extension_zip fixture built).
Use install_extension() and check() below. This module must run in Blender's own Python, so it imports
bpy, numpy and the standard library only: torch, backend, training and the repository's thunder_blender
are blocked (the add-on under test is the one installed from the zip).
"""

import importlib
import importlib.abc
import json
import os
import sys
import traceback
import zipfile
from pathlib import Path

BLOCKED = frozenset({"torch", "backend", "training", "thunder_blender"})
ADDON_ID = "thunder"
REPO = "user_default"
MODULE = f"bl_ext.{REPO}.{ADDON_ID}"
CASES = {}


class _BlockImports(importlib.abc.MetaPathFinder):
    """Refuse the packages Blender's own Python does not have (or must not take from the repository)."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name!r} is not available inside Blender's Python (blocked by {__file__})")
        return None


def _isolate():
    sys.meta_path.insert(0, _BlockImports())
    repo_root = Path(__file__).resolve().parents[1]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != repo_root]


_isolate()

import bpy  # noqa: E402  (after the import blocker, on purpose)
import numpy as np  # noqa: E402


def case(function):
    """Register a case under its function's name."""
    CASES[function.__name__] = function
    return function


def check(condition, message):
    """Fail the case with message (an AssertionError, whose traceback the harness shows)."""
    if not condition:
        raise AssertionError(message)


def install_extension(zip_path, enable=True):
    """Install the extension zip into the isolated user repository, enable it, and return its module
    (bl_ext.user_default.thunder)."""
    zip_path = Path(zip_path)
    check(zip_path.is_file(), f"no extension zip at {zip_path}")
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo=REPO,
                                                      enable_on_install=enable)
    check(result == {"FINISHED"}, f"package_install_files({zip_path}) returned {result}")
    return importlib.import_module(MODULE)


def addon_enabled(module=MODULE):
    return module in bpy.context.preferences.addons


def addon_preferences(module=MODULE):
    """The add-on's AddonPreferences instance (None when the add-on has none)."""
    addon = bpy.context.preferences.addons.get(module)
    check(addon is not None, f"{module} is not enabled")
    return addon.preferences


def disable_extensions():
    """Disable every extension (bl_ext.*) that is enabled; return the modules disabled."""
    modules = [name for name in bpy.context.preferences.addons.keys() if name.startswith("bl_ext.")]
    for module in modules:
        bpy.ops.preferences.addon_disable(module=module)
    return modules


def _under(path, folder):
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _real_user_files():
    """Files named like the add-on in the real user's Blender folders, with their modification times."""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "blender"
    found = {}
    for pattern in ("*/extensions/**/*", "*/scripts/addons/**/*"):
        for path in config.glob(pattern) if config.is_dir() else []:
            if ADDON_ID in str(path.relative_to(config)).lower():
                found[str(path)] = path.stat().st_mtime_ns
    return found


@case
def install(work_dir, args):
    """Install the zip in the isolated user folder, check the add-on and its preferences, disable it."""
    user_resources = Path(os.environ["BLENDER_USER_RESOURCES"])
    check(_under(user_resources, work_dir), f"BLENDER_USER_RESOURCES={user_resources} is not under {work_dir}")
    extensions_dir = Path(bpy.utils.user_resource("EXTENSIONS"))
    check(_under(extensions_dir, user_resources),
          f"Blender's user extensions folder {extensions_dir} is not under {user_resources}")
    before = _real_user_files()

    module = install_extension(args["zip"])
    check(module.__name__ == MODULE, f"the add-on's module is {module.__name__}, expected {MODULE}")
    check(addon_enabled(), f"{MODULE} is not in preferences.addons after install: "
                           f"{list(bpy.context.preferences.addons.keys())}")

    preferences = addon_preferences()
    check(preferences is not None, "the add-on has no AddonPreferences")
    names = [p.identifier for p in preferences.bl_rna.properties if p.identifier not in ("rna_type", "bl_idname")]
    for name in ("backend_python", "flame_model"):
        check(name in names, f"AddonPreferences has no {name!r}: {names}")

    installed = Path(module.__file__).resolve().parent
    check(_under(installed, extensions_dir / REPO), f"installed at {installed}, not under {extensions_dir / REPO}")
    with zipfile.ZipFile(args["zip"]) as archive:
        members = [n for n in archive.namelist() if not n.endswith("/")]
    missing = [n for n in members if not (installed / n).is_file()]
    check(not missing, f"files of the zip not installed under {installed}: {missing}")
    after = _real_user_files()
    check(after == before, f"the install touched the real user's Blender folder: "
                           f"{sorted(set(after.items()) ^ set(before.items()))}")

    preferences_class = type(preferences)
    result = bpy.ops.preferences.addon_disable(module=MODULE)
    check(result == {"FINISHED"}, f"addon_disable returned {result}")
    check(not addon_enabled(), f"{MODULE} is still enabled after addon_disable")
    check(not preferences_class.is_registered, "the AddonPreferences class is still registered after disable")
    return {"module": module.__name__, "installed_dir": str(installed), "files": sorted(members),
            "preferences": names, "bpy": bpy.app.version_string}


# ---------------------------------------------------------------------------------------------- the add-on at work
def add_sound_strip(scene, name, wav, frame, trim_start=0, channel=1):
    """A sound strip of `wav` whose content starts at `frame`, with its first `trim_start` frames trimmed."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strip = editor.strips.new_sound(name, str(wav), channel, frame)
    if trim_start:
        if hasattr(strip, "left_handle"):       # 5.2
            strip.left_handle = frame + trim_start
        else:
            strip.frame_final_start = frame + trim_start
    return strip


def key_values(action, id_type):
    """{(data_path, index): (frames, values)} of the slot of `id_type` in `action` (slotted actions)."""
    slot = next(s for s in action.slots if s.target_id_type == id_type)
    curves = action.layers[0].strips[0].channelbag(slot).fcurves
    result = {}
    for curve in curves:
        co = np.empty(len(curve.keyframe_points) * 2, dtype=np.float32)
        curve.keyframe_points.foreach_get("co", co)
        result[(curve.data_path, curve.array_index)] = (co[0::2].astype(np.float64), co[1::2].astype(np.float64))
    return result


def check_take_keys(head, item, strip_first_frame):
    """The take's keys: one per frame from the strip's first playing frame, values equal to its take file."""
    with np.load(item.file, allow_pickle=False) as take:
        expression, jaw = take["expression"].astype(np.float64), take["jaw"].astype(np.float64)
    names = list(head.data["thunder_expression_names"])
    key = key_values(item.action, "KEY")
    check(len(key) == len(names) + 36, f"{len(key)} shape-key curves, expected {len(names)} + 36")
    for k, name in enumerate(names):
        frames, values = key[(f'key_blocks["{name}"].value', 0)]
        check(len(frames) == len(expression), f"{name}: {len(frames)} keys for {len(expression)} frames")
        check(abs(frames[0] - strip_first_frame) < 1e-4, f"{name}: first key at {frames[0]}, not {strip_first_frame}")
        check(np.allclose(np.diff(frames), 1.0), f"{name}: keys are not one per frame")
        check(np.abs(values - expression[:, k]).max() < 1e-5, f"{name}: keyed values differ from the take file")
    bones = key_values(item.action, "OBJECT")
    jaw_keys = np.stack([bones[('pose.bones["jaw"].rotation_quaternion', i)][1] for i in range(4)], -1)
    # rig_math's conversion is checked against the backend's rotations in tests/test_rig_math.py.
    quaternions = importlib.import_module(f"{MODULE}.rig_math").axis_angle_to_quaternion(jaw)
    check(np.abs(jaw_keys - quaternions).max() < 1e-5, "the jaw's keyed rotation differs from the take")
    return len(expression)


def shape_key_value_now(head, name):
    return head.thunder.mesh.data.shape_keys.key_blocks[name].value


@case
def end_to_end(work_dir, args):
    """Install; a sound strip from a WAV (offset and trimmed); the built-in head (with args["flame"], the head of
    that FLAME file, set in the preferences); 2 takes with the real backend and shipped model; keys equal the take files; resample; switch takes; export FBX, Alembic and USD and
    read FBX and Alembic back (USD is read back by the test, with pxr)."""
    from export_readback import alembic_vertices, fbx_shape_key_curves

    thunder = install_extension(args["zip"])
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    strip = add_sound_strip(scene, "voice", args["wav"], frame=10, trim_start=6)
    if args.get("flame"):   # a FLAME file's head, retargeted by the backend: keyed like the built-in head
        addon_preferences().flame_model = args["flame"]
        head = thunder.api.add_head("flame")
    else:
        head = thunder.api.add_head()
    head_name = head.name
    check(head.thunder.is_head and head.type == "ARMATURE", "add_head did not make a Thunder head")
    mesh = head.thunder.mesh
    check(len(mesh.data.shape_keys.key_blocks) == 1 + len(head.data["thunder_expression_names"]) + 36,
          "the head does not have one shape key per expression component plus 36 correctives")
    check(min(b.slider_min for b in mesh.data.shape_keys.key_blocks[1:]) <= -10, "slider ranges are not widened")
    check({g.name for g in mesh.vertex_groups} == {b.name for b in head.data.bones}, "vertex groups != bones")

    names = thunder.api.generate(head, strip=strip.name, takes=2, seed=5)
    thunder_head = head.thunder
    check(names == ["Take 1", "Take 2"] and len(thunder_head.takes) == 2, f"generate made {names}")
    check([t.seed for t in thunder_head.takes] == [5, 6], "the takes' seeds are not 5 and 6")
    check(all(Path(t.audio) == Path(args["wav"]) for t in thunder_head.takes), "the takes do not record their audio")
    frames = [check_take_keys(head, item, 16.0) for item in thunder_head.takes]
    check(all(item.action.use_fake_user for item in thunder_head.takes), "take actions have no fake user")
    check(scene.frame_end >= 16 + frames[0] - 1, "the scene's range does not reach the end of the take")

    # The emotion menu offers what the loaded model knows.
    model_emotions = thunder.session.manager().backend_info["model"]["emotions"]
    offered = [item[0] for item in thunder.properties.emotion_items(scene.thunder, bpy.context)]
    check(offered == model_emotions and "neutral" in offered, f"emotions offered {offered}, model {model_emotions}")

    # The panel draws (headless, through a recording layout) with the takes listed.
    drawn = draw_panel_headless(thunder)
    for element in (("operator", "thunder.generate"), ("operator", "thunder.resample"), ("operator", "thunder.export"),
                    ("template_list", "takes"), ("prop_search", "strip"), ("label", "Backend: ready")):
        check(element in drawn, f"the panel does not draw {element}: {drawn}")

    # Switch takes: the shape-key values follow the action that plays.
    probe = list(head.data["thunder_expression_names"]).index("jawOpen") \
        if "jawOpen" in head.data["thunder_expression_names"] else 0
    probe_name = head.data["thunder_expression_names"][probe]
    frame = 16 + frames[0] // 2
    played = {}
    for index in (0, 1, 0):
        thunder.api.activate_take(head, index)
        scene.frame_set(frame)
        with np.load(thunder_head.takes[index].file, allow_pickle=False) as take:
            want = float(take["expression"][frame - 16, probe])
        got = shape_key_value_now(head, probe_name)
        check(abs(got - want) < 1e-5, f"take {index + 1} at frame {frame}: {probe_name} = {got}, take file {want}")
        played[index] = got
    check(abs(played[0] - played[1]) > 1e-6, "the two takes play the same values")
    probe_frames = list(range(16, 16 + frames[0])) if args.get("every_frame") else [16, frame, 16 + frames[0] - 1]
    mesh_vertices = evaluated_vertices(mesh, probe_frames)

    # Resample: keep take 1, the other gets a new seed; the kept take is untouched.
    thunder.api.keep_take(head, 0)
    kept_action = thunder_head.takes[0].action.name
    thunder.api.resample(head)
    check(len(thunder_head.takes) == 2, f"{len(thunder_head.takes)} takes after resample")
    check(thunder_head.takes[0].action.name == kept_action and thunder_head.takes[0].seed == 5, "the kept take changed")
    check(thunder_head.takes[1].seed not in (5, 6), f"resample reused seed {thunder_head.takes[1].seed}")
    check_take_keys(head, thunder_head.takes[1], 16.0)
    take_actions = [a.name for a in bpy.data.actions if a.get("thunder_take")]
    check(len(take_actions) == 2, f"the replaced take's action was not removed: {take_actions}")

    # Export the active take to all three formats and read FBX and Alembic back.
    thunder.api.activate_take(head, 0)
    paths = thunder.api.export(head, str(work_dir / "export"), formats=("fbx", "abc", "usd"))
    by_format = {Path(p).suffix.lstrip("."): str(p) for p in paths}
    check(set(by_format) >= {"fbx", "abc", "usd"}, f"export wrote {paths}")
    with np.load(thunder_head.takes[0].file, allow_pickle=False) as take:
        expression = take["expression"].astype(np.float64)
    expression_names = list(head.data["thunder_expression_names"])
    fbx_curves = fbx_shape_key_curves(by_format["fbx"])
    worst = 0.0
    for k, name in enumerate(expression_names):
        fbx_frames, values = fbx_curves[name]
        at = {int(round(f)): v for f, v in zip(fbx_frames, values)}
        worst = max(worst, max(abs(at[16 + t] - expression[t, k]) for t in range(len(expression))))
    check(worst < 1e-4, f"FBX shape-key values differ from the take by {worst}")
    abc = alembic_vertices(by_format["abc"], probe_frames, 24.0)
    abc_error = float(np.abs(np.asarray(abc) - mesh_vertices["world"]).max())
    check(abc_error < 1e-4, f"Alembic vertices differ from Blender's by {abc_error} m")
    result = {"takes": [{"file": t.file, "seed": t.seed, "frame_start": t.frame_start} for t in thunder_head.takes],
            "exports": by_format, "fbx_error": worst, "abc_error": abc_error, "frames": frames,
            "probe_frames": probe_frames, "mesh_local": mesh_vertices["local_file"],
            "expression_names": list(head.data["thunder_expression_names"]), "identity": head.thunder.identity,
            "bpy": bpy.app.version_string}

    # Undo after Generate takes the new takes away; redo brings them back (objects are new Python objects
    # after an undo: look them up again).
    bpy.ops.ed.undo_push(message="before generate")
    thunder.api.generate(head, strip=strip.name, takes=1, seed=40)
    check(len(head.thunder.takes) == 3, "a third take was not added")
    bpy.ops.ed.undo()
    check(len(bpy.data.objects[head_name].thunder.takes) == 2, "undo did not remove the generated take")
    bpy.ops.ed.redo()
    check(len(bpy.data.objects[head_name].thunder.takes) == 3, "redo did not bring the take back")
    return result


# ---------------------------------------------------------------------------------------------- ARKit characters
# The character's 20 ARKit shapes (a partial set), spelled as some other rig spells them.
CHARACTER_SHAPES = {
    "jawOpen": "A25_Jaw_Open", "mouthClose": "A26_Mouth_Close", "mouthFunnel": "blendShape1.mouthFunnel",
    "mouthPucker": "blendShape1.mouthPucker", "mouthSmileLeft": "Mouth_Smile_L", "mouthSmileRight": "Mouth_Smile_R",
    "mouthPressLeft": "mouth_press_left", "mouthPressRight": "mouth_press_right", "eyeBlinkLeft": "eyeBlink_L",
    "eyeBlinkRight": "eyeBlink_R", "eyeLookUpLeft": "EyeLookUpLeft", "eyeLookDownLeft": "EyeLookDownLeft",
    "eyeLookInRight": "EyeLookIn_R", "eyeLookOutRight": "EyeLookOut_R", "browInnerUp": "A01_Brow_Inner_Up",
    "browDownLeft": "A02_Brow_Down_Left", "browDownRight": "A03_Brow_Down_Right", "cheekPuff": "CheekPuff",
    "mouthLowerDownLeft": "MouthLowerDown_L", "jawLeft": "JAW_LEFT",
}
CHARACTER_JAW_ANGLE = 0.25   # the turn the character's own jawOpen shape makes


def _make_character(scene):
    """A character that is not the built-in head: a UV sphere with 20 ARKit shape keys in other spellings (its
    jawOpen turns the lower half by CHARACTER_JAW_ANGLE about a sideways axis), two keys that are not ARKit's,
    and an armature (rotated, away from the origin) whose bones point every which way."""
    import math

    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.1, segments=24, ring_count=12, location=(0.0, 0.0, 0.0))
    mesh = bpy.context.active_object
    mesh.name = "Sphere character"
    rest = np.empty(len(mesh.data.vertices) * 3, dtype=np.float32)
    mesh.data.vertices.foreach_get("co", rest)
    rest = rest.reshape(-1, 3).astype(np.float64)
    mesh.shape_key_add(name="Basis", from_mix=False)
    rng = np.random.default_rng(3)
    for number, (name, key) in enumerate(list(CHARACTER_SHAPES.items()) + [("", "Wink"), ("", "Key 7")]):
        block = mesh.shape_key_add(name=key, from_mix=False)
        if name == "jawOpen":
            lower = rest[:, 2] < 0.0
            c, s = math.cos(CHARACTER_JAW_ANGLE), math.sin(CHARACTER_JAW_ANGLE)
            pivot = np.array([0.0, 0.03, 0.01])
            moved = rest.copy()
            rel = rest[lower] - pivot
            moved[lower] = pivot + np.column_stack([rel[:, 0], c * rel[:, 1] - s * rel[:, 2], s * rel[:, 1] + c * rel[:, 2]])
        else:
            moved = rest + rng.normal(0, 0.004, rest.shape) * (rng.random(len(rest)) < 0.3)[:, None]
        block.data.foreach_set("co", moved.astype(np.float32).ravel())
    check(bpy.data.objects.get("Sphere character").data.shape_keys.key_blocks[CHARACTER_SHAPES["jawOpen"]].name
          == "A25_Jaw_Open", "the jawOpen shape key is missing")

    armature = bpy.data.armatures.new("Character rig")
    rig = bpy.data.objects.new("Character rig", armature)
    scene.collection.objects.link(rig)
    rig.location = (0.5, 0.2, 0.0)
    rig.rotation_euler = (0.0, 0.0, 0.3)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    bones = {}
    for name, head, tail, roll, parent in (("root", (0, 0, -0.2), (0, 0, -0.1), 0.0, None),
                                           ("head", (0, 0, -0.05), (0, 0, 0.12), 0.4, "root"),
                                           ("jaw", (0, 0.02, -0.01), (0, -0.06, -0.05), 1.1, "head"),
                                           ("eye.L", (0.03, -0.08, 0.03), (0.03, -0.1, 0.03), 0.0, "head"),
                                           ("eye.R", (-0.03, -0.08, 0.03), (-0.05, -0.1, 0.04), -0.7, "head")):
        bone = armature.edit_bones.new(name)
        bone.head, bone.tail, bone.roll = head, tail, roll
        if parent:
            bone.parent = bones[parent]
        bones[name] = bone
    bpy.ops.object.mode_set(mode="OBJECT")
    mesh.parent = rig
    mesh.matrix_parent_inverse = rig.matrix_world.inverted()
    group = mesh.vertex_groups.new(name="head")
    group.add(list(range(len(mesh.data.vertices))), 1.0, "REPLACE")
    mesh.modifiers.new("Armature", "ARMATURE").object = rig
    return mesh, rig


def _rotation_matrix(axis_angle):
    import mathutils

    axis_angle = np.asarray(axis_angle, dtype=np.float64)
    angle = float(np.linalg.norm(axis_angle))
    if angle < 1e-12:
        return np.eye(3)
    return np.array(mathutils.Matrix.Rotation(angle, 3, mathutils.Vector(axis_angle / angle)))


def _world_turn(axis_angle):
    """A take's rotation (FLAME's frame) as a turn in Blender's world, for a character facing -y with z up."""
    flame_to_world = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    return flame_to_world @ _rotation_matrix(axis_angle) @ flame_to_world.T


def compat_curves(mesh):
    from export_readback import _fcurves

    return _fcurves(mesh.data.shape_keys)


def _take_parts(head, index):
    """(parts, expression names) of take `index` of `head`, from its take file."""
    with np.load(head.thunder.takes[index].file, allow_pickle=False) as npz:
        parts = {name: npz[name].astype(np.float64) for name in ("expression", "jaw", "neck", "eyes")}
    return parts, list(head.data["thunder_expression_names"])


def _check_character_plays(thunder, head, mesh, rig, index, frames, strength):
    """At `frames` of take `index` (it plays): every mapped shape key holds the take's ARKit weight (the 39
    expression weights checked against the take file directly, the rest through the add-on's arkit rule, which
    tests/test_arkit.py checks), and the bones turn as the take turns in the world."""
    arkit = importlib.import_module(f"{MODULE}.arkit")
    item = head.thunder.takes[index]
    with np.load(item.file, allow_pickle=False) as npz:
        parts = {name: npz[name].astype(np.float64) for name in ("expression", "jaw", "neck", "eyes")}
    names = list(head.data["thunder_expression_names"])
    binding = mesh.thunder_character
    weights = arkit.arkit_weights(parts, names, arkit.ArkitCalibration(jaw_open_angle=binding.jaw_open_angle))
    keys = mesh.data.shape_keys.key_blocks
    scene = bpy.context.scene
    worst = 0.0
    armature_world = np.array(rig.matrix_world.to_3x3().normalized())
    for frame in frames:
        scene.frame_set(int(item.frame_start) + frame)
        for name, key in CHARACTER_SHAPES.items():
            if name == "jawOpen" and binding.jaw_bone:
                check(keys[key].value == 0.0, f"jawOpen is {keys[key].value} although the jaw bone opens the mouth: "
                                              f"{[c.data_path for c in compat_curves(mesh)]}")
                continue
            want = weights[frame, arkit.ARKIT_NAMES.index(name)]
            if name in names:
                want_direct = float(np.clip(parts["expression"][frame, names.index(name)], 0.0, 1.0))
                check(abs(want - want_direct) < 1e-9, f"{name}: the ARKit weight is not the take's component")
            if name == "jawOpen":
                direct = float(np.clip(parts["jaw"][frame, 0] / binding.jaw_open_angle, 0.0, 1.0))
                check(abs(want - direct) < 1e-9, "jawOpen is not the jaw pitch over the calibrated angle")
            worst = max(worst, abs(keys[key].value - want))
        # Bones: world turn of each bone (posed against rest) is the take's turn, the jaw and eyes inside the head's.
        head_turn = _world_turn(strength * parts["neck"][frame])
        for bone, turn in (("head", head_turn), ("jaw", head_turn @ _world_turn(parts["jaw"][frame])),
                           ("eye.L", head_turn @ _world_turn(parts["eyes"][frame, :3])),
                           ("eye.R", head_turn @ _world_turn(parts["eyes"][frame, 3:]))):
            if bone == "jaw" and not binding.jaw_bone:
                continue
            posed = armature_world @ np.array(rig.pose.bones[bone].matrix.to_3x3().normalized())
            rest = armature_world @ np.array(rig.data.bones[bone].matrix_local.to_3x3().normalized())
            error = float(np.abs(posed @ rest.T - turn).max())
            check(error < 1e-4, f"take {index + 1} frame {frame}: the bone {bone} turns {error} away from the take")
    check(worst < 1e-5, f"take {index + 1}: a shape key differs from the take's ARKit weight by {worst}")
    mapped = [arkit.ARKIT_NAMES.index(name) for name in CHARACTER_SHAPES]
    check(weights[:, mapped].max() > 0.1, "the take moves none of the character's shapes: nothing was tested")
    return worst


@case
def arkit_character(work_dir, args):
    """A character that is not the built-in head (a UV sphere, 20 of ARKit's 52 shape keys in other spellings, an
    armature with jaw, eye and head bones) driven by 2 takes of the real backend: its keys equal the takes
    through the mapping; Resample, switching and deleting follow; jaw calibration; mapping save and load; FBX
    export read back; the Live Link CSV and JSON of a take."""
    import csv as csv_module
    import json as json_module

    from export_readback import read_fbx

    thunder = install_extension(args["zip"])
    api, scene = thunder.api, bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    strip = add_sound_strip(scene, "voice", args["wav"], frame=1)
    head = api.add_head()
    api.generate(head, strip=strip.name, takes=2, seed=11, steps=4)
    mesh, rig = _make_character(scene)
    arkit = importlib.import_module(f"{MODULE}.arkit")

    # Bad choices are one sentence each and change nothing.
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    for attempt, words in ((lambda: api.drive_character(cube, head), "has no shape keys"),
                           (lambda: api.drive_character(mesh, head, armature=rig, jaw_bone="chin"), "no bone 'chin'"),
                           (lambda: api.drive_character(mesh, head, head_target="BONE"), "choose the head"),
                           (lambda: api.drive_character(head.thunder.mesh, head), "the Thunder head's own mesh"),
                           (lambda: api.drive_character(mesh, head, mapping={"jawOpen": "nope"}), "no shape key 'nope'"),
                           (lambda: api.export_character(mesh, str(work_dir / "x")), "not driven")):
        try:
            attempt()
            check(False, f"{words}: accepted")
        except api.ThunderError as error:
            check(words in str(error), f"the sentence {error} does not say {words!r}")
    names = list(head.data["thunder_expression_names"])
    head.data["thunder_expression_names"] = [f"exp{k:03d}" for k in range(len(names))]   # as a FLAME head's
    try:
        api.drive_character(mesh, head)
        check(False, "a head without ARKit-named components drove a character")
    except api.ThunderError as error:
        check("no ARKit-named expression components" in str(error), str(error))
    head.data["thunder_expression_names"] = names
    check(not mesh.thunder_character.is_character and not mesh.thunder_character.jaw_bone
          and mesh.data.shape_keys.animation_data is None, "a refused Drive character changed the character")

    # A partial set, matched however it is spelled; what is missing is listed.
    missing = api.drive_character(mesh, head, armature=rig, jaw_bone="jaw", eye_left_bone="eye.L",
                                  eye_right_bone="eye.R", head_bone="head", head_target="BONE", head_strength=0.5)
    character = thunder.character
    check(character.mapping(mesh) == {n: CHARACTER_SHAPES[n] for n in arkit.ARKIT_NAMES if n in CHARACTER_SHAPES},
          f"the mapping is {character.mapping(mesh)}")
    check(len(missing) == 32 and "tongueOut" in missing and "jawOpen" not in missing, f"missing {missing}")
    check("20 of ARKit's 52" in api.notice.text, api.notice.text)
    frames = [0, 7, head.thunder.takes[0].frames - 1]
    errors = []
    for index in (1, 0):   # switching takes: the character follows
        api.activate_take(head, index)
        errors.append(_check_character_plays(thunder, head, mesh, rig, index, frames, 0.5))

    # A second mesh of the same character (teeth, say) shares its armature but drives no bone: the first
    # mesh's bones still turn, and the second follows the takes through its one shape key.
    bpy.ops.mesh.primitive_cube_add(size=0.02)
    teeth = bpy.context.active_object
    teeth.name = "Character teeth"
    teeth.shape_key_add(name="Basis", from_mix=False)
    teeth.shape_key_add(name="jawOpen", from_mix=False)
    api.drive_character(teeth, head, armature=rig)
    check(character.mapping(teeth) == {"jawOpen": "jawOpen"}, f"the teeth map {character.mapping(teeth)}")
    for index in (1, 0):
        api.activate_take(head, index)
        _check_character_plays(thunder, head, mesh, rig, index, frames, 0.5)
        weights = arkit.arkit_weights(*_take_parts(head, index))
        scene.frame_set(int(head.thunder.takes[index].frame_start) + 7)
        check(abs(teeth.data.shape_keys.key_blocks["jawOpen"].value - weights[7, arkit.ARKIT_NAMES.index("jawOpen")])
              < 1e-5, "the second mesh does not follow the take")
    api.release_character(teeth)
    check(rig.animation_data.action == head.thunder.takes[0].action, "releasing the teeth stopped the rig")

    # A mesh without an armature turns as a whole with the take's head (Euler rotation before: kept).
    bpy.ops.mesh.primitive_cube_add(size=0.05, location=(-0.4, 0.0, 0.0), rotation=(0.2, 0.0, 0.5))
    hat = bpy.context.active_object
    hat.shape_key_add(name="Basis", from_mix=False)
    hat.shape_key_add(name="BrowInnerUp", from_mix=False)
    rest = np.array(hat.matrix_world.to_3x3())
    api.drive_character(hat, head, head_target="OBJECT", head_strength=0.8)
    parts, _ = _take_parts(head, 0)
    for frame in (0, 7):
        scene.frame_set(int(head.thunder.takes[0].frame_start) + frame)
        turned = np.array(hat.matrix_world.to_3x3())
        error = float(np.abs(turned - _world_turn(0.8 * parts["neck"][frame]) @ rest).max())
        check(error < 1e-5, f"the object turns {error} away from the take's head at frame {frame}")
    api.release_character(hat)
    bpy.data.objects.remove(hat)

    # The panel shows the character, its list and what is missing.
    scene.thunder.character = mesh
    drawn = draw_panel_headless(thunder)
    for element in (("operator", "thunder.character_update"), ("template_list", "mapping"),
                    ("operator", "thunder.export_arkit"), ("operator", "thunder.character_export")):
        check(element in drawn, f"the panel does not draw {element}")
    check(any(kind == "label" and text.startswith("Missing: ") for kind, text in drawn), "no missing list drawn")

    # Calibrate the jaw from the character's jawOpen shape, then open the mouth with the shape, not the bone.
    angle = api.calibrate_character_jaw(mesh)
    check(abs(angle - CHARACTER_JAW_ANGLE) < 1e-4, f"the calibrated jaw angle is {angle}, not {CHARACTER_JAW_ANGLE}")
    mesh.thunder_character.jaw_bone = ""
    api.update_character(mesh)
    _check_character_plays(thunder, head, mesh, rig, 0, frames, 0.5)

    # The panel's operators do the same: Update character, and Export ARKit of every take.
    scene.thunder.head = head
    check(bpy.ops.thunder.character_update() == {"FINISHED"}, api.notice.text)
    scene.thunder.export_folder, scene.thunder.export_all = str(work_dir / "arkit_every"), True
    check(bpy.ops.thunder.export_arkit() == {"FINISHED"}, api.notice.text)
    written = sorted(p.name for p in (work_dir / "arkit_every").iterdir())
    check(written == ["Thunder_head_Take_1.arkit.csv", "Thunder_head_Take_1.arkit.json",
                      "Thunder_head_Take_2.arkit.csv", "Thunder_head_Take_2.arkit.json"], f"Export ARKit wrote {written}")
    scene.thunder.export_all = False

    # Save the mapping, break it, load it back.
    mapping_path = work_dir / "mapping.json"
    api.save_character_mapping(mesh, str(mapping_path))
    saved = json_module.loads(mapping_path.read_text())
    check(saved["mapping"]["browInnerUp"] == "A01_Brow_Inner_Up" and len(saved["mapping"]) == 20, "saved mapping")
    mesh.thunder_character.mapping[arkit.ARKIT_NAMES.index("browInnerUp")].shape_key = ""
    check(len(character.missing(mesh)) == 33, "clearing a row did not make it missing")
    api.load_character_mapping(mesh, str(mapping_path))
    check(len(character.missing(mesh)) == 32, "loading the mapping did not restore it")
    bad = work_dir / "bad_mapping.json"
    bad.write_text(json_module.dumps({"format": "thunder-arkit-mapping", "version": 1, "mapping": {"jawOpen": "nope"}}))
    try:
        api.load_character_mapping(mesh, str(bad))
        check(False, "a mapping to a shape key the mesh lacks was accepted")
    except api.ThunderError as error:
        check("no shape key 'nope'" in str(error), str(error))
    check(character.mapping(mesh)["jawOpen"] == "A25_Jaw_Open", "a refused mapping changed the character")

    # Resample the unkept take: the character plays the new take, the old action is gone, nothing leaks.
    api.keep_take(head, 0)
    api.activate_take(head, 1)
    old_action = head.thunder.takes[1].action.name
    api.resample(head)
    check(old_action not in bpy.data.actions, "the replaced take's action leaked (a character still held it)")
    check(mesh.data.shape_keys.animation_data.action == head.thunder.takes[1].action, "the character does not play "
                                                                                      "the resampled take")
    _check_character_plays(thunder, head, mesh, rig, 1, frames, 0.5)
    api.activate_take(head, 0)
    check(rig.animation_data.action == head.thunder.takes[0].action, "the rig does not follow the switch")
    _check_character_plays(thunder, head, mesh, rig, 0, frames, 0.5)

    # Export the character with the active take to FBX (read back here) and USD (read back by the test, with pxr).
    item = head.thunder.takes[0]
    first_frame = item.frame_start   # read now: the takes are deleted below
    paths = api.export_character(mesh, str(work_dir / "export"), formats=("fbx", "usd"))
    check([Path(p).name for p in paths] == ["Sphere_character_Take_1.fbx", "Sphere_character_Take_1.usd"],
          f"the character's exports are {paths}")
    shapes, bones = read_fbx(paths[0])
    with np.load(item.file, allow_pickle=False) as npz:
        parts = {name: npz[name].astype(np.float64) for name in ("expression", "jaw", "neck", "eyes")}
    weights = arkit.arkit_weights(parts, list(head.data["thunder_expression_names"]),
                                  arkit.ArkitCalibration(jaw_open_angle=mesh.thunder_character.jaw_open_angle))
    fbx_error, found = 0.0, []
    for name, key in CHARACTER_SHAPES.items():
        exported = shapes.get(key) or next((v for k, v in shapes.items() if k.endswith(key.split(".")[-1])), None)
        check(exported is not None, f"the FBX has no blend shape for {key}: {sorted(shapes)}")
        at = {int(round(f)): v for f, v in zip(*exported)}
        fbx_error = max(fbx_error, max(abs(at[int(item.frame_start) + t] - weights[t, arkit.ARKIT_NAMES.index(name)])
                                       for t in range(item.frames)))
        found.append(key)
    check(fbx_error < 1e-4, f"the FBX's shape-key weights differ from the take's by {fbx_error}")
    check({"head", "eye.L", "eye.R"} <= set(bones), f"the FBX has no bone animation for the head and eyes: {sorted(bones)}")

    # The take as ARKit weights: the Live Link CSV and the JSON.
    arkit_paths = api.export_arkit(head, str(work_dir / "arkit"))
    by_suffix = {Path(p).suffix: Path(p) for p in arkit_paths}
    rows = list(csv_module.reader(by_suffix[".csv"].open()))
    check(rows[0][:3] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft"] and len(rows[0]) == 63, rows[0][:4])
    check(len(rows) == item.frames + 1 and rows[1][1] == "61", f"{len(rows)} rows for {item.frames} frames")
    names = list(head.data["thunder_expression_names"])
    jaw_column, close_column = rows[0].index("JawOpen"), rows[0].index("MouthClose")
    csv_error = max(max(abs(float(row[jaw_column]) - float(np.clip(parts["jaw"][t, 0] / 0.30, 0, 1))),
                        abs(float(row[close_column]) - float(np.clip(parts["expression"][t, names.index("mouthClose")], 0, 1))))
                    for t, row in enumerate(rows[1:]))
    check(csv_error < 1e-5, f"the CSV differs from the take by {csv_error}")
    data = json_module.loads(by_suffix[".json"].read_text())
    check(data["frames"] == item.frames and data["names"][:2] == ["eyeBlinkLeft", "eyeLookDownLeft"], "the JSON")
    try:
        api.export_arkit(head, str(work_dir / "arkit"))
        check(False, "an ARKit export replaced existing files")
    except api.ThunderError as error:
        check("already exists" in str(error), str(error))

    # Deleting every take leaves no action behind; releasing gives the character its own state back.
    while len(head.thunder.takes):
        api.delete_take(head, 0)
    leftover = [a.name for a in bpy.data.actions if a.get("thunder_take")]
    check(not leftover, f"deleting the takes left actions {leftover}")
    check(mesh.data.shape_keys.animation_data is None or mesh.data.shape_keys.animation_data.action is None,
          "the character still plays a deleted take")
    api.release_character(mesh)
    check(not mesh.thunder_character.is_character, "the character is still driven")
    expected_path = work_dir / "character_weights.npy"
    np.save(expected_path, weights[:, [arkit.ARKIT_NAMES.index(name) for name in CHARACTER_SHAPES]])
    return {"missing": missing, "calibrated_angle": angle, "fbx_error": fbx_error, "csv_error": csv_error,
            "key_errors": errors, "fbx_shapes": sorted(shapes), "usd": str(paths[1]),
            "usd_expected": {"weights": str(expected_path), "shape_keys": list(CHARACTER_SHAPES.values()),
                             "frame_start": first_frame}, "bpy": bpy.app.version_string}


def _wait_for(thunder, condition, what, timeout=120.0):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        thunder.session._tick()   # what Blender's timer calls with a UI (timers never fire headless)
        check(time.monotonic() < deadline, f"timed out waiting for {what}")
        time.sleep(0.02)


@case
def bad_inputs(work_dir, args):
    """Each bad input gives a sentence in the panel (api.notice, which the panel draws, or the backend status)
    and changes nothing: a head that is not a Thunder head, a strip whose file is missing, a wrong or unset
    backend Python, cancelling mid-job, a backend that crashes mid-job, an unwritable export folder, and
    animation the head already had. Then disabling the add-on stops the backend's process group."""
    import shutil
    import signal

    thunder = install_extension(args["zip"])
    api, scene = thunder.api, bpy.context.scene
    prefs = addon_preferences()
    settings = scene.thunder
    said = {}

    def panel_says(operator, *fields):
        try:   # an operator that reports an error raises it in scripts; the UI shows it in the status bar
            result = operator()
        except RuntimeError as error:
            result = {"CANCELLED"}
            check(api.notice.text in str(error), f"the report {error} differs from the panel's {api.notice.text}")
        check(result == {"CANCELLED"}, f"{operator} returned {result} on bad input")
        check(api.notice.level == "ERROR" and api.notice.text, "the panel shows no error")
        for field in fields:
            check(field in api.notice.text, f"the panel says {api.notice.text!r}, which does not name {field!r}")
        return api.notice.text

    # Before the backend has said what its model uses, the panel says where the steps and guidance come from.
    check(thunder.session.manager().backend_info is None, "the backend answered before the add-on had asked it anything")
    shown = "The model's own steps and guidance (shown once the backend runs)"
    check(("label", shown) in draw_panel_headless(thunder), "the panel says nothing of the model's sampling")

    # A head that is not a Thunder head.
    bpy.ops.mesh.primitive_cube_add()
    check(bpy.context.active_object.name == "Cube", "the cube is not active")
    strip = add_sound_strip(scene, "voice", args["wav"], frame=1)
    settings.strip = strip.name
    said["not a head"] = panel_says(bpy.ops.thunder.generate, "'Cube' is not a Thunder head")

    head = api.add_head()
    check(settings.head == head, "the new head is not the panel's head")

    # A strip whose file is missing.
    gone = work_dir / "gone.wav"
    shutil.copy(args["wav"], gone)
    missing = add_sound_strip(scene, "missing", gone, frame=1, channel=2)
    gone.unlink()
    settings.strip = missing.name
    said["missing strip file"] = panel_says(bpy.ops.thunder.generate, "missing", "does not exist")
    settings.strip = strip.name

    # A wrong backend Python, then none at all.
    right_python = os.environ["THUNDER_BACKEND_PYTHON"]
    api.backend_stop()
    prefs.backend_python = str(work_dir / "no" / "python")
    said["wrong python"] = panel_says(bpy.ops.thunder.generate, str(work_dir / "no" / "python"))
    check(api.backend_status()[0] in ("error", "stopped"), f"status {api.backend_status()}")
    prefs.backend_python = ""
    del os.environ["THUNDER_BACKEND_PYTHON"]
    path = os.environ["PATH"]
    os.environ["PATH"] = "/usr/bin:/bin"
    said["no python"] = panel_says(bpy.ops.thunder.generate, "Backend Python", "not set")
    os.environ["PATH"] = path
    prefs.backend_python = right_python
    check(len(head.thunder.takes) == 0, "a failed generate left takes")

    # Cancelling mid-job: nothing changes.
    api.generate(head, strip=strip.name, takes=1, steps=200, wait=False)   # the most steps the panel allows: a long job
    _wait_for(thunder, lambda: api.backend_status()[0] == "busy" and api.backend_status()[2] > 0, "sampling")
    drawn = draw_panel_headless(thunder)
    check(("operator", "thunder.cancel") in drawn and any(kind == "progress" for kind, _ in drawn),
          f"the busy panel shows no progress bar and Cancel: {drawn}")
    api.cancel()
    _wait_for(thunder, lambda: session_idle(thunder), "the cancel")
    check("cancelled" in api.notice.text and len(head.thunder.takes) == 0, f"after cancel: {api.notice.text}")
    said["cancel"] = api.notice.text

    # The backend crashes mid-job: the panel says so, nothing changes, and the next Generate restarts it.
    api.generate(head, strip=strip.name, takes=1, steps=200, wait=False)   # the most steps the panel allows: a long job
    _wait_for(thunder, lambda: api.backend_status()[0] == "busy" and api.backend_status()[2] > 0, "sampling")
    os.killpg(thunder.session.manager().process.pid, signal.SIGKILL)
    _wait_for(thunder, lambda: session_idle(thunder), "the crash to be noticed")
    status, message, _ = api.backend_status()
    check(status == "error" and "stopped unexpectedly" in message, f"after a crash: {status}: {message}")
    check(api.notice.level == "ERROR" and "stopped unexpectedly" in api.notice.text, api.notice.text)
    check(len(head.thunder.takes) == 0, "the crash left takes")
    said["crash"] = api.notice.text
    # The panel's Generate samples with the model's own steps and guidance while "Model's sampling" is on
    # (its Steps and Guidance, set to other values here, are not sent), and with the panel's when it is off.
    check(settings.model_sampling, "the panel does not start with the model's sampling")
    settings.steps, settings.guidance = 3, 2.5
    check(bpy.ops.thunder.generate() == {"FINISHED"}, f"generate after the crash: {api.notice.text}")
    check(len(head.thunder.takes) == settings.takes, "generate after a crash did not restart the backend")
    own = thunder.session.manager().backend_info["model"]["sampling"]
    recorded = {(item.steps, item.guidance) for item in head.thunder.takes}
    check(recorded == {(own["steps"], own["guidance"])}, f"the takes used {recorded}, the model's own is {own}")
    drawn = draw_panel_headless(thunder)
    shown = f"Guidance {own['guidance']:g}, {own['steps']} steps, smoothing {own['smoothing']:g}"
    check(("label", shown) in drawn and ("prop", "steps") not in drawn, f"the panel does not show {shown}: {drawn}")
    settings.model_sampling = False
    check(bpy.ops.thunder.generate() == {"FINISHED"}, api.notice.text)
    recorded = (head.thunder.takes[-1].steps, head.thunder.takes[-1].guidance)
    check(recorded == (3, 2.5), f"with the panel's own settings the take used {recorded}, not (3, 2.5)")
    check(("prop", "steps") in draw_panel_headless(thunder), "the panel hides Steps with the model's sampling off")
    settings.model_sampling = True

    # An export folder that cannot be written (a file where the folder should be); nothing is written.
    blocker = work_dir / "not_a_folder"
    blocker.write_text("a file")
    settings.export_folder = str(blocker / "exports")
    said["export"] = panel_says(bpy.ops.thunder.export, str(blocker))

    # Animation the head already had is never replaced without asking, and is kept when it is.
    for item in list(head.thunder.takes):
        api.delete_take(head, 0)
    key = head.thunder.mesh.data.shape_keys
    mine = bpy.data.actions.new("animator's own")
    slot = mine.slots.new(id_type="KEY", name="mine")
    curves = mine.layers.new("mine").strips.new(type="KEYFRAME").channelbag(slot, ensure=True).fcurves
    curve = curves.new('key_blocks["' + key.key_blocks[1].name + '"].value')
    curve.keyframe_points.insert(1, 0.7)
    key.animation_data_create()
    key.animation_data.action, key.animation_data.action_slot = mine, slot
    said["existing animation"] = panel_says(bpy.ops.thunder.generate, "animator's own", "Replace existing animation")
    check(key.animation_data.action == mine, "the animator's action was replaced without asking")
    settings.replace_animation = True
    check(bpy.ops.thunder.generate() == {"FINISHED"}, api.notice.text)
    check(key.animation_data.action != mine and mine.use_fake_user and head.thunder.original_key_action == mine,
          "the animator's action was not kept aside")
    while len(head.thunder.takes):
        api.delete_take(head, 0)
    check(key.animation_data.action == mine, "deleting the takes did not bring the animator's action back")

    # Disabling the add-on stops the backend, process group and all.
    from processes import process_ended, wait_for_end

    pid = thunder.session.manager().process.pid
    check(not process_ended(pid), "the backend is not running")
    bpy.ops.preferences.addon_disable(module=MODULE)
    check(wait_for_end(pid, 15), f"the backend (pid {pid}) outlived the add-on")
    return {"said": said}


@case
def backend_running(work_dir, args):
    """Start the backend and leave it running: the test checks it is gone once this Blender has quit."""
    thunder = install_extension(args["zip"])
    thunder.api.backend_start()
    check(thunder.api.backend_status()[0] == "ready", f"backend status {thunder.api.backend_status()}")
    return {"pid": thunder.session.manager().process.pid}


@case
def flame_head(work_dir, args):
    """Add FLAME head from the FLAME file set in the preferences (one the test builds in FLAME's layout): one
    shape key per expression component plus the 36 correctives, FLAME's bones and weights; with an identity
    shape baked into the basis. Without the preference, a sentence saying where to set it."""
    thunder = install_extension(args["zip"])
    api, prefs = thunder.api, addon_preferences()
    try:
        api.add_head("flame")
        check(False, "Add FLAME head worked without a FLAME file")
    except api.ThunderError as error:
        check("FLAME model file" in str(error) and "Preferences" in str(error), str(error))
    prefs.flame_model = args["flame"]
    head = api.add_head("flame")
    shaped = api.add_head("flame", shape=args["shape"], name="shaped")
    results = {}
    for obj in (head, shaped):
        keys = obj.thunder.mesh.data.shape_keys.key_blocks
        names = list(obj.data["thunder_expression_names"])
        check(len(keys) == 1 + len(names) + 36, f"{len(keys)} shape keys for {len(names)} expressions")
        check(keys[1].name == names[0] and keys[1 + len(names)].name == "pose.neck.00", [k.name for k in keys[:3]])
        basis = np.empty(len(keys[0].data) * 3, dtype=np.float32)
        keys[0].data.foreach_get("co", basis)
        path = work_dir / f"{obj.name}_basis.npy"
        np.save(path, basis.reshape(-1, 3))
        results[obj.name] = {"basis": str(path), "expressions": len(names), "source": obj.thunder.source,
                             "bones": [b.name for b in obj.data.bones], "identity": obj.thunder.identity}
    check(head.thunder.source == args["flame"], f"the head's source is {head.thunder.source}")
    return {"heads": results, "names": [head.name, shaped.name]}


# ---------------------------------------------------------------------------------------------- takes you can trust
def _take_actions():
    return sorted(a.name for a in bpy.data.actions if a.get("thunder_take"))


def _playing(head):
    key = head.thunder.mesh.data.shape_keys
    return key.animation_data.action.name if key.animation_data and key.animation_data.action else None


@case
def resample_combinations(work_dir, args):
    """Every combination of 1-4 takes with any subset kept, and any take playing: Resample replaces exactly the
    unkept takes in their places (same name, new seed, new action; the old action removed), never touches a
    kept one, leaks no action, and the take that played plays (its replacement if it was replaced); with every
    take kept it adds one new take, which plays. The notice names the takes it made."""
    import itertools

    thunder = install_extension(args["zip"])
    api, scene = thunder.api, bpy.context.scene
    strip = add_sound_strip(scene, "voice", args["wav"], frame=1)
    head = api.add_head()
    takes_of = head.thunder.takes
    tried = 0
    for n in range(1, 5):
        for kept in itertools.chain.from_iterable(itertools.combinations(range(n), k) for k in range(n + 1)):
            while len(takes_of):
                api.delete_take(head, 0)
            check(_take_actions() == [], f"deleting every take left actions {_take_actions()}")
            api.generate(head, strip=strip.name, takes=n, seed=100 * n + tried, steps=1)
            playing = tried % n
            for index in kept:
                api.keep_take(head, index)
            api.activate_take(head, playing)
            before = [(t.name, t.seed, t.action.name, t.file, t.kept) for t in takes_of]
            label = f"{n} takes, kept {list(kept)}, playing {playing}"

            api.resample(head)
            after = [(t.name, t.seed, t.action.name, t.file, t.kept) for t in takes_of]
            unkept = [k for k in range(n) if k not in kept]
            expected_len = n if unkept else n + 1
            check(len(after) == expected_len, f"{label}: {len(after)} takes after resample, expected {expected_len}")
            for k in kept:
                check(after[k] == before[k], f"{label}: the kept take {before[k][0]} changed: {after[k]}")
            old_seeds = {b[1] for b in before}
            for k in unkept:
                name, seed, action, file, is_kept = after[k]
                check(name == before[k][0] and not is_kept, f"{label}: take {k + 1} is {after[k]}, not a "
                                                            f"replacement of {before[k][0]}")
                check(seed not in old_seeds and action != before[k][2] and file != before[k][3],
                      f"{label}: take {name} was not resampled: {after[k]} (before {before[k]})")
                check(before[k][2] not in bpy.data.actions, f"{label}: the replaced action {before[k][2]} leaked")
            if not unkept:
                check(after[n][0] == f"Take {n + 1}" and after[n][1] not in old_seeds, f"{label}: added {after[n]}")
            check(len({a[1] for a in after}) == len(after), f"{label}: seeds repeat: {[a[1] for a in after]}")
            check(_take_actions() == sorted(a[2] for a in after),
                  f"{label}: the actions {_take_actions()} are not the takes' {sorted(a[2] for a in after)}")
            want_playing = playing if unkept else n
            check(head.thunder.active_take == want_playing and _playing(head) == after[want_playing][2],
                  f"{label}: take {head.thunder.active_take + 1} plays {_playing(head)}, expected "
                  f"{after[want_playing][0]}")
            made = [after[k][0] for k in unkept] or [after[n][0]]
            check(api.notice.text.endswith(", ".join(made)), f"{label}: the notice says {api.notice.text!r}, "
                                                             f"not the takes {made}")
            tried += 1
    return {"combinations": tried}


def _roughness(values):
    return float(np.abs(np.diff(values, n=2, axis=0)).mean())


@case
def strengths_scores_and_listen(work_dir, args):
    """Best of 3 keeps 2 takes, each with its M2S score, listed best first; strengths applied to the keys and
    undone exactly (1 everywhere, smoothing 0); kept through Resample; used by export (FBX read back);
    Listen adds a muted strip of what the lips say next to the voice's channel, at the take's first frame."""
    from export_readback import fbx_shape_key_curves

    thunder = install_extension(args["zip"])
    api, scene = thunder.api, bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    strip = add_sound_strip(scene, "voice", args["wav"], frame=11, channel=2)
    head = api.add_head()
    check(len(head.data.get("thunder_lip_centers") or []) == 2, "the head was built without its lip landmarks")
    names = api.generate(head, strip=strip.name, takes=2, best_of=3, seed=5, steps=2)
    takes = head.thunder.takes
    check(names == ["Take 1", "Take 2"], f"best of 3 keeping 2 made {names}")
    scores = [t.m2s_mel_l1 for t in takes]
    check(all(t.has_m2s_score for t in takes) and scores[0] <= scores[1], f"scores {scores}: not best first")
    for item in takes:
        with np.load(item.file, allow_pickle=False) as take:
            written = json.loads(str(take["meta"]))["scores"]["m2s_mel_l1"]
        check(abs(written - item.m2s_mel_l1) < 1e-5, f"{item.name}: listed {item.m2s_mel_l1}, file {written}")
    check({t.seed for t in takes} <= {5, 6, 7}, f"seeds {[t.seed for t in takes]} are not among the candidates")

    # The list's order: best first, whatever order the takes were added in.
    api.generate(head, strip=strip.name, takes=1, seed=40, steps=2)
    order = api.takes_by_score(head)
    by_score = [t.name for t in sorted(takes, key=lambda t: t.m2s_mel_l1)]
    check(order == by_score, f"takes_by_score gave {order}, the scores say {by_score}")

    class ListState:
        filter_name, bitflag_filter_item = "", 1 << 30

    flags, new_order = thunder.ui.THUNDER_UL_takes.filter_items(ListState(), bpy.context, head.thunder, "takes")
    shown = [None] * len(takes)
    for index, position in enumerate(new_order):
        shown[position] = takes[index].name
    check(shown == by_score and flags == [], f"the takes list shows {shown}, not {by_score}")
    drawn = draw_panel_headless(thunder)
    for item in takes:
        check(("label", f"M2S {item.m2s_mel_l1:.2f}") in drawn, f"the list does not show {item.name}'s score")
    for element in (("prop", "best_of"), ("prop", "strength_lips_jaw"), ("prop", "smoothing"),
                    ("operator", "thunder.take_listen")):
        check(element in drawn, f"the panel does not draw {element}")

    # Strengths on take 1: applied to its keys, and undone exactly.
    api.activate_take(head, 0)
    item = takes[0]
    expression_names = list(head.data["thunder_expression_names"])
    brows = [n for n in expression_names if n.startswith("brow")]
    mouth = [n for n in expression_names if n.startswith("mouth")]
    with np.load(item.file, allow_pickle=False) as take:
        expression, neck = take["expression"].astype(np.float64), take["neck"].astype(np.float64)
    rig_math = importlib.import_module(f"{MODULE}.rig_math")
    api.set_strengths(head, 0, brows=0.0, head_motion=0.5, lips_jaw=1.3)
    key, bones = key_values(item.action, "KEY"), key_values(item.action, "OBJECT")
    check(all(np.abs(key[(f'key_blocks["{n}"].value', 0)][1]).max() == 0 for n in brows), "brows 0 left brow keys")
    for n in mouth:
        got = key[(f'key_blocks["{n}"].value', 0)][1]
        check(np.abs(got - 1.3 * expression[:, expression_names.index(n)]).max() < 1e-5, f"{n} is not 1.3x")
    neck_keys = np.stack([bones[('pose.bones["neck"].rotation_quaternion', i)][1] for i in range(4)], -1)
    check(np.abs(neck_keys - rig_math.axis_angle_to_quaternion(0.5 * neck)).max() < 1e-5, "head motion 0.5: the neck is not half")
    check(compat_playing(thunder, head) == item.action, "the re-keyed take does not play")

    # Export uses them: the FBX's brows are 0 and its mouth 1.3x.
    paths = api.export(head, str(work_dir / "export"), formats=("fbx",))
    curves = fbx_shape_key_curves(str(paths[0]))
    check(max(np.abs(curves[n][1]).max() for n in brows) < 1e-6, "the FBX has brow motion: strengths not exported")
    probe = mouth[int(np.argmax([np.abs(expression[:, expression_names.index(n)]).max() for n in mouth]))]
    exported = curves[probe][1]
    want = 1.3 * expression[:, expression_names.index(probe)]
    check(np.abs(exported[: len(want)] - want).max() < 1e-4, f"the FBX's {probe} is not the strengthened take")

    # Smoothing: smoother brows... (with brows back at 1), then everything back: keys equal the take file.
    api.set_strengths(head, 0, brows=1.0, smoothing=1.0)
    key = key_values(item.action, "KEY")
    brow_keys = np.stack([key[(f'key_blocks["{n}"].value', 0)][1] for n in brows], -1)
    raw_brows = expression[:, [expression_names.index(n) for n in brows]]
    check(_roughness(brow_keys) < 0.7 * _roughness(raw_brows), "smoothing did not smooth the brows")
    api.set_strengths(head, 0, lips_jaw=1.0, head_motion=1.0, smoothing=0.0)
    check_take_keys(head, item, float(item.frame_start))
    bone_keys = key_values(item.action, "OBJECT")
    neck_keys = np.stack([bone_keys[('pose.bones["neck"].rotation_quaternion', i)][1] for i in range(4)], -1)
    check(np.abs(neck_keys - rig_math.axis_angle_to_quaternion(neck)).max() < 1e-5, "the neck did not come back")
    refused = [_refused(lambda: api.set_strengths(head, 0, brows=3.0), "the strength brows must be a number from 0 to 2"),
               _refused(lambda: api.set_strengths(head, 0, chin=1.0), "unknown strength chin")]
    check(item.strength_brows == 1.0, "a refused strength changed the take")

    # Strengths stay with a take that is resampled.
    api.set_strengths(head, 1, brows=0.0)
    api.keep_take(head, 0)
    api.keep_take(head, 2)
    old_seed = takes[1].seed
    api.resample(head)
    check(takes[1].seed != old_seed and takes[1].strength_brows == 0.0, "resample lost the take's strengths")
    key = key_values(takes[1].action, "KEY")
    check(all(np.abs(key[(f'key_blocks["{n}"].value', 0)][1]).max() == 0 for n in brows),
          "the resampled take was keyed without its strengths")

    # The panel's slider is the property itself: setting it keys the take again, and back.
    third = takes[2]
    third.strength_brows = 0.0
    key = key_values(third.action, "KEY")
    check(all(np.abs(key[(f'key_blocks["{n}"].value', 0)][1]).max() == 0 for n in brows), "the slider did not re-key")
    third.strength_brows = 1.0
    check_take_keys(head, third, float(third.frame_start))
    # A take whose file is gone cannot be re-keyed: a sentence, and the take as it was.
    moved = third.file + ".away"
    os.replace(third.file, moved)
    refused.append(_refused(lambda: api.set_strengths(head, 2, brows=0.5), "need its take file again"))
    check(third.strength_brows == 1.0, "a strength that could not be applied was set anyway")
    os.replace(moved, third.file)
    check_take_keys(head, third, float(third.frame_start))

    # Listen: a muted strip of what take 1's lips say, beside the voice, from the take's first frame.
    listened = api.listen(head, 0)
    check(listened.mute and listened.type == "SOUND", "the listen strip is not a muted sound strip")
    check(listened.channel in (1, 3), f"the listen strip is on channel {listened.channel}, not next to the voice (2)")
    timing = thunder.compat.strip_timing(listened)
    check(abs(timing.content_start + timing.sound_offset * 25 - item.frame_start) < 1e-4,
          f"the listen strip starts at {timing.content_start}, the take at {item.frame_start}")
    wav = thunder.sound.sound_file(listened.sound, listened.name)
    check(os.path.isfile(wav), f"the listen strip's file {wav} is missing")
    check(not strip.mute, "listening muted the voice")
    return {"scores": scores, "refused": refused, "listen_wav": wav, "take_file": item.file,
            "frame_start": item.frame_start, "channel": listened.channel, "bpy": bpy.app.version_string}


def compat_playing(thunder, head):
    return thunder.compat.assigned_action(head.thunder.mesh.data.shape_keys)


def _mixdown_clicks(path, minimum_gap=0.05):
    """The scene seconds at which the clicks of a mixdown WAV start."""
    import wave

    with wave.open(str(path)) as file:
        rate, channels = file.getframerate(), file.getnchannels()
        samples = np.frombuffer(file.readframes(file.getnframes()), dtype=np.int16).reshape(-1, channels)
    loud = np.abs(samples[:, 0].astype(np.float64))
    if loud.max(initial=0.0) < 1000:
        return []
    above = np.flatnonzero(loud > 0.5 * loud.max())
    starts = above[np.insert(np.diff(above) > minimum_gap * rate, 0, True)]
    return list(starts / rate)


def write_clicks(path, clicks, seconds, rate=48000):
    """A WAV of silence with a short full-scale click at each of `clicks` (file seconds)."""
    import wave

    samples = np.zeros(int(seconds * rate), dtype=np.int16)
    for at in clicks:
        samples[int(round(at * rate)):int(round(at * rate)) + 24] = 30000
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.tobytes())
    return path


@case
def strip_timing_matches_mixdown(work_dir, args):
    """The add-on's timing rule (sound.strip_audio's AudioRange: file second t is keyed at frame
    frame_start + (t - start) * fps, for start <= t < end) against what Blender plays: the scene's mixdown of a
    strip of clicks, for several sound offsets, trims and frame rates. Every click the rule keys is heard at its
    frame (to 0.1 frame), and no click it leaves out is heard."""
    thunder = install_extension(args["zip"])
    scene = bpy.context.scene
    clicks, seconds = [0.4, 1.0, 1.6, 2.45], 3.0
    wav = write_clicks(work_dir / "clicks.wav", clicks, seconds)
    content_start, tolerance, near_edge = 11, 0.1, 0.06
    results, worst = [], 0.0
    for fps, base in ((24, 1.0), (25, 1.0), (30000, 1001.0)):
        for offset in (0.0, 0.5, -0.5, 0.27):
            for trim_left, trim_right in ((0, 0), (7, 0), (0, 9), (7, 9)):
                scene.render.fps, scene.render.fps_base = fps, base
                scene.frame_start, scene.frame_end = 1, 160
                editor = scene.sequence_editor or scene.sequence_editor_create()
                for old in list(editor.strips):
                    editor.strips.remove(old)
                strip = editor.strips.new_sound("clicks", str(wav), 1, content_start)
                strip.sound_offset = offset
                timing = thunder.compat.strip_timing(strip)
                if trim_left:
                    thunder.compat.set_strip_frame(strip, "left", int(timing.left) + trim_left)
                if trim_right:
                    thunder.compat.set_strip_frame(strip, "right", int(timing.right) - trim_right)
                heard_range = thunder.sound.strip_audio(scene, strip.name)
                rate = fps / base
                end = heard_range.end if heard_range.end is not None else seconds
                keyed = [heard_range.frame_start + (c - heard_range.start) * rate for c in clicks
                         if heard_range.start <= c < end]
                edges = [heard_range.start, end]
                ambiguous = [heard_range.frame_start + (c - heard_range.start) * rate for c in clicks
                             if min(abs(c - e) for e in edges) < near_edge]
                mix = work_dir / "mixdown.wav"
                bpy.ops.sound.mixdown(filepath=str(mix), container="WAV", codec="PCM", format="S16", accuracy=128)
                heard = [scene.frame_start + t * rate for t in _mixdown_clicks(mix)]
                label = (f"fps {fps}/{base:g}, offset {offset:+g} s, trims {trim_left}/{trim_right}: the add-on "
                         f"keys clicks at frames {np.round(keyed, 2).tolist()}, Blender plays them at "
                         f"{np.round(heard, 2).tolist()}")
                keyed = [f for f in keyed if min((abs(f - a) for a in ambiguous), default=1) > 1e-6]
                heard = [f for f in heard if min((abs(f - a) for a in ambiguous), default=9) > 2.0]
                check(len(keyed) == len(heard), label)
                for want, got in zip(keyed, heard):
                    check(abs(want - got) < tolerance, label)
                    worst = max(worst, abs(want - got))
                results.append(label)
    return {"cases": len(results), "worst_frames": worst}


@case
def make_retimed_blend(work_dir, args):
    """Write a .blend with a retimed sound strip (args["blend"]), for Blenders that can add retiming keys from
    a script (5.2; 4.5 and 5.0.1 crash headless in RetimingKeys.add, and the sequencer.retiming_* operators need
    a Sequencer area). tests/data/retimed_strip.blend was made so, with bpy 5.2.3:
        python tests/blender_cases.py make_retimed_blend WORK '{"wav": "voice.wav", "blend": "retimed_strip.blend"}'
    4.5 and 5.0.1 read it (tests/test_blender_addon.py checks each sees the keys)."""
    scene = bpy.context.scene
    editor = scene.sequence_editor_create()
    strip = editor.strips.new_sound("voice", args["wav"], 1, 11)
    strip.retiming_keys.add(timeline_frame=23)
    strip.retiming_keys[1].timeline_frame = 17   # the first half second plays twice as fast
    strip.sound.filepath = "//" + Path(args["wav"]).name   # no path of the machine that made it
    bpy.ops.wm.save_as_mainfile(filepath=args["blend"], relative_remap=False)
    return {"keys": [key.timeline_frame for key in strip.retiming_keys]}


@case
def retimed_strip_refused(work_dir, args):
    """A strip with retiming keys (another speed) gets a sentence and nothing is sampled."""
    bpy.ops.wm.open_mainfile(filepath=args["blend"])
    thunder = install_extension(args["zip"])
    scene = bpy.context.scene
    strip = thunder.compat.sound_strips(scene)[0]
    check(len(strip.retiming_keys) > 0, "the strip of the .blend has no retiming keys")
    check(thunder.sound.retimed(strip), "the add-on does not see the retiming")
    try:
        thunder.sound.strip_audio(scene, strip.name)
        check(False, "a retimed strip was accepted")
    except thunder.api.ThunderError as error:
        said = str(error)
    check("retimed" in said and strip.name in said and "\n" not in said, said)
    # A plain strip beside it is still fine.
    plain = scene.sequence_editor.strips.new_sound("plain", args["wav"], 2, 1)
    check(not thunder.sound.retimed(plain), "a plain strip counts as retimed")
    thunder.sound.strip_audio(scene, plain.name)
    return {"said": said}


def _refused(action, *words):
    """Run action; it must raise the add-on's user error whose sentence holds each of words. Returns it."""
    from importlib import import_module

    api = import_module(f"{MODULE}.api")
    try:
        action()
    except api.ThunderError as error:
        said = str(error)
    else:
        raise AssertionError(f"{action} was not refused")
    check("\n" not in said and "Traceback" not in said, said)
    for word in words:
        check(word in said, f"the sentence {said!r} does not name {word!r}")
    return said


@case
def untrusted_heads_and_takes(work_dir, args):
    """An edited head (vertices deleted, or subdivided) is refused by Generate, Resample, Play Take and Export,
    saying what changed; a take without a seed (or with damaged settings) is a sentence and nothing is keyed;
    the head's mesh deleted while a job runs is a sentence and nothing changes; a takes folder that cannot be
    used, and numbers out of range, are sentences before anything is sampled."""
    import bmesh

    thunder = install_extension(args["zip"])
    api, scene = thunder.api, bpy.context.scene
    strip = add_sound_strip(scene, "voice", args["wav"], frame=1)
    said = {}

    # Numbers out of range: one sentence each, nothing sampled (the backend is not even started).
    head = api.add_head()
    for field, value in (("takes", 0), ("takes", 17), ("steps", 0), ("steps", 1e9), ("guidance", float("nan")),
                         ("guidance", 1e30), ("intensity", 2.0), ("seed", -1), ("seed", 2**31)):
        kwargs = {field: value, "emotion": "happy"} if field == "intensity" else {field: value}
        said[f"{field}={value}"] = _refused(lambda: api.generate(head, strip=strip.name, **kwargs), field)
    scene.render.fps, scene.render.fps_base = 120, 0.25
    said["fps 480"] = _refused(lambda: api.generate(head, strip=strip.name), "frame rate", "240")
    scene.render.fps, scene.render.fps_base = 24, 1.0
    check(len(head.thunder.takes) == 0, "a refused generate made takes")

    # The takes folder: a file where it should be (beside the saved .blend), or a place that takes no files.
    project = work_dir / "project"
    project.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(project / "scene.blend"))
    head = bpy.data.objects[head.name]
    (project / "thunder_takes").write_text("not a folder")
    said["takes folder is a file"] = _refused(lambda: api.generate(head, strip=strip.name, takes=1, steps=1),
                                              "takes folder", "thunder_takes")
    (project / "thunder_takes").unlink()
    for place in ("/proc/thunder_takes", "/sys/thunder_takes"):
        said[place] = _refused(lambda: api.check_folder(Path(place), "the takes folder"), place)
    check(len(head.thunder.takes) == 0, "a refused generate made takes")

    # A take without a seed, or with damaged settings, from the reader: a sentence, nothing keyed.
    api.generate(head, strip=strip.name, takes=1, seed=3, steps=1)
    check(len(head.thunder.takes) == 1, "generate did not make a take")
    reader = api.read_take
    for what, damage, word in (("no seed", lambda meta: meta.pop("seed"), "seed"),
                               ("seed text", lambda meta: meta.update(seed="7"), "seed"),
                               ("settings a list", lambda meta: meta.update(settings=[1]), "settings")):
        def damaged(path, damage=damage):
            take = reader(path)
            if path.endswith("seed10.npz"):   # the second of the two takes: the first must not be keyed either
                damage(take.meta)
            return take
        api.read_take = damaged
        try:
            said[f"take: {what}"] = _refused(lambda: api.generate(head, strip=strip.name, takes=2, seed=9, steps=1),
                                            word)
        finally:
            api.read_take = reader
        check(len(head.thunder.takes) == 1 and len(_take_actions()) == 1, "a damaged take changed the head")

    # The head's mesh deleted while a job runs: a sentence, nothing else changes.
    before = [(t.name, t.action.name) for t in head.thunder.takes]
    api.generate(head, strip=strip.name, takes=1, steps=30, wait=False)
    mesh_name = head.thunder.mesh.name
    bpy.data.objects.remove(head.thunder.mesh)
    _wait_for(thunder, lambda: session_idle(thunder), "the job to end")
    check(api.notice.level == "ERROR" and "deleted while Thunder was generating" in api.notice.text
          and head.name in api.notice.text, api.notice.text)
    said["mesh deleted while generating"] = api.notice.text
    check([(t.name, t.action.name) for t in head.thunder.takes] == before and _take_actions() == [before[0][1]],
          f"the takes changed: {[(t.name, t.action.name) for t in head.thunder.takes]}")
    check(mesh_name not in bpy.data.objects, "the mesh came back")

    # Edited heads: vertices deleted, or faces subdivided.
    for edit in ("delete", "subdivide"):
        head = api.add_head(name=f"{edit} head")
        api.generate(head, strip=strip.name, takes=2, seed=1, steps=1)
        mesh = head.thunder.mesh.data
        built = len(mesh.vertices)
        edited = bmesh.new()
        edited.from_mesh(mesh)
        if edit == "delete":
            bmesh.ops.delete(edited, geom=list(edited.verts)[:23], context="VERTS")
        else:
            bmesh.ops.subdivide_edges(edited, edges=list(edited.edges)[:10], cuts=1)
        edited.to_mesh(mesh)
        edited.free()
        mesh.update()
        now = len(mesh.vertices)
        check(now != built, f"the {edit} edit did not change the vertex count")
        words = (f"'{head.name}'", f"has {now} vertices", f"built it with {built}")
        takes_before, actions_before = len(head.thunder.takes), _take_actions()
        said[f"{edit}: generate"] = _refused(lambda: api.generate(head, strip=strip.name, takes=1, steps=1), *words)
        said[f"{edit}: resample"] = _refused(lambda: api.resample(head), *words)
        said[f"{edit}: play take"] = _refused(lambda: api.activate_take(head, 0), *words)
        folder = work_dir / f"export-{edit}"
        said[f"{edit}: export"] = _refused(lambda: api.export(head, str(folder), formats=("fbx",)), *words)
        check(not folder.exists() or not any(folder.iterdir()), "an edited head was exported")
        check(len(head.thunder.takes) == takes_before and _take_actions() == actions_before,
              "a refused action changed the takes")
        # Deleting a take still works on an edited head (it puts nothing on the mesh).
        api.delete_take(head, 0)
        check(len(head.thunder.takes) == takes_before - 1, "a take of an edited head could not be deleted")
    return {"said": said}


def session_idle(thunder):
    return thunder.session.manager().job is None


class RecordingLayout:
    """Stands in for a UILayout so the panel's draw code runs headless: every prop must name a real property and
    every operator a registered one; what was drawn is recorded."""

    def __init__(self, drawn=None):
        self.drawn = [] if drawn is None else drawn
        self.enabled = True

    def _nested(self, *args, **kwargs):
        return RecordingLayout(self.drawn)

    row = column = box = split = _nested

    def prop(self, data, name, **kwargs):
        check(name in data.bl_rna.properties, f"the panel draws {name!r}, which {data!r} does not have")
        self.drawn.append(("prop", name))

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        check(name in data.bl_rna.properties and hasattr(search_data, search_name), f"bad prop_search {name}")
        self.drawn.append(("prop_search", name))

    def operator(self, idname, **kwargs):
        category, name = idname.split(".")
        check(hasattr(getattr(bpy.ops, category), name) and getattr(getattr(bpy.ops, category), name).get_rna_type(),
              f"the panel draws the operator {idname}, which is not registered")
        self.drawn.append(("operator", idname))
        return type("OperatorProperties", (), {})()

    def label(self, text="", **kwargs):
        self.drawn.append(("label", text))

    def progress(self, factor=0.0, type="BAR", text=""):
        check(0.0 <= factor <= 1.0, f"progress factor {factor}")
        self.drawn.append(("progress", text))

    def template_list(self, list_type, list_id, data, name, active_data, active_name, **kwargs):
        check(name in data.bl_rna.properties and active_name in active_data.bl_rna.properties, "bad template_list")
        ui_list = getattr(bpy.types, list_type)
        for index, item in enumerate(getattr(data, name)):
            ui_list.draw_item(None, bpy.context, self, data, item, 0, active_data, active_name, index)
        self.drawn.append(("template_list", name))


def draw_panel_headless(thunder):
    layout = RecordingLayout()
    thunder.ui.draw_panel(layout, bpy.context)
    return layout.drawn


def evaluated_vertices(mesh_object, frames):
    """The deformed mesh at `frames`: in the mesh's own space (FLAME coordinates) saved to a file, and in world
    space returned."""
    scene = bpy.context.scene
    local, world = [], []
    for frame in frames:
        scene.frame_set(frame)
        evaluated = mesh_object.evaluated_get(bpy.context.evaluated_depsgraph_get())
        data = evaluated.to_mesh()
        co = np.empty(len(data.vertices) * 3, dtype=np.float32)
        data.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        co = co.reshape(-1, 3).astype(np.float64)
        matrix = np.array(mesh_object.matrix_world)
        local.append(co)
        world.append(co @ matrix[:3, :3].T + matrix[:3, 3])
    path = Path(os.environ["BLENDER_USER_RESOURCES"]).parent / "evaluated_local.npy"
    np.save(path, np.stack(local))
    return {"local_file": str(path), "world": np.stack(world)}


def _take_values(item):
    """(T, C) every keyed channel of a take's action (shape keys, then bones), in a fixed order."""
    channels = {**key_values(item.action, "KEY"), **key_values(item.action, "OBJECT")}
    return np.stack([channels[name][1] for name in sorted(channels)], axis=1), sorted(channels)


def _frame_speeds(world):
    """(T - 1,) mean vertex move (mm) from each frame to the next."""
    return np.linalg.norm(np.diff(world, axis=0), axis=-1).mean(-1) * 1000.0


@case
def directing(work_dir, args):
    """Resample range (the preview range; then two markers, lips only) on a take at 24 fps: a new take, the old
    one kept; outside the range (and outside the lips) every key equals the old take's, bit for bit; the seam
    figure at both edges. Then Generate with the panel's constraints (mouth closed, a smile key, eyes open):
    each kept on the keyed shape keys and the jaw, and saved in the take's settings, so Resample keeps them."""
    thunder = install_extension(args["zip"])
    api, scene = thunder.api, bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    strip = add_sound_strip(scene, "voice", args["wav"], frame=1)
    head = api.add_head()
    takes = head.thunder.takes
    api.generate(head, strip=strip.name, takes=1, seed=3)
    old = takes[0]
    old_values, channels = _take_values(old)
    # No range chosen, a range off the take, a hold before the take: a sentence each, and nothing changes.
    scene.use_preview_range = False
    for call, words in ((lambda: api.resample_range(head), "choose the frames to resample"),
                        (lambda: api.resample_range(head, 500, 600), "are not on Take 1"),
                        (lambda: api.resample_range(head, 5, 9, only="ears"), "unknown part"),
                        (lambda: api.generate(head, strip=strip.name, constraints=[
                            {"kind": "hold", "pose": "neutral", "start": 0, "end": 5}]), "before the take's first")):
        try:
            call()
            raise AssertionError(f"no error for {words}")
        except thunder.api.ThunderError as exc:
            check(words in str(exc), f"the sentence {exc!r} does not say {words!r}")
        check(len(takes) == 1, f"a refused call changed the takes: {len(takes)}")
    names = list(head.data["thunder_expression_names"])
    lip_names = {f'key_blocks["{n}"].value' for n in names if n.startswith(("mouth", "jaw"))}
    lip_channels = [k for k, c in enumerate(channels)
                    if c[0] in lip_names or c[0].startswith(('key_blocks["pose.jaw.', 'pose.bones["jaw"]'))]
    # A bone's location follows the expressed joints, which every expression moves: with the lips
    # resampled alone, the other bones' locations may change too (their rotations may not).
    locations = [k for k, c in enumerate(channels) if c[0].endswith(".location")]
    result = {"frames": old.frames, "ranges": []}
    mesh = head.thunder.mesh
    all_frames = list(range(1, old.frames + 1))
    old_speeds = _frame_speeds(evaluated_vertices(mesh, all_frames)["world"])
    span = 11
    ordinary = float(np.median([old_speeds[i:i + span].max() for i in range(len(old_speeds) - span + 1)]))
    edges = []
    for number, (first, last, only) in enumerate(((30, 77, None), (90, 120, "lips"))):
        if only is None:
            scene.use_preview_range = True
            scene.frame_preview_start, scene.frame_preview_end = first, last
        else:
            scene.use_preview_range = False
            for frame in (first, last):
                scene.timeline_markers.new(f"m{frame}", frame=frame).select = True
        check(api.scene_range() == (first, last), f"the range is {api.scene_range()}, not {(first, last)}")
        api.activate_take(head, 0)
        api.resample_range(head, only=only, seed=50 + number)
        check(len(takes) == 2 + number, f"{len(takes)} takes after resample range {number + 1}")
        new = takes[len(takes) - 1]
        check(head.thunder.active_take == len(takes) - 1, "the new take does not play")
        check(takes[0].action is not None and takes[0].file == old.file, "the old take was changed")
        values, new_channels = _take_values(new)
        check(new_channels == channels and len(values) == len(old_values), "the new take has other channels")
        inside = np.zeros(values.shape, dtype=bool)
        rows = slice(first - 1, last)   # frame f is row f - 1 (the strip starts at frame 1)
        inside[rows, :] = only is None
        if only is not None:
            inside[rows, lip_channels] = True
            inside[rows, locations] = True
        check(np.array_equal(values[~inside], old_values[~inside]),
              f"range {first}-{last} ({only}): keys outside the range differ from the old take's by "
              f"{np.abs(values[~inside] - old_values[~inside]).max()}")
        changed = np.abs(values[inside] - old_values[inside]).max()
        check(changed > 1e-3, f"range {first}-{last}: nothing changed inside ({changed})")
        speeds = _frame_speeds(evaluated_vertices(mesh, all_frames)["world"])
        for edge in (first, last + 1):   # the moves into the range's first frame and out of its last
            row = edge - 1
            lo = max(0, row - 1 - span // 2)
            edges.append(float(speeds[lo:lo + span].max()))
        result["ranges"].append({"first": first, "last": last, "only": only, "name": new.name, "changed": float(changed)})
        settings = json.loads(new.settings)
        check(settings.get("resampled_from", {}).get("start") == first - 1, f"the take's record: {settings}")
    result["seam"] = {"ordinary_mm": ordinary, "edges_mm": edges, "ratio": float(np.median(edges) / ordinary)}

    # Constraints from the panel: the operator's path (scene.thunder.constraints).
    scene.use_preview_range = False
    for kind in ("hold", "key", "hold"):
        bpy.ops.thunder.constraint_add(kind=kind)
    closed, smile, eyes = scene.thunder.constraints
    closed.pose, closed.start, closed.end = "mouth_closed", 20, 40
    smile.expression, smile.value, smile.frame = "mouthSmileLeft", 0.8, 60
    eyes.pose, eyes.start, eyes.end = "eyes_open", 10, 100
    drawn = draw_panel_headless(thunder)
    for element in (("operator", "thunder.resample_range"), ("operator", "thunder.constraint_add"),
                    ("prop", "range_only")):
        check(element in drawn, f"the panel does not draw {element}")
    api.generate(head, strip=strip.name, takes=1, seed=9, constraints=api.scene_constraints())
    constrained = takes[len(takes) - 1]
    key = key_values(constrained.action, "KEY")
    bones = key_values(constrained.action, "OBJECT")
    opening = [n for n in ("mouthClose", "mouthFunnel", "mouthLowerDownLeft", "mouthLowerDownRight",
                           "mouthUpperUpLeft", "mouthUpperUpRight") if n in names]
    held = slice(20 - 1, 40)
    worst_mouth = max(float(np.abs(key[(f'key_blocks["{n}"].value', 0)][1][held]).max()) for n in opening)
    jaw_w = bones[('pose.bones["jaw"].rotation_quaternion', 0)][1][held]
    worst_jaw = float(np.abs(1.0 - jaw_w).max())
    smile_value = float(key[('key_blocks["mouthSmileLeft"].value', 0)][1][60 - 1])
    blink = max(float(np.abs(key[(f'key_blocks["{n}"].value', 0)][1][10 - 1:100]).max())
                for n in ("eyeBlinkLeft", "eyeBlinkRight"))
    check(worst_mouth < 1e-5 and worst_jaw < 1e-6, f"mouth closed not kept: lips {worst_mouth}, jaw {worst_jaw}")
    check(abs(smile_value - 0.8) < 1e-4, f"the smile key is {smile_value} at frame 60, not 0.8")
    check(blink < 1e-5, f"the eyes blink ({blink}) during the eyes-open hold")
    saved = json.loads(constrained.settings)["constraints"]
    check(saved == [{"kind": "hold", "pose": "mouth_closed", "start": 19, "end": 40},
                    {"kind": "key", "name": "mouthSmileLeft", "value": 0.8, "frame": 59},
                    {"kind": "hold", "pose": "eyes_open", "start": 9, "end": 100}], f"saved constraints {saved}")
    # Resample (new seeds for the takes not kept) keeps the take's constraints.
    for item in takes:
        item.kept = item != constrained
    api.resample(head)
    again = takes[len(takes) - 1]
    check(again.seed != 9 and json.loads(again.settings)["constraints"] == saved, "resample lost the constraints")
    key = key_values(again.action, "KEY")
    check(abs(float(key[('key_blocks["mouthSmileLeft"].value', 0)][1][60 - 1]) - 0.8) < 1e-4,
          "the resampled take does not keep the smile key")
    result["constraints"] = {"mouth_max": worst_mouth, "jaw_max": worst_jaw, "smile": smile_value, "blink_max": blink}
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    status = 1
    try:
        if len(argv) not in (2, 3) or argv[0] not in CASES:
            raise SystemExit(f"usage: blender_cases.py CASE WORK_DIR [JSON_ARGS]; cases: {sorted(CASES)}")
        name, work_dir = argv[0], Path(argv[1])
        args = json.loads(argv[2]) if len(argv) == 3 else {}
        bpy.ops.wm.read_factory_settings(use_empty=True)
        try:
            result = CASES[name](work_dir, args)
        finally:
            disable_extensions()  # a failure here still shows the case's own error as its context
        print("THUNDER_RESULT " + json.dumps(result if result is not None else {}), flush=True)
        status = 0
    except SystemExit as error:
        print(error, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


if __name__ == "__main__":
    main()
