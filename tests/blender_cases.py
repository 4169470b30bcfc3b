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
    """Install; a sound strip from a WAV (offset and trimmed); the built-in head; 2 takes with the real backend
    and shipped model; keys equal the take files; resample; switch takes; export FBX, Alembic and USD and
    read FBX and Alembic back (USD is read back by the test, with pxr)."""
    from export_readback import alembic_vertices, fbx_shape_key_curves

    thunder = install_extension(args["zip"])
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    strip = add_sound_strip(scene, "voice", args["wav"], frame=10, trim_start=6)
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
    mesh_vertices = evaluated_vertices(mesh, [16, frame, 16 + frames[0] - 1])

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
    abc = alembic_vertices(by_format["abc"], [16, frame, 16 + frames[0] - 1], 24.0)
    abc_error = float(np.abs(np.asarray(abc) - mesh_vertices["world"]).max())
    check(abc_error < 1e-4, f"Alembic vertices differ from Blender's by {abc_error} m")
    result = {"takes": [{"file": t.file, "seed": t.seed, "frame_start": t.frame_start} for t in thunder_head.takes],
            "exports": by_format, "fbx_error": worst, "abc_error": abc_error, "frames": frames,
            "probe_frames": [16, frame, 16 + frames[0] - 1], "mesh_local": mesh_vertices["local_file"],
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
    api.generate(head, strip=strip.name, takes=1, steps=400, wait=False)
    _wait_for(thunder, lambda: api.backend_status()[0] == "busy" and api.backend_status()[2] > 0, "sampling")
    drawn = draw_panel_headless(thunder)
    check(("operator", "thunder.cancel") in drawn and any(kind == "progress" for kind, _ in drawn),
          f"the busy panel shows no progress bar and Cancel: {drawn}")
    api.cancel()
    _wait_for(thunder, lambda: session_idle(thunder), "the cancel")
    check("cancelled" in api.notice.text and len(head.thunder.takes) == 0, f"after cancel: {api.notice.text}")
    said["cancel"] = api.notice.text

    # The backend crashes mid-job: the panel says so, nothing changes, and the next Generate restarts it.
    api.generate(head, strip=strip.name, takes=1, steps=400, wait=False)
    _wait_for(thunder, lambda: api.backend_status()[0] == "busy" and api.backend_status()[2] > 0, "sampling")
    os.killpg(thunder.session.manager().process.pid, signal.SIGKILL)
    _wait_for(thunder, lambda: session_idle(thunder), "the crash to be noticed")
    status, message, _ = api.backend_status()
    check(status == "error" and "stopped unexpectedly" in message, f"after a crash: {status}: {message}")
    check(api.notice.level == "ERROR" and "stopped unexpectedly" in api.notice.text, api.notice.text)
    check(len(head.thunder.takes) == 0, "the crash left takes")
    said["crash"] = api.notice.text
    check(bpy.ops.thunder.generate() == {"FINISHED"}, f"generate after the crash: {api.notice.text}")
    check(len(head.thunder.takes) == settings.takes, "generate after a crash did not restart the backend")

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
