"""Drive character: every take of a Thunder head also plays on a character of the user's, a mesh with ARKit-named
shape keys and optionally an armature (arkit.py turns a take into ARKit's 52 weights).

    bind(mesh, head, armature=..., jaw_bone="jaw", head_target="BONE", head_bone="head")   # and key every take
    follow(head)          # the characters play the head's active take (take_actions.activate calls it)
    missing(mesh)         # the ARKit names the character has no shape key for

How a character follows the takes: each take's action (take_actions.key_take) gets two more slots per
character, one for its shape keys and one for its armature (or, without one, its mesh object), keyed through
the character's mapping when the take is keyed. Switching takes assigns the same action to the character with
its slots, so Resample, switching, deleting and exporting work as on the head, and a take's action holds
everything that take moves. Drivers were the other way: they would need the head to stay in the scene and
evaluate first, they compute clip and gaze angles poorly in driver expressions, and exporters bake them only
where they evaluate them; keys are what FBX and USD carry. After the mapping, bones or calibration change,
`rekey` keys every take again from its take file.

The character is assumed to face -y with z up in the world (Blender's front view, as glTF, FBX and VRM imports
place characters): a take's rotations, in FLAME's frame (x left, y up, z forward), turn into the world by
FLAME_TO_WORLD, and into a bone's own frame by the bone's rest orientation.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from . import arkit, compat, rig_math
from .errors import ThunderError
from .take_file import read_take

SLOT_PREFIX = "character "
# FLAME's frame to Blender's world: a turn of +90 degrees about x (y up becomes z up, z forward becomes -y),
# the turn the built-in head's armature object makes.
FLAME_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# A jawOpen shape that a turn explains less well than this (arkit.jaw_open_angle_of_shape's residual) is not
# measured: the user sets the angle by hand.
MAX_JAW_RESIDUAL = 0.5


class CharacterError(ThunderError):
    """A character that cannot be driven as asked; one sentence."""


# ---------------------------------------------------------------------------------------------- the binding
def characters_of(head) -> list:
    """The meshes driven by `head`'s takes."""
    return [obj for obj in bpy.data.objects
            if obj.type == "MESH" and obj.thunder_character.is_character and obj.thunder_character.head == head]


def shape_key_names(mesh) -> list[str]:
    """The mesh's shape keys but its reference (Basis), which no weight drives."""
    keys = mesh.data.shape_keys
    if keys is None:
        return []
    return [block.name for block in keys.key_blocks if block != keys.reference_key]


def mapping(mesh) -> dict[str, str]:
    """{ARKit name: shape key} as the character's list says (entries left empty are not mapped)."""
    return {item.name: item.shape_key for item in mesh.thunder_character.mapping if item.shape_key}


def set_mapping(mesh, new: dict[str, str]) -> None:
    """Show `new` (checked against the mesh's shape keys) in the character's list: one row per ARKit name."""
    checked = arkit.check_mapping(new, shape_key_names(mesh))
    rows = mesh.thunder_character.mapping
    rows.clear()
    for name in arkit.ARKIT_NAMES:
        row = rows.add()
        row.name = name
        row.shape_key = checked.get(name, "")


def match(mesh) -> dict[str, str]:
    """Match the mesh's shape keys to ARKit's names (arkit.match_shape_keys) and show them in its list."""
    found = arkit.match_shape_keys(shape_key_names(mesh))
    set_mapping(mesh, found)
    return found


def missing(mesh) -> list[str]:
    """ARKit's names that no shape key of the character takes (a jaw bone takes jawOpen's motion instead)."""
    mapped = mapping(mesh)
    return [name for name in arkit.ARKIT_NAMES if name not in mapped]


def calibration(mesh) -> arkit.ArkitCalibration:
    return arkit.ArkitCalibration(jaw_open_angle=float(mesh.thunder_character.jaw_open_angle))


def _check(mesh, head) -> None:
    from .head_build import head_of

    if mesh is None or mesh.type != "MESH":
        raise CharacterError(f"{getattr(mesh, 'name', mesh)} is not a mesh; pick the mesh that has the "
                             "character's face shape keys")
    if not shape_key_names(mesh):
        raise CharacterError(f"the mesh {mesh.name} has no shape keys; a character needs ARKit-named shape keys "
                             "(or at least a jaw bone and one shape key)")
    if head is None or head_of(head) is None:
        raise CharacterError("choose the Thunder head whose takes drive the character first")
    if head.thunder.mesh == mesh:
        raise CharacterError(f"{mesh.name} is the Thunder head's own mesh; its takes play on it already")
    if not set(head.data.get("thunder_expression_names") or ()) & set(arkit.ARKIT_NAMES):
        raise CharacterError(f"the head {head.name} has no ARKit-named expression components (a FLAME file's are "
                             "not); drive characters from the built-in head")
    binding = mesh.thunder_character
    armature = binding.armature
    bones = {"jaw": binding.jaw_bone, "left eye": binding.eye_left_bone, "right eye": binding.eye_right_bone,
             "head": binding.head_bone}
    if any(bones.values()) and armature is None:
        raise CharacterError(f"{mesh.name} names bones but no armature; choose the armature they belong to")
    for what, bone in bones.items():
        if bone and bone not in armature.data.bones:
            raise CharacterError(f"the armature {armature.name} has no bone {bone!r} (the {what} bone)")
    if binding.head_target == "BONE" and not binding.head_bone:
        raise CharacterError("the head's rotation is to go onto a bone: choose the head (or neck) bone")
    arkit.check_mapping(mapping(mesh), shape_key_names(mesh))


def bind(mesh, head, armature=None, jaw_bone: str = "", eye_left_bone: str = "", eye_right_bone: str = "",
         head_bone: str = "", head_target: str = "NONE", head_strength: float = 1.0, jaw_open_angle=None,
         new_mapping: dict | None = None):
    """Let `head`'s takes drive `mesh` (and `armature`): keep the character's own animation aside, match its
    shape keys (or take `new_mapping`), and key every take. Returns the ARKit names left unmapped."""
    binding = mesh.thunder_character if mesh is not None and mesh.type == "MESH" else None
    if binding is None:
        _check(mesh, head)
    if head_target not in ("NONE", "BONE", "OBJECT"):
        raise CharacterError(f"the head's rotation goes onto NONE, BONE or OBJECT, not {head_target!r}")
    before = {name: getattr(binding, name) for name in ("armature", "jaw_bone", "eye_left_bone", "eye_right_bone",
                                                         "head_bone", "head_target", "head_strength",
                                                         "jaw_open_angle", "head")}
    previous_mapping = mapping(mesh)
    binding.armature, binding.jaw_bone, binding.head_bone = armature, jaw_bone, head_bone
    binding.eye_left_bone, binding.eye_right_bone = eye_left_bone, eye_right_bone
    binding.head_target, binding.head_strength = head_target, float(head_strength)
    if jaw_open_angle is not None:
        binding.jaw_open_angle = float(jaw_open_angle)
    binding.head = head
    try:
        _check(mesh, head)
        if new_mapping is not None:
            set_mapping(mesh, new_mapping)
        elif not len(binding.mapping):
            match(mesh)
        takes = _read_takes(head)
    except ThunderError:
        for name, value in before.items():   # nothing the user had changes
            setattr(binding, name, value)
        if previous_mapping or len(binding.mapping):
            set_mapping(mesh, previous_mapping)
        raise
    old_head = before["head"]
    if binding.is_character and old_head is not None and old_head != head:   # it leaves its old head's takes
        _assign(mesh, None)
        for item in old_head.thunder.takes:
            if item.action is not None:
                _remove_slots(item.action, mesh)
    if not binding.is_character:
        _keep_original_animation(mesh)
        binding.rest_rotation = _rest_quaternion(_rig_object(mesh) or mesh)
    binding.is_character = True
    binding.slot_name = f"{SLOT_PREFIX}{mesh.name}"
    _rekey(mesh, takes)
    return missing(mesh)


def rekey(mesh) -> None:
    """Key every take of the character's head on it again (after its mapping, bones or calibration changed)."""
    binding = mesh.thunder_character
    if not binding.is_character:
        raise CharacterError(f"{mesh.name} is not driven by a Thunder head; use Drive character first")
    _check(mesh, binding.head)
    _rekey(mesh, _read_takes(binding.head))


def release(mesh) -> None:
    """Stop driving the character: its slots leave every take and its own animation plays again."""
    binding = mesh.thunder_character
    head = binding.head
    _assign(mesh, None)
    if head is not None:
        for item in head.thunder.takes:
            if item.action is not None:
                _remove_slots(item.action, mesh)
    binding.is_character = False
    binding.head = None
    _restore_original(mesh)


def _read_takes(head) -> list:
    """Every take of the head read from its file (before anything changes), or CharacterError naming it."""
    takes = []
    for item in head.thunder.takes:
        if not os.path.isfile(item.file):
            raise CharacterError(f"the take file of {item.name}, {item.file}, does not exist any more, so the "
                                 "character cannot be keyed from it; Resample that take or delete it")
        takes.append(read_take(item.file))
    return takes


def _rekey(mesh, takes) -> None:
    head = mesh.thunder_character.head
    expression_names = list(head.data["thunder_expression_names"])
    _assign(mesh, None)   # nothing plays a slot while it is replaced
    for item, take in zip(head.thunder.takes, takes):
        if item.action is None:
            continue
        _remove_slots(item.action, mesh)
        frames = item.frame_start + np.arange(take.n_frames, dtype=np.float64)
        key_character(item.action, mesh, take.parts, expression_names, frames)
    follow(head)


# ---------------------------------------------------------------------------------------------- keys
def _rig_object(mesh):
    """The object whose channels a take keys besides the shape keys: the armature, else the mesh when the
    head's rotation goes onto it, else None."""
    binding = mesh.thunder_character
    if binding.armature is not None:
        return binding.armature
    return mesh if binding.head_target == "OBJECT" else None


def _rotation_part(matrix) -> np.ndarray:
    """The nearest rotation to a 3x3 (scale and shear removed)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64)[:3, :3])
    rotation = u @ vt
    return rotation if np.linalg.det(rotation) > 0 else u @ np.diag([1.0, 1.0, -1.0]) @ vt


def _rest_quaternion(obj) -> tuple:
    return tuple(obj.matrix_basis.to_quaternion())


def bone_axis_angles(axis_angle: np.ndarray, bone_rest_world: np.ndarray) -> np.ndarray:
    """A take's rotation (T, 3) axis-angle in FLAME's frame as a bone's local rotation: the same turn in the
    world (FLAME_TO_WORLD), seen from the bone's rest orientation in the world (3x3). A conjugated rotation
    keeps its angle and turns its axis, so only the axis changes frame."""
    return np.asarray(axis_angle, dtype=np.float64) @ (bone_rest_world.T @ FLAME_TO_WORLD).T


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) quaternions (w, x, y, z): the turn b, then a."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def _path(name: str) -> str:
    return bpy.utils.escape_identifier(name)


def key_character(action, mesh, parts: dict, expression_names, frames: np.ndarray) -> None:
    """Key a take (its parts) on the character in `action`: a KEY slot for the mapped shape keys and, where
    there is a rig object, an OBJECT slot for its bones and rotation."""
    from .take_actions import _write_fcurve

    binding = mesh.thunder_character
    weights = arkit.arkit_weights(parts, expression_names, calibration(mesh))
    key_slot = compat.new_slot(action, "KEY", binding.slot_name)
    key_curves = compat.slot_fcurves(action, key_slot)
    for name, key in mapping(mesh).items():
        values = weights[:, arkit.ARKIT_NAMES.index(name)]
        if name == "jawOpen" and binding.jaw_bone:
            values = np.zeros_like(values)   # the jaw bone opens the mouth; the shape stays shut
        _write_fcurve(key_curves, f'key_blocks["{_path(key)}"].value', 0, frames, values)
    rig = _rig_object(mesh)
    strength = float(binding.head_strength)
    eyes = np.asarray(parts["eyes"], dtype=np.float64)
    turns = [(binding.jaw_bone, parts["jaw"]), (binding.eye_left_bone, eyes[:, :3]),
             (binding.eye_right_bone, eyes[:, 3:])]
    if binding.head_target == "BONE":
        turns.append((binding.head_bone, strength * np.asarray(parts["neck"], dtype=np.float64)))
    turns = [(bone, axis_angle) for bone, axis_angle in turns if bone]
    if rig is None or not (turns or binding.head_target == "OBJECT"):
        return   # nothing to key on an object: the rig (another mesh of the character may drive it) is left alone
    curves = compat.slot_fcurves(action, compat.new_slot(action, "OBJECT", binding.slot_name))
    if rig.type == "ARMATURE":
        armature_world = _rotation_part(rig.matrix_world)
        for bone, axis_angle in turns:
            rest = armature_world @ _rotation_part(rig.data.bones[bone].matrix_local)
            quaternions = rig_math.axis_angle_to_quaternion(bone_axis_angles(axis_angle, rest))
            rig.pose.bones[bone].rotation_mode = "QUATERNION"
            for axis in range(4):
                _write_fcurve(curves, f'pose.bones["{_path(bone)}"].rotation_quaternion', axis, frames,
                              quaternions[:, axis])
    if binding.head_target == "OBJECT":
        # The turn in the world (the object's parent space), after the rotation it had when it was bound.
        world_turn = strength * np.asarray(parts["neck"], dtype=np.float64) @ FLAME_TO_WORLD.T
        quaternions = quaternion_multiply(rig_math.axis_angle_to_quaternion(world_turn),
                                          np.asarray(binding.rest_rotation, dtype=np.float64))
        if rig.rotation_mode != "QUATERNION":   # keys are quaternions; the object keeps its orientation
            rig.rotation_quaternion = binding.rest_rotation
            rig.rotation_mode = "QUATERNION"
        for axis in range(4):
            _write_fcurve(curves, "rotation_quaternion", axis, frames, quaternions[:, axis])


def key_followers(head, action, parts: dict, expression_names, frames: np.ndarray) -> None:
    """Key a new take of `head` on every character it drives (take_actions.key_take calls this)."""
    for mesh in characters_of(head):
        key_character(action, mesh, parts, expression_names, frames)


def _slots(action, mesh) -> dict:
    name = mesh.thunder_character.slot_name
    return {slot.target_id_type: slot for slot in action.slots if slot.name_display == name}


def _remove_slots(action, mesh) -> None:
    for slot in list(_slots(action, mesh).values()):
        action.slots.remove(slot)


def _assign(mesh, action) -> None:
    """Play `action`'s slots of the character on it (None: stop playing a take)."""
    slots = _slots(action, mesh) if action is not None else {}
    keys = mesh.data.shape_keys
    if keys is not None:
        compat.assign(keys, action if "KEY" in slots else None, slots.get("KEY"))
    rig = _rig_object(mesh)
    if rig is not None and "OBJECT" in slots:
        compat.assign(rig, action, slots["OBJECT"])
    elif rig is not None and action is None and compat.assigned_action(rig) is not None \
            and "OBJECT" in _slots(compat.assigned_action(rig), mesh):
        compat.assign(rig, None, None)   # it played this character's rig slot


def _is_take(action) -> bool:
    return action is not None and bool(action.get("thunder_take"))


def follow(head) -> None:
    """Every character of `head` plays its active take (or, with none, its own animation again)."""
    thunder = head.thunder
    index = thunder.active_take
    action = thunder.takes[index].action if 0 <= index < len(thunder.takes) else None
    for mesh in characters_of(head):
        if action is None:
            _assign(mesh, None)
            _restore_original(mesh)
        else:
            _assign(mesh, action)


def let_go(head, action) -> None:
    """Stop every character of `head` playing `action` (before take_actions deletes it)."""
    for mesh in characters_of(head):
        keys = mesh.data.shape_keys
        playing = keys is not None and compat.assigned_action(keys) == action
        rig = _rig_object(mesh)
        if playing or (rig is not None and compat.assigned_action(rig) == action):
            _assign(mesh, None)


def _keep_original_animation(mesh) -> None:
    binding = mesh.thunder_character
    keys, rig = mesh.data.shape_keys, _rig_object(mesh)
    for datablock, attribute in ((keys, "original_key_action"), (rig, "original_object_action")):
        action = compat.assigned_action(datablock) if datablock is not None else None
        if action is not None and not _is_take(action):
            action.use_fake_user = True
            setattr(binding, attribute, action)


def _restore_original(mesh) -> None:
    binding = mesh.thunder_character
    for datablock, action, id_type in ((mesh.data.shape_keys, binding.original_key_action, "KEY"),
                                       (_rig_object(mesh), binding.original_object_action, "OBJECT")):
        if datablock is not None and action is not None and compat.assigned_action(datablock) is None:
            compat.assign(datablock, action, compat.find_slot(action, id_type))


# ---------------------------------------------------------------------------------------------- calibration
def calibrate_jaw(mesh) -> tuple[float, float]:
    """Measure the turn of the character's jawOpen shape key (arkit.jaw_open_angle_of_shape, in the world) and
    make it the jaw angle of jawOpen = 1, so the character's jaw reaches the built-in head's opening. Returns
    (angle, residual)."""
    key = mapping(mesh).get("jawOpen")
    if not key:
        raise CharacterError(f"{mesh.name} has no shape key mapped to jawOpen to measure")
    keys = mesh.data.shape_keys
    rest, opened = (np.empty(len(mesh.data.vertices) * 3, dtype=np.float32) for _ in range(2))
    keys.reference_key.data.foreach_get("co", rest)
    keys.key_blocks[key].data.foreach_get("co", opened)
    world = np.asarray(mesh.matrix_world, dtype=np.float64)

    def to_world(co):
        return co.reshape(-1, 3).astype(np.float64) @ world[:3, :3].T + world[:3, 3]

    angle, residual = arkit.jaw_open_angle_of_shape(to_world(rest), to_world(opened))
    if residual > MAX_JAW_RESIDUAL or angle <= 0:
        raise CharacterError(f"the shape key {key} is not a turn of the jaw that opens it (a turn leaves "
                             f"{residual:.0%} of its motion unexplained); set the jaw angle by hand")
    mesh.thunder_character.jaw_open_angle = angle
    return angle, residual


# ---------------------------------------------------------------------------------------------- files
def _write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it: a failure leaves no half-written file."""
    tmp = path.with_name(f".{path.name}.thunder-part")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise CharacterError(f"{path} cannot be written: {(error.strerror or str(error)).lower()}") from None


def save_mapping(mesh, path, overwrite: bool = False) -> Path:
    """Write the character's mapping as JSON (arkit.mapping_json); an existing file is refused unless asked."""
    path = Path(bpy.path.abspath(str(path)))
    if path.exists() and not overwrite:
        raise CharacterError(f"{path} already exists; Thunder does not replace files unless asked to overwrite")
    if not path.parent.is_dir():
        raise CharacterError(f"the folder {path.parent} does not exist")
    _write_text(path, arkit.mapping_json(mapping(mesh)))
    return path


def load_mapping(mesh, path) -> dict[str, str]:
    """Read a mapping JSON into the character's list (checked against its shape keys first: a bad file changes
    nothing), and key the takes again if the character is driven."""
    path = Path(bpy.path.abspath(str(path)))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CharacterError(f"the mapping file {path} cannot be read ({type(error).__name__})") from None
    loaded = arkit.read_mapping_json(text, str(path))
    arkit.check_mapping(loaded, shape_key_names(mesh))
    set_mapping(mesh, loaded)
    if mesh.thunder_character.is_character:
        rekey(mesh)
    return loaded


def arkit_file_texts(head, index: int) -> tuple[str, str]:
    """The Live Link CSV and the JSON of take `index` of `head`, from its take file (arkit.py's rule)."""
    import json

    item = head.thunder.takes[index]
    if not os.path.isfile(item.file):
        raise CharacterError(f"the take file of {item.name}, {item.file}, does not exist any more")
    take = read_take(item.file)
    expression_names = list(head.data["thunder_expression_names"])
    weights = arkit.arkit_weights(take.parts, expression_names)
    angles = arkit.head_eye_angles(take.parts)
    fps, start = float(take.meta["fps"]), float(take.meta["audio"].get("start", 0.0))
    described = {"file": Path(item.file).name, "name": item.name, "seed": item.seed, "head": take.meta["head"],
                 "frame_start": item.frame_start}
    return (arkit.live_link_csv(weights, angles, fps, start),
            json.dumps(arkit.arkit_json(weights, angles, fps, start, take=described)) + "\n")


def export_arkit(head, folder, every_take: bool = False, formats=("csv", "json"), overwrite: bool = False) -> list[Path]:
    """Write the active take (or every take) as `<head>_<take>.arkit.csv` and `.arkit.json` in `folder`;
    every name is checked before anything is written."""
    from .export import check_folder, safe_file_name

    thunder = head.thunder
    indices = list(range(len(thunder.takes))) if every_take else \
        ([thunder.active_take] if 0 <= thunder.active_take < len(thunder.takes) else [])
    if not indices:
        raise CharacterError(f"the head {head.name} has no take to export as ARKit weights")
    unknown = [fmt for fmt in formats if fmt not in ("csv", "json")]
    if unknown or not formats:
        raise CharacterError("ARKit weights are exported as csv and/or json")
    folder = check_folder(Path(bpy.path.abspath(str(folder))))
    plan = [(index, fmt, folder / f"{safe_file_name(f'{head.name}_{thunder.takes[index].name}')}.arkit.{fmt}")
            for index in indices for fmt in formats]
    existing = [path for _, _, path in plan if path.exists()]
    if existing and not overwrite:
        raise CharacterError(f"{existing[0]} already exists; Thunder does not replace files unless asked to "
                             "overwrite")
    texts = {index: arkit_file_texts(head, index) for index in indices}
    for index, fmt, path in plan:
        _write_text(path, texts[index][0 if fmt == "csv" else 1])
    return [path for _, _, path in plan]
