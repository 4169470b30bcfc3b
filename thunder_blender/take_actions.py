"""Takes on a head: one action per take, with a slot for the head's shape keys and one for its armature.

    action = key_take(head, take, frame_start)    # the take's keyframes, written with foreach_set
    add_take(head, take, frame_start, batch, audio_path)   # keyed, listed on the head, and played
    activate(head, index)                         # switch takes: assign another action (instant)
    delete(head, index)

Every frame of a take is a keyframe (linear interpolation: the model samples every frame, so there is
nothing to interpolate but sub-frames). Actions have a fake user, so a take survives while it is not playing.
"""

from __future__ import annotations

import json

import bpy
import numpy as np

from . import character, compat, rig_math, strengths as strength_math
from .errors import ThunderError
from .head_build import SLIDER_RANGE, check_head, head_lip_geometry, head_rig_data


class TakeError(ThunderError):
    """A take that cannot go on this head; one sentence."""


def _write_fcurve(fcurves, data_path: str, index: int, frames: np.ndarray, values: np.ndarray):
    curve = fcurves.new(data_path=data_path, index=index)
    points = curve.keyframe_points
    points.add(len(frames))
    points.foreach_set("co", np.column_stack([frames, values]).astype(np.float32).ravel())
    points.foreach_set("interpolation", np.full(len(frames), _LINEAR, dtype=np.int32))
    curve.update()
    return curve


# The enum value of 'LINEAR' among Keyframe.interpolation's items ('CONSTANT', 'LINEAR', ...).
_LINEAR = 1


def key_take(head, take, frame_start: float, name: str, strengths: dict | None = None):
    """A new action holding `take` (a take_file.TakeData) keyed on `head` from `frame_start`, one key per frame,
    with `strengths` ({region: s, "smoothing": a}, strengths.py) applied when given."""
    thunder = head.thunder
    check_head(head)
    if take.meta["head"].get("identity") != thunder.identity:
        raise TakeError(f"the take {take.path.name} was made for the head {take.meta['head'].get('identity')}, "
                        f"not for {head.name} ({thunder.identity})")
    joint_names, expression_names, joints, joint_basis = head_rig_data(head)
    expression = take.parts["expression"]
    if expression.shape[1] != len(expression_names):
        raise TakeError(f"the take {take.path.name} has {expression.shape[1]} expression components; "
                        f"{head.name} has {len(expression_names)}")
    parts = take.parts
    if strengths and not strength_math.is_identity(strengths):
        lips = head_lip_geometry(head)
        if lips is None and strengths.get("smoothing", 0.0) > 0:
            raise TakeError(f"{head.name} was built without its lip landmarks, so Thunder cannot smooth it "
                            "without opening its /p b m/ closures; add the head again to smooth its takes")
        parts = strength_math.apply_strengths(parts, expression_names, strengths, take.fps, lips)
        expression = parts["expression"]
    if np.abs(expression).max(initial=0.0) > SLIDER_RANGE:
        raise TakeError(f"the take {take.path.name} has expression weights beyond Blender's slider limit of "
                        f"±{SLIDER_RANGE:g}")
    pose = rig_math.take_pose(parts, len(joint_names))
    correctives = rig_math.pose_corrective_features(rig_math.axis_angle_to_matrix(pose))
    locations, quaternions = rig_math.bone_channels(pose, expression, joints, joint_basis)
    frames = frame_start + np.arange(take.n_frames, dtype=np.float64)

    action = bpy.data.actions.new(name)
    action.use_fake_user = True
    key_slot = compat.new_slot(action, "KEY", name)
    armature_slot = compat.new_slot(action, "OBJECT", name)
    key_curves = compat.slot_fcurves(action, key_slot)
    names = expression_names + rig_math.pose_corrective_names(joint_names)
    values = np.concatenate([expression, correctives], axis=1)
    for k, key_name in enumerate(names):
        _write_fcurve(key_curves, f'key_blocks["{key_name}"].value', 0, frames, values[:, k])
    bone_curves = compat.slot_fcurves(action, armature_slot)
    for j, joint in enumerate(joint_names[1:], start=1):   # the root is not animated by takes
        for axis in range(4):
            _write_fcurve(bone_curves, f'pose.bones["{joint}"].rotation_quaternion', axis, frames,
                          quaternions[:, j, axis])
        for axis in range(3):
            _write_fcurve(bone_curves, f'pose.bones["{joint}"].location', axis, frames, locations[:, j, axis])
    # The characters this head drives get the take in the same action, in slots of their own (character.py).
    try:
        character.key_followers(head, action, parts, expression_names, frames)
    except Exception:   # a take that cannot be keyed leaves no action behind
        bpy.data.actions.remove(action)
        raise
    action["thunder_take"] = True
    return action


def shape_key_datablock(head):
    return head.thunder.mesh.data.shape_keys


def foreign_animation(head) -> list[str]:
    """Actions playing on the head (its shape keys or armature) that are not Thunder takes, by name."""
    found = []
    for datablock in (shape_key_datablock(head), head):
        action = compat.assigned_action(datablock)
        if action is not None and not action.get("thunder_take"):
            found.append(action.name)
    return found


def keep_original_animation(head) -> None:
    """Remember the head's non-Thunder actions (with a fake user) before takes replace them."""
    thunder = head.thunder
    key_action = compat.assigned_action(shape_key_datablock(head))
    armature_action = compat.assigned_action(head)
    for action, attribute in ((key_action, "original_key_action"), (armature_action, "original_armature_action")):
        if action is not None and not action.get("thunder_take"):
            action.use_fake_user = True
            setattr(thunder, attribute, action)


def take_fields(take) -> tuple[int, dict, dict]:
    """(seed, settings, audio) of a take file's meta, or TakeError naming the file: the add-on relies on them,
    and a take written by something else (or damaged) may lack them."""
    meta = take.meta
    seed = meta.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise TakeError(f"the take {take.path.name} has no usable seed (it says {seed!r}); it was not made "
                        "by Thunder's backend, or it is damaged")
    settings, audio = meta.get("settings", {}), meta.get("audio", {})
    if not isinstance(settings, dict) or not isinstance(audio, dict):
        raise TakeError(f"the take {take.path.name} has damaged settings or audio information")
    return seed, settings, audio


def _fill(item, take, action, frame_start: float, batch: int, audio_path: str) -> None:
    """Write a take's facts into its list entry (its name and Keep flag are the caller's)."""
    seed, settings, audio = take_fields(take)
    item.action = action
    item.seed = seed
    item.emotion = str(settings.get("emotion", "neutral"))
    item.intensity = float(settings.get("intensity", 0.0))
    item.guidance = float(settings.get("guidance", 1.0))
    item.steps = int(settings.get("steps", 0))
    item.settings = json.dumps(settings)
    item.file = str(take.path)
    item.audio = str(audio_path)
    item.audio_start = float(audio.get("start", 0.0))
    item.audio_end = float(audio.get("end", 0.0))
    item.frame_start = frame_start
    item.frames = take.n_frames
    item.batch = batch
    score = take.meta.get("scores", {}).get("m2s_mel_l1")
    item.has_m2s_score = score is not None
    item.m2s_mel_l1 = float(score) if score is not None else 0.0


def _action_name(head, label: str, take) -> str:
    return f"{head.name} {label} seed {take_fields(take)[0]}"


def add_take(head, take, frame_start: float, batch: int, audio_path: str, label: str | None = None):
    """Key `take` on `head`, list it, and play it. Returns the list entry. audio_path: the audio file the take
    was made from (the take itself records only its name), which Resample samples again."""
    thunder = head.thunder
    label = label or f"Take {len(thunder.takes) + 1}"
    action = key_take(head, take, frame_start, _action_name(head, label, take))
    item = thunder.takes.add()
    item.name = label
    _fill(item, take, action, frame_start, batch, audio_path)
    thunder.active_take = len(thunder.takes) - 1   # plays it (the property's update)
    return item


def replace_take(head, index: int, take, frame_start: float, batch: int, audio_path: str,
                 strengths: dict | None = None):
    """Put `take` in the place of take `index` (same name and position; Resample's new take for an unkept
    one), remove the old take's action, and keep playing whatever played. The new take is keyed with
    `strengths`, by default the entry's (they stay with the place). Returns the list entry."""
    thunder = head.thunder
    item = thunder.takes[index]
    strengths = item_strengths(item) if strengths is None else strengths
    action = key_take(head, take, frame_start, _action_name(head, item.name, take), strengths)
    old = item.action
    _fill(item, take, action, frame_start, batch, audio_path)
    if old is not None and compat.assigned_action(shape_key_datablock(head)) == old:
        activate(head, index)   # it was playing: its replacement plays
    if old is not None:
        character.let_go(head, old)
    if old is not None and old.users <= 1:   # only its fake user: nothing else plays it
        bpy.data.actions.remove(old)
    return thunder.takes[index]


def activate(head, index: int, checked: bool = True) -> None:
    """Play take `index` on the head: assign its action's slots to the shape keys and the armature. An edited
    head is refused (head_build.check_head) unless checked is False (Delete still works on one)."""
    thunder = head.thunder
    action = thunder.takes[index].action
    if action is None:
        raise TakeError(f"the take {thunder.takes[index].name} has lost its action")
    if checked:
        check_head(head)
    compat.assign(shape_key_datablock(head), action, compat.find_slot(action, "KEY"))
    compat.assign(head, action, compat.find_slot(action, "OBJECT"))
    if thunder.active_take != index:
        thunder.active_take = index
    character.follow(head)   # the characters it drives play the take too


def delete(head, index: int) -> None:
    """Remove take `index` and its action; the previous take (or the head's original animation) plays."""
    thunder = head.thunder
    action = thunder.takes[index].action
    if action is not None and compat.assigned_action(shape_key_datablock(head)) == action:
        compat.assign(shape_key_datablock(head), None, None)
        compat.assign(head, None, None)
    character.let_go(head, action)
    thunder.takes.remove(index)
    if action is not None and action.users <= 1:   # only its fake user: nothing else plays it
        bpy.data.actions.remove(action)
    if thunder.takes:
        activate(head, min(index, len(thunder.takes) - 1), checked=False)
    else:
        thunder.active_take = -1
        _restore_original(head)


def _restore_original(head) -> None:
    thunder = head.thunder
    if thunder.original_key_action is not None:
        key_action = thunder.original_key_action
        compat.assign(shape_key_datablock(head), key_action, compat.find_slot(key_action, "KEY"))
    else:
        compat.assign(shape_key_datablock(head), None, None)
    if thunder.original_armature_action is not None:
        armature_action = thunder.original_armature_action
        compat.assign(head, armature_action, compat.find_slot(armature_action, "OBJECT"))
    else:
        compat.assign(head, None, None)
    character.follow(head)   # no take plays: the characters' own animation comes back


# ---------------------------------------------------------------------------------------------- strengths
STRENGTH_PROPERTIES = {region: f"strength_{region}" for region in strength_math.REGIONS}


def item_strengths(item) -> dict:
    """A take entry's strengths, as strengths.apply_strengths takes them."""
    values = {region: float(getattr(item, prop)) for region, prop in STRENGTH_PROPERTIES.items()}
    values["smoothing"] = float(item.smoothing)
    return values


def rekey_strengths(head, index: int, strengths: dict | None = None) -> None:
    """Key take `index` again from its take file with `strengths` (default: its entry's), no sampling: its
    action is replaced in place and plays if the take played. A take file that is gone is a TakeError."""
    from .take_file import TakeReadError, read_take

    item = head.thunder.takes[index]
    try:
        take = read_take(item.file)
    except TakeReadError as exc:
        raise TakeError(f"the strengths of {item.name} need its take file again: {exc}") from None
    replace_take(head, index, take, item.frame_start, item.batch, item.audio, strengths)


def check_strengths(values: dict) -> None:
    """TakeError (one sentence) unless `values` names only strengths (strengths.REGIONS, "smoothing") with
    numbers in their ranges: 0 to 2, smoothing 0 to 1."""
    unknown = sorted(set(values) - set(STRENGTH_PROPERTIES) - {"smoothing"})
    if unknown:
        raise TakeError(f"unknown strength {', '.join(unknown)}; the strengths are "
                        f"{', '.join(strength_math.REGIONS)} and smoothing")
    for name, value in values.items():
        high = 1.0 if name == "smoothing" else strength_math.STRENGTH_RANGE[1]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= high:
            raise TakeError(f"the strength {name} must be a number from 0 to {high:g}, not {value!r}")


_writing_strengths = False   # set while set_strengths writes an entry's properties: it has keyed the take itself


def writing_strengths() -> bool:
    return _writing_strengths


def set_strengths(head, index: int, values: dict) -> None:
    """Give take `index` the strengths `values` ({region or "smoothing": number}; the others stay) and key it
    again with them. Unknown names and numbers out of range are a TakeError, and so is a take that cannot be
    keyed (its file gone, smoothing on a head without lip landmarks): then nothing changes."""
    global _writing_strengths
    check_strengths(values)
    item = head.thunder.takes[index]
    wanted = {**item_strengths(item), **{name: float(value) for name, value in values.items()}}
    rekey_strengths(head, index, wanted)   # first: a failure leaves the entry as it was
    item = head.thunder.takes[index]
    _writing_strengths = True
    try:
        for name, value in wanted.items():
            setattr(item, "smoothing" if name == "smoothing" else STRENGTH_PROPERTIES[name], value)
    finally:
        _writing_strengths = False
