"""The Blender side of tests/test_blender_export.py, run in a Python of its own (bpy and numpy; no torch).

    python tests/export_scene_script.py WORK_DIR

WORK_DIR holds what the test prepared with the backend: head.npz and info.json (the backend's head reply),
take_a.npz and take_b.npz, and args.json ({"fps", "frame_start_a", "frame_start_b", "unwritable"}). This
script builds the head, keys both takes (take B plays, another object is selected and active, and the mesh
has a modifier besides its Armature, as a user's might), exports every take in every format with
thunder_blender.export, and writes into WORK_DIR:

    result.json     the files written; the scene's state before and after each export (it must not change);
                    the sentence of every ExportError it provoked; whether refused files were left alone
    readback.npz    what the FBX and Alembic files hold, read back through Blender (tests/export_readback.py),
                    and Blender's own evaluated mesh at the same frames, in world space

It prints `THUNDER_RESULT done` last and leaves with os._exit (Blender can hang at exit).
"""

import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # thunder_blender from this checkout; tests/ is on the path as the script's folder

import bpy  # noqa: E402
import numpy as np  # noqa: E402

import export_readback  # noqa: E402
from thunder_blender import compat, export, head_build, properties, take_actions, take_file  # noqa: E402


def scene_state(head) -> dict:
    """What an export must leave as it found it."""
    scene, view_layer = bpy.context.scene, bpy.context.view_layer

    def playing(datablock):
        animation = datablock.animation_data
        action = compat.assigned_action(datablock)
        slot = getattr(animation, "action_slot", None) if animation is not None else None
        return [action.name if action else None, slot.identifier if slot else None]

    return {"frame_start": scene.frame_start, "frame_end": scene.frame_end, "frame_step": scene.frame_step,
            "frame_current": scene.frame_current,
            "selected": sorted(obj.name for obj in view_layer.objects if obj.select_get()),
            "active": view_layer.objects.active.name if view_layer.objects.active else None,
            "active_take": head.thunder.active_take,
            "keys_playing": playing(take_actions.shape_key_datablock(head)), "armature_playing": playing(head)}


def evaluated_world_vertices(mesh_object, frames) -> np.ndarray:
    """Blender's deformed mesh at `frames`, in world space: (T, V, 3)."""
    scene, out = bpy.context.scene, []
    for frame in frames:
        scene.frame_set(int(frame))
        evaluated = mesh_object.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = evaluated.to_mesh()
        co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        matrix = np.array(evaluated.matrix_world, dtype=np.float64)
        out.append(co.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3])
    return np.stack(out)


def refused(call) -> dict:
    """Run an export that must fail; the error's type and sentence."""
    try:
        call()
    except export.ExportError as error:
        return {"type": "ExportError", "message": str(error)}
    except Exception as error:  # the wrong kind of failure: the test shows it
        return {"type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}
    return {"type": None, "message": "no error"}


def main(work: Path) -> None:
    args = json.loads((work / "args.json").read_text())
    info = json.loads((work / "info.json").read_text())
    bpy.ops.wm.read_factory_settings(use_empty=True)
    properties.register()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = int(args["fps"]), 1.0
    scene.frame_start, scene.frame_end = 1, 250

    started = time.perf_counter()
    head = head_build.build_head(work / "head.npz", info)
    mesh_object = head.thunder.mesh
    take_a = take_file.read_take(work / "take_a.npz")
    take_b = take_file.read_take(work / "take_b.npz")
    take_actions.add_take(head, take_a, float(args["frame_start_a"]), 1, "", label="Take 1")
    take_actions.add_take(head, take_b, float(args["frame_start_b"]), 2, "", label="Take 2: loud/soft?")   # plays
    # A modifier the user added (no visible effect): FBX's use_mesh_modifiers=True would drop every shape key.
    mesh_object.modifiers.new("User displace", "DISPLACE").strength = 0.0
    bystander = bpy.data.objects.new("Bystander", bpy.data.meshes.new("Bystander"))
    scene.collection.objects.link(bystander)
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj == bystander)
    bpy.context.view_layer.objects.active = bystander
    scene.frame_set(7)
    result = {"bpy": bpy.app.version_string, "build_seconds": time.perf_counter() - started}

    # Every take, every format.
    out = work / "out"
    result["state_before"] = scene_state(head)
    started = time.perf_counter()
    paths = export.export_takes(head, out, every_take=True)
    result["export_seconds"] = time.perf_counter() - started
    result["state_after"] = scene_state(head)
    result["paths"] = [str(path) for path in paths]
    result["sizes"] = [path.stat().st_size for path in paths]
    playing_only = export.export_takes(head, work / "playing", formats=("usd",))
    result["playing_only"] = [str(path) for path in playing_only]
    result["state_after_playing_only"] = scene_state(head)

    # Refusals: nothing is replaced, unwritable folders are named, failures leave the scene as it was.
    stamps = {str(path): path.stat().st_mtime_ns for path in paths}
    errors = {"again": refused(lambda: export.export_takes(head, out, every_take=True))}
    result["untouched_after_again"] = all(Path(p).stat().st_mtime_ns == t for p, t in stamps.items())
    keep = work / "keep.fbx"
    keep.write_bytes(b"the user's own file")
    errors["existing_file"] = refused(lambda: export.export_take(head, 0, "fbx", keep))
    result["keep_bytes"] = keep.read_text()
    export.export_take(head, 0, "fbx", keep, overwrite=True)   # asked to: replaced by a real FBX
    result["keep_shape_keys_after_overwrite"] = len(export_readback.fbx_shape_key_curves(keep))
    a_file = work / "a_file"
    a_file.write_text("not a folder")
    errors["folder_is_file"] = refused(lambda: export.export_takes(head, a_file))
    errors["folder_under_file"] = refused(lambda: export.export_takes(head, a_file / "sub"))
    errors["unwritable_folder"] = refused(lambda: export.export_takes(head, args["unwritable"]))
    errors["wrong_suffix"] = refused(lambda: export.export_take(head, 0, "usd", work / "take.fbx"))
    errors["unknown_format"] = refused(lambda: export.export_takes(head, out, formats=("obj",)))
    errors["no_such_take"] = refused(lambda: export.export_take(head, 5, "fbx", work / "five.fbx"))
    # A name that passes every check but that the exporter cannot open: a link into a missing folder.
    failing = work / "failing"
    failing.mkdir()
    result["state_before_failures"] = scene_state(head)
    for fmt in export.FORMATS:
        link = failing / f"dangling{export.EXTENSIONS[fmt]}"
        link.symlink_to(work / "missing" / "nowhere" / link.name)
        errors[f"exporter_fails_{fmt}"] = refused(lambda: export.export_take(head, 0, fmt, link, overwrite=True))
    result["state_after_failures"] = scene_state(head)
    result["errors"] = errors
    result["file_names"] = sorted(path.name for path in out.iterdir())
    result["planned"] = [path.name for path in export.planned_paths(
        work, "Thunder head", ["Take 1", "take 1", "Take: 1", "...", "CON"], ("fbx",))]

    # What the files hold, and what Blender shows.
    arrays = {}
    for index, take in enumerate((take_a, take_b)):
        fbx = [path for path in paths if path.suffix == ".fbx"][index]
        shapes, bones = export_readback.read_fbx(fbx)
        result[f"fbx_{index}_shapes"] = sorted(shapes)
        result[f"fbx_{index}_bones"] = sorted(bones)
        for name, (frames, values) in shapes.items():
            arrays[f"fbx{index}|shape|{name}|frames"], arrays[f"fbx{index}|shape|{name}|values"] = frames, values
        for name, (frames, quaternions) in bones.items():
            arrays[f"fbx{index}|bone|{name}|frames"], arrays[f"fbx{index}|bone|{name}|values"] = frames, quaternions
    frames_a = float(args["frame_start_a"]) + np.arange(take_a.n_frames)
    abc = [path for path in paths if path.suffix == ".abc"][0]
    arrays["abc0"] = export_readback.alembic_vertices(abc, frames_a, float(args["fps"]))
    state = scene_state(head)
    take_actions.activate(head, 0)
    arrays["blender0"] = evaluated_world_vertices(mesh_object, frames_a)
    arrays["blender_frames0"] = frames_a
    result["state_after_readback"] = state
    np.savez(work / "readback.npz", **arrays)
    (work / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    code = 0
    try:
        main(Path(sys.argv[1]))
        print("THUNDER_RESULT done", flush=True)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
