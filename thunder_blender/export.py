"""Exporting takes to files other programs read: FBX, Alembic and USD, with bpy and numpy alone.

    export_take(head, index, "fbx", path)            # one take, one format, one file
    export_takes(head, folder, ("fbx", "abc", "usd"), every_take=False)   # <head>_<take>.<ext> per take and format
    planned_paths(folder, head_name, take_names, formats)  # the names export_takes gives, without writing

Each export plays the take, selects only the head's armature and mesh, and sets the scene's frame range to the
take's frames; whatever the user had (frame range, current frame, selection, active object, the playing take
and actions) is put back afterwards, also when the export fails. What each file holds:

    FBX       the skeleton with its baked bone animation, and the mesh with its shape keys as blend shapes whose
              weights are keyed every frame (with Blender's default FBX settings the shape-key animation is
              silently dropped: see SETTINGS)
    Alembic   the deformed mesh's vertices, baked every frame (no shape keys, no bones)
    USD       a UsdSkel skeleton and animation holding the bone rotations and the blend-shape weights

Problems are ExportError, one sentence naming the file or folder. An existing file is never replaced unless
asked (`overwrite=True`).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import bpy

from . import compat
from .errors import ThunderError
from .take_actions import activate, shape_key_datablock

FORMATS = ("fbx", "abc", "usd")
EXTENSIONS = {"fbx": ".fbx", "abc": ".abc", "usd": ".usd"}
ACCEPTED_SUFFIXES = {"fbx": (".fbx",), "abc": (".abc",), "usd": (".usd", ".usda", ".usdc")}
FORMAT_NAMES = {"fbx": "FBX", "abc": "Alembic", "usd": "USD"}

# The operators' settings that matter. Keys an operator lacks in this Blender are left out (see _call).
SETTINGS = {
    "fbx": dict(
        use_selection=True, object_types={"ARMATURE", "MESH"},
        # Applying modifiers other than the Armature would drop the shape keys; the skinning is written as an
        # FBX skin deformer either way, so the mesh goes out unmodified, with its shape keys.
        use_mesh_modifiers=False,
        add_leaf_bones=False,
        bake_anim=True, bake_anim_use_all_bones=True, bake_anim_force_startend_keying=True, bake_anim_step=1.0,
        # The defaults (NLA strips and all actions on, simplify 1.0) drop or thin the shape-key animation.
        bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False, bake_anim_simplify_factor=0.0,
        use_custom_props=False, path_mode="AUTO", batch_mode="OFF",
    ),
    "abc": dict(
        selected=True, flatten=False, uvs=True, normals=True, face_sets=False, apply_subdiv=False,
        export_hair=False, export_particles=False, export_custom_properties=False,
        as_background_job=False,   # in the UI a background job would return before the file is written
        visible_objects_only=False,   # 4.5 only
    ),
    "usd": dict(
        selected_objects_only=True, visible_objects_only=False,   # the latter is 4.5's (default True there)
        export_animation=True, export_armatures=True, only_deform_bones=False, export_shapekeys=True,
        export_meshes=True, export_materials=True, export_hair=False, use_instancing=False,
        export_lights=False, export_cameras=False, export_curves=False, export_points=False, export_volumes=False,
    ),
}

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


class ExportError(ThunderError):
    """A take that cannot be exported to the file or folder asked for; one sentence."""


def safe_file_name(text: str, fallback: str = "take") -> str:
    """`text` as a file name any file system takes: letters, digits, '-', '_' and '.', no leading dot."""
    name = re.sub(r"[^\w.-]+", "_", text.strip(), flags=re.UNICODE)
    name = re.sub(r"_{2,}", "_", name).strip("._")[:120] or fallback
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = f"{name}_"
    return name


def planned_paths(folder, head_name: str, take_names, formats=FORMATS) -> list[Path]:
    """The files export_takes writes for these takes, take by take and format by format:
    `<folder>/<head name>_<take name>.<ext>`, made file-system safe; takes whose names come out the same
    (ignoring case) get _2, _3, ..."""
    paths, used = [], set()
    for take_name in take_names:
        stem = safe_file_name(f"{head_name}_{take_name}")
        unique, number = stem, 2
        while unique.lower() in used:
            unique, number = f"{stem}_{number}", number + 1
        used.add(unique.lower())
        paths += [Path(folder) / f"{unique}{EXTENSIONS[fmt]}" for fmt in formats]
    return paths


def check_folder(folder, what: str = "the export folder") -> Path:
    """Make `folder` (and its parents) if needed and prove it writable by writing a file there; `what` names
    it in the sentence (the export folder, the takes folder)."""
    folder = Path(folder)
    problem = None
    if folder.exists() and not folder.is_dir():
        problem = "it is a file, not a folder"
    else:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".thunder-write-test-"):
                pass
        except OSError as error:
            problem = (error.strerror or str(error)).lower()
            if isinstance(error, (NotADirectoryError, FileExistsError)):
                problem = "part of its path is a file, not a folder"
    if problem:
        raise ExportError(f"{what} {folder} cannot be written: {problem}")
    return folder


def _head_parts(head, index: int):
    thunder = getattr(head, "thunder", None)
    if head is None or head.type != "ARMATURE" or thunder is None or not thunder.is_head:
        raise ExportError(f"{getattr(head, 'name', head)} is not a Thunder head")
    mesh = thunder.mesh
    if mesh is None:
        raise ExportError(f"the head {head.name} has lost its mesh")
    if not 0 <= index < len(thunder.takes):
        raise ExportError(f"the head {head.name} has no take number {index + 1}")
    take = thunder.takes[index]
    if take.action is None:
        raise ExportError(f"the take {take.name} of {head.name} has lost its action")
    if take.frames < 1:
        raise ExportError(f"the take {take.name} of {head.name} has no frames")
    return mesh, take


def _call(operator, settings: dict) -> None:
    """Run an export operator with the settings this Blender knows (4.5 and 5.x differ a little)."""
    known = {prop.identifier for prop in operator.get_rna_type().properties}
    result = operator(**{key: value for key, value in settings.items() if key in known})
    if "FINISHED" not in result:   # Alembic reports its errors and returns CANCELLED without raising
        raise RuntimeError("the exporter could not write the file (Blender's log has the details)")


def _reason(error: BaseException) -> str:
    """The sentence-sized reason in an operator's RuntimeError (its text can hold a whole Python traceback)."""
    text = str(error)
    errno = re.findall(r"\[Errno \d+\] ([^:\n]+)", text)
    if errno:
        return errno[-1].strip().lower()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith(("Location:", "File ", "Traceback"))]
    return re.sub(r"^(Error:\s*)+", "", lines[-1] if lines else type(error).__name__).rstrip(".")


def _exists(path: Path) -> bool:
    """Whether anything (a dangling link too) has the name `path`; a name the system refuses is an ExportError."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise ExportError(f"{path} cannot be written: {(error.strerror or str(error)).lower()}") from None
    return True


class _KeepSceneState:
    """Remembers what an export changes (frame range and step, current frame, selection, active object, the
    playing take and the actions on the head) and puts it back on leaving."""

    def __init__(self, context, head):
        self.scene, self.view_layer, self.head = context.scene, context.view_layer, head
        self.keys = shape_key_datablock(head)

    def __enter__(self):
        scene, head = self.scene, self.head
        self.frames = (scene.frame_start, scene.frame_end, scene.frame_step, scene.frame_current,
                       scene.frame_subframe)
        self.selected = [obj for obj in self.view_layer.objects if obj.select_get()]
        self.active = self.view_layer.objects.active
        self.active_take = head.thunder.active_take
        self.playing = [(datablock, compat.assigned_action(datablock),
                         getattr(datablock.animation_data, "action_slot", None) if datablock.animation_data else None)
                        for datablock in (self.keys, head)]
        return self

    def __exit__(self, *exc_info):
        scene, thunder = self.scene, self.head.thunder
        if thunder.active_take != self.active_take:
            thunder.active_take = self.active_take      # plays it again (the property's update)
        for datablock, action, slot in self.playing:    # exactly what played before, even a non-take action
            if compat.assigned_action(datablock) != action or (
                    action is not None and datablock.animation_data.action_slot != slot):
                compat.assign(datablock, action, slot)
        for obj in self.view_layer.objects:
            if obj.select_get():
                obj.select_set(False)
        for obj in self.selected:
            try:
                obj.select_set(True)
            except RuntimeError:   # removed from the view layer meanwhile
                pass
        self.view_layer.objects.active = self.active
        start, end, step, frame, subframe = self.frames
        scene.frame_start, scene.frame_end, scene.frame_step = start, end, step
        scene.frame_set(frame, subframe=subframe)
        return False


def _checked_path(path, fmt: str, context, overwrite: bool = False) -> Path:
    """`path` as an absolute Path a `fmt` file may be written to (its folder made), or ExportError."""
    if fmt not in FORMATS:
        raise ExportError(f"{fmt!r} is not an export format Thunder knows (choose one of {', '.join(FORMATS)})")
    path = Path(bpy.path.abspath(str(path)))
    if path.suffix.lower() not in ACCEPTED_SUFFIXES[fmt]:
        raise ExportError(f"{path} does not end in {' or '.join(ACCEPTED_SUFFIXES[fmt])}, "
                          f"as a {FORMAT_NAMES[fmt]} file must")
    check_folder(path.parent)
    if _exists(path) and not overwrite:
        raise ExportError(f"{path} already exists; Thunder does not replace files unless asked to overwrite")
    if path.is_dir():
        raise ExportError(f"{path} is a folder, not a file Thunder can write")
    if context.mode not in ("OBJECT", "POSE"):
        raise ExportError(f"Blender is in {context.mode.replace('_', ' ').lower()} mode; go back to object mode "
                          f"to export {path.name}")
    return path


def export_take(head, index: int, fmt: str, path, overwrite: bool = False, context=None) -> Path:
    """Write take `index` of `head` to `path` as `fmt` ("fbx", "abc" or "usd"); returns the file's path."""
    context = context or bpy.context
    mesh, take = _head_parts(head, index)
    path = _checked_path(path, fmt, context, overwrite)
    return _write_take(context, head, take, index, (head, mesh), fmt, path)


def _write_take(context, head, take, index: int, objects, fmt: str, path: Path) -> Path:
    """Play take `index` of `head`, select `objects` (the first one active), set the frame range to the take's
    and run the exporter; the scene is put back as it was (_KeepSceneState)."""
    view_layer = context.view_layer
    for obj in objects:
        if view_layer.objects.get(obj.name) != obj:
            raise ExportError(f"{obj.name} is not in the view layer {view_layer.name}, so it cannot be exported")

    first = math.floor(take.frame_start + 1e-6)
    last = max(first, math.ceil(take.frame_start + take.frames - 1 - 1e-6))
    with _KeepSceneState(context, head):
        activate(head, index)
        for obj in view_layer.objects:
            if obj.select_get():
                obj.select_set(False)
        try:
            for obj in objects:
                obj.select_set(True)
        except RuntimeError as error:   # hidden from selection, for instance
            raise ExportError(f"{objects[0].name} cannot be selected for export: {_reason(error)}") from None
        view_layer.objects.active = objects[0]
        scene = context.scene
        scene.frame_start, scene.frame_end, scene.frame_step = first, last, 1
        scene.frame_set(first)
        settings = dict(SETTINGS[fmt], filepath=str(path), check_existing=False)
        if fmt == "abc":
            settings.update(start=first, end=last)
        operator = {"fbx": bpy.ops.export_scene.fbx, "abc": bpy.ops.wm.alembic_export,
                    "usd": bpy.ops.wm.usd_export}[fmt]
        try:
            _call(operator, settings)
        except RuntimeError as error:
            raise ExportError(f"the {FORMAT_NAMES[fmt]} export to {path} failed: {_reason(error)}") from None
    if not path.is_file() or path.stat().st_size == 0:
        raise ExportError(f"the {FORMAT_NAMES[fmt]} exporter wrote nothing to {path}")
    return path


def export_character_take(mesh, index: int, fmt: str, path, overwrite: bool = False, context=None) -> Path:
    """Write take `index` of the head that drives the character `mesh` (character.py) as the character: its
    mesh and armature, with the take's keys (shape-key weights and bones), to `path` as `fmt`."""
    context = context or bpy.context
    binding = getattr(mesh, "thunder_character", None)
    if binding is None or not binding.is_character or binding.head is None:
        raise ExportError(f"{getattr(mesh, 'name', mesh)} is not a character driven by a Thunder head")
    head = binding.head
    path = _checked_path(path, fmt, context, overwrite)
    _, take = _head_parts(head, index)
    objects = (binding.armature, mesh) if binding.armature is not None else (mesh,)
    return _write_take(context, head, take, index, objects, fmt, path)


def export_takes(head, folder, formats=FORMATS, every_take: bool = False, overwrite: bool = False,
                 context=None) -> list[Path]:
    """Export the playing take (or every take) of `head` into `folder`, one file per take and format, named
    `<head name>_<take name>.<ext>`; returns the files written. Every name is checked before anything is
    written, so an existing file stops the export before it starts."""
    formats = tuple(dict.fromkeys(formats))
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"choose export formats among {', '.join(FORMATS)}"
                          + (f" ({', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not one)"
                             if unknown else ""))
    thunder = getattr(head, "thunder", None)
    if thunder is None or not thunder.is_head:
        raise ExportError(f"{getattr(head, 'name', head)} is not a Thunder head")
    if every_take:
        indices = list(range(len(thunder.takes)))
    else:
        indices = [thunder.active_take] if 0 <= thunder.active_take < len(thunder.takes) else []
    if not indices:
        raise ExportError(f"the head {head.name} has no takes to export" if every_take
                          else f"the head {head.name} plays no take; choose one in its list of takes to export it")
    for index in indices:
        _head_parts(head, index)
    folder = Path(bpy.path.abspath(str(folder)))
    paths = planned_paths(folder, head.name, [thunder.takes[index].name for index in indices], formats)
    jobs = [(index, fmt) for index in indices for fmt in formats]   # in planned_paths' order
    plan = [(index, fmt, path) for (index, fmt), path in zip(jobs, paths)]
    check_folder(folder)
    existing = [path for _, _, path in plan if _exists(path)]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ExportError(f"{existing[0]}{more} already exist{'s' if not more else ''}; "
                          f"Thunder does not replace files unless asked to overwrite")
    return [export_take(head, index, fmt, path, overwrite=overwrite, context=context) for index, fmt, path in plan]
