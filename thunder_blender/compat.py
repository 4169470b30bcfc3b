"""The few places where Blender 4.5 and 5.x differ, read through one function each.

- Sound strips: `scene.sequence_editor.strips` (4.5 also has `sequences`, 5.0 only `strips`); 5.2 renames
  frame_start / frame_final_start / frame_final_end / frame_duration to content_start / left_handle /
  right_handle / content_duration (its `duration` is the trimmed length).
- The strips a panel searches: `strips_all` (5.x; 4.5 also has `sequences_all`).
- Render output: 5.0 sorts outputs into images and videos (`image_settings.media_type`); 4.5 has no such field.
- Materials: 4.5 makes a material's node tree on request (`use_nodes`); 5.x always has one.
- Animation: Blender 5 has no Action.fcurves. Both 4.5 and 5.x have slotted actions: an action holds slots
  (one per animated datablock: here the Key and the armature of one take), and a keyframe strip holds one
  channelbag of F-curves per slot.
"""

from __future__ import annotations

from dataclasses import dataclass



# ---------------------------------------------------------------------------------------------- output, materials
def set_media_type(image_settings, kind: str) -> None:
    """Say that the render output is an "IMAGE" or a "VIDEO" where Blender asks (5.0 on); 4.5 knows by format."""
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = kind


def material_node_tree(material):
    """The material's node tree, made where this Blender makes it on request (4.5); None where there is none."""
    if getattr(material, "node_tree", None) is None and hasattr(material, "use_nodes"):
        material.use_nodes = True
    return getattr(material, "node_tree", None)


# ---------------------------------------------------------------------------------------------- strips
def strips(editor):
    """A sequence editor's top-level strips, to add new ones to (4.5: `strips` or `sequences`; 5.x: `strips`)."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips_name(editor) -> str:
    """The name of the sequence editor's collection of every strip (for a panel's prop_search)."""
    return "strips_all" if hasattr(editor, "strips_all") else "sequences_all"


def sound_strips(scene) -> list:
    """The scene's sound strips, in the Sequencer's order (none without a sequence editor)."""
    editor = scene.sequence_editor
    if editor is None:
        return []
    strips = getattr(editor, "strips_all", None) or getattr(editor, "sequences_all", None) or []
    return [strip for strip in strips if strip.type == "SOUND"]


@dataclass(frozen=True)
class StripTiming:
    """Where a strip's content sits on the timeline, in frames; sound_offset in seconds."""

    content_start: float   # the frame where the sound's second 0 plays, before the offset delays it
    duration: float        # the content's length in frames, untrimmed
    left: float            # the first frame that plays (after trimming)
    right: float           # the frame after the last one that plays
    sound_offset: float


# Each timing field's name in 5.2, then in 4.5 / 5.0.
# 5.2's `duration` is the trimmed length (right - left): the content's length there is `content_duration`.
STRIP_FIELDS = {"content_start": ("content_start", "frame_start"),
                "duration": ("content_duration", "frame_duration"),
                "left": ("left_handle", "frame_final_start"), "right": ("right_handle", "frame_final_end")}


def _strip_field(strip, key: str) -> str:
    return next(name for name in STRIP_FIELDS[key] if hasattr(strip, name))


def strip_timing(strip) -> StripTiming:
    return StripTiming(*(float(getattr(strip, _strip_field(strip, key))) for key in STRIP_FIELDS),
                       float(getattr(strip, "sound_offset", 0.0)))


def set_strip_frame(strip, key: str, frame: float) -> None:
    """Move a strip's content start, left or right handle (a key of STRIP_FIELDS) to `frame`."""
    setattr(strip, _strip_field(strip, key), frame)


# ---------------------------------------------------------------------------------------------- actions
def new_slot(action, id_type: str, name: str):
    """A new slot of `action` for a datablock of `id_type` ('KEY', 'OBJECT')."""
    return action.slots.new(id_type=id_type, name=name)


def slot_fcurves(action, slot):
    """The F-curves of `slot` in `action` (made on first use: one layer, one keyframe strip)."""
    if not action.layers:
        action.layers.new("Thunder")
    layer = action.layers[0]
    if not layer.strips:
        layer.strips.new(type="KEYFRAME")
    return layer.strips[0].channelbag(slot, ensure=True).fcurves


def find_slot(action, id_type: str):
    """The first slot of `action` for `id_type`, or None."""
    for slot in action.slots:
        if slot.target_id_type == id_type:
            return slot
    return None


def assign(id_data, action, slot) -> None:
    """Play `slot` of `action` on `id_data` (or clear its action when `action` is None)."""
    animation = id_data.animation_data or id_data.animation_data_create()
    animation.action = action
    if action is not None and slot is not None:
        animation.action_slot = slot


def assigned_action(id_data):
    animation = getattr(id_data, "animation_data", None)
    return animation.action if animation is not None else None
