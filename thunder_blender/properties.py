"""What the add-on stores in the .blend: the head's identity and takes (on the head's armature object) and the
Generate and Export settings (on the scene). Saved with the file, so takes survive a reload."""

import bpy

from .strengths import STRENGTH_RANGE

# The ranges of the numbers Generate sends, in one place: the panel's properties use them and api.generate
# checks every number against them once (a script can pass anything).
LIMITS = {"takes": (1, 16), "steps": (1, 200), "guidance": (0.0, 10.0), "intensity": (0.0, 1.0),
          "seed": (0, 2**31 - 1), "fps": (1.0, 240.0)}

# The shipped model's emotions, shown until the backend says which emotions its model knows.
KNOWN_EMOTIONS = ["neutral", "happy", "sad"]
_emotion_items_cache: list = []   # Blender needs the items list to outlive the callback


def loaded_model() -> dict:
    """What the backend said of its loaded model (emotions, sampling defaults...), or {} until it has."""
    from . import session

    return (session.manager().backend_info or {}).get("model") or {}


def emotion_items(self, context):
    emotions = loaded_model().get("emotions") or KNOWN_EMOTIONS   # the loaded model's, once known
    _emotion_items_cache[:] = [(name, name.capitalize(), f"Speak {name}") for name in emotions]
    return _emotion_items_cache


def _activate_take(self, context):
    """Clicking a take in the list plays it: switching takes is only a change of the assigned action."""
    from . import api, take_actions

    if 0 <= self.active_take < len(self.takes):
        try:
            take_actions.activate(self.id_data, self.active_take)
        except api.ThunderError as exc:   # an update callback cannot report: the panel says it
            api.notice.level, api.notice.text = "ERROR", str(exc)


def _rekey_strengths(self, context):
    """A strength changed: key the take again from its file with the entry's strengths (no sampling)."""
    from . import api, take_actions

    if take_actions.writing_strengths():   # set_strengths keyed the take already
        return
    head = self.id_data
    index = next((k for k, item in enumerate(head.thunder.takes) if item.as_pointer() == self.as_pointer()), None)
    if index is None:
        return
    try:
        take_actions.rekey_strengths(head, index)
    except api.USER_ERRORS as exc:   # an update callback cannot report: the panel says it
        api.notice.level, api.notice.text = "ERROR", str(exc)


def _strength(name: str, description: str):
    return bpy.props.FloatProperty(name=name, default=1.0, min=STRENGTH_RANGE[0], max=STRENGTH_RANGE[1],
                                   description=description, update=_rekey_strengths)


class ThunderTake(bpy.types.PropertyGroup):
    # `name` (from PropertyGroup) is the take's label in the list; Rename edits it.
    action: bpy.props.PointerProperty(type=bpy.types.Action, name="Action")
    seed: bpy.props.IntProperty(name="Seed", min=0)
    emotion: bpy.props.StringProperty(name="Emotion")
    intensity: bpy.props.FloatProperty(name="Intensity")
    guidance: bpy.props.FloatProperty(name="Guidance")
    steps: bpy.props.IntProperty(name="Steps")
    settings: bpy.props.StringProperty(name="Settings", description="The sampling settings, as JSON")
    file: bpy.props.StringProperty(name="Take file", subtype="FILE_PATH")
    audio: bpy.props.StringProperty(name="Audio", description="The audio file the take was made for")
    audio_start: bpy.props.FloatProperty(name="Audio start", description="Seconds into the audio of the first frame")
    audio_end: bpy.props.FloatProperty(name="Audio end")
    frame_start: bpy.props.FloatProperty(name="First frame")
    frames: bpy.props.IntProperty(name="Frames")
    batch: bpy.props.IntProperty(name="Batch", description="Takes generated together share a batch number")
    kept: bpy.props.BoolProperty(name="Keep", description="Resample leaves kept takes alone")
    # How well the take's lips read (docs/take_format.md, scores.m2s_mel_l1): lower is better.
    has_m2s_score: bpy.props.BoolProperty(name="Has an M2S score")
    m2s_mel_l1: bpy.props.FloatProperty(name="M2S mel L1", description="M2S's mel agreement with the audio: how "
                                        "well the take's lips read (lower is better)")
    # Strengths (thunder_blender/strengths.py): applied when the take is keyed, changed without sampling again.
    strength_lips_jaw: _strength("Lips & jaw", "How strongly the mouth and jaw move (1: as sampled)")
    strength_brows: _strength("Brows", "How strongly the brows move (1: as sampled)")
    strength_blinks: _strength("Blinks", "How strongly the eyelids move: blinks, squints, wide eyes (1: as sampled)")
    strength_cheeks_nose: _strength("Cheeks & nose", "How strongly the cheeks and nose move (1: as sampled)")
    strength_head_motion: _strength("Head motion", "How strongly the head turns and nods on the neck (1: as sampled)")
    smoothing: bpy.props.FloatProperty(name="Smoothing", default=0.0, min=0.0, max=1.0, update=_rekey_strengths,
                                       description="Smooth the motion in time; /p b m/ lip closures are kept")


class ThunderHead(bpy.types.PropertyGroup):
    is_head: bpy.props.BoolProperty(name="Thunder head")
    mesh: bpy.props.PointerProperty(type=bpy.types.Object, name="Mesh")
    head_name: bpy.props.StringProperty(name="Head")
    identity: bpy.props.StringProperty(name="Identity")
    source: bpy.props.StringProperty(name="Source", description="'builtin' or the FLAME file the head came from")
    shape: bpy.props.StringProperty(name="Identity shape")
    takes: bpy.props.CollectionProperty(type=ThunderTake)
    active_take: bpy.props.IntProperty(name="Active take", default=-1, update=_activate_take)
    batches: bpy.props.IntProperty(name="Batches")
    # The animation the head had before its first take, kept (fake user) so it can be put back.
    original_key_action: bpy.props.PointerProperty(type=bpy.types.Action)
    original_armature_action: bpy.props.PointerProperty(type=bpy.types.Action)


class ThunderConstraint(bpy.types.PropertyGroup):
    """A constraint of the panel, in scene frames (api.py turns it into the take format's, docs/take_format.md)."""
    kind: bpy.props.EnumProperty(name="Kind", items=[
        ("hold", "Hold", "Hold a pose over frames From to To"),
        ("key", "Key", "An expression weight the take passes through at one frame")])
    pose: bpy.props.EnumProperty(name="Pose", items=[
        ("mouth_closed", "Mouth closed", "Jaw and lips closed (a smile may still play)"),
        ("neutral", "Neutral", "The face at rest (the head still moves)"),
        ("eyes_open", "Eyes open", "No blink")])
    start: bpy.props.IntProperty(name="From", description="First frame of the hold (scene frame)")
    end: bpy.props.IntProperty(name="To", description="Last frame of the hold (scene frame, included)")
    expression: bpy.props.StringProperty(name="Expression", default="mouthSmileLeft",
                                         description="The expression (shape key) to key, e.g. mouthSmileLeft")
    value: bpy.props.FloatProperty(name="Value", default=0.8, min=-1.0, max=1.0)
    frame: bpy.props.IntProperty(name="Frame", description="The frame of the key (scene frame)")


def _is_head(self, obj):
    return obj.type == "ARMATURE" and obj.thunder.is_head


class ThunderSettings(bpy.types.PropertyGroup):
    audio_source: bpy.props.EnumProperty(
        name="Audio", items=[("STRIP", "Sound strip", "A sound strip of this scene's Sequencer"),
                             ("FILE", "File", "An audio file; the take starts at the scene's start frame")])
    strip: bpy.props.StringProperty(name="Strip", description="The sound strip to animate")
    audio_file: bpy.props.StringProperty(name="Audio file", subtype="FILE_PATH")
    head: bpy.props.PointerProperty(type=bpy.types.Object, name="Head", poll=_is_head,
                                    description="The Thunder head to animate")
    takes: bpy.props.IntProperty(name="Takes", default=2, min=LIMITS["takes"][0], max=LIMITS["takes"][1])
    best_of: bpy.props.IntProperty(name="Best of", default=0, min=0, max=LIMITS["takes"][1],
                                   description="Sample this many takes and keep the Takes best by how well their "
                                               "lips read (M2S); 0: keep every take sampled")
    seed_mode: bpy.props.EnumProperty(name="Seed", items=[("RANDOM", "Random", "New seeds every time"),
                                                          ("FIXED", "Fixed", "Takes use seed, seed + 1, ...")])
    seed: bpy.props.IntProperty(name="Seed", default=0, min=LIMITS["seed"][0], max=LIMITS["seed"][1])
    emotion: bpy.props.EnumProperty(name="Emotion", items=emotion_items)
    intensity: bpy.props.FloatProperty(name="Intensity", default=1.0, min=LIMITS["intensity"][0],
                                       max=LIMITS["intensity"][1])
    # On by default: the takes are sampled as the model was tuned to be (`thunder generate`'s defaults, which
    # the backend reports); off, the Guidance and Steps below are sent instead.
    model_sampling: bpy.props.BoolProperty(
        name="Model's sampling", default=True,
        description="Sample with the steps and guidance the loaded model was tuned for; off: the Guidance and "
                    "Steps below")
    guidance: bpy.props.FloatProperty(name="Guidance", default=1.0, min=LIMITS["guidance"][0],
                                      max=LIMITS["guidance"][1],
                                      description="Classifier-free guidance on the audio (1: none; 2: crisper "
                                                  "lip closures, takes that differ less, slower)")
    steps: bpy.props.IntProperty(name="Steps", default=10, min=LIMITS["steps"][0], max=LIMITS["steps"][1])
    replace_animation: bpy.props.BoolProperty(
        name="Replace existing animation", default=False,
        description="The head has animation that is not a Thunder take: keep it (fake user) and play takes instead")
    export_folder: bpy.props.StringProperty(name="Folder", subtype="DIR_PATH", default="//thunder_export")
    export_fbx: bpy.props.BoolProperty(name="FBX", default=True)
    export_abc: bpy.props.BoolProperty(name="Alembic", default=True)
    export_usd: bpy.props.BoolProperty(name="USD", default=True)
    export_all: bpy.props.BoolProperty(name="Every take", description="One file per take and format")
    constraints: bpy.props.CollectionProperty(type=ThunderConstraint)
    range_only: bpy.props.EnumProperty(
        name="Part", description="What Resample range samples anew inside the range",
        items=[("ALL", "All", "The whole face and head"), ("lips", "Lips", "The lips and jaw only"),
               ("upper", "Upper face", "Brows, eyes, cheeks and nose only"), ("head", "Head", "The head motion only")])

    character: bpy.props.PointerProperty(type=bpy.types.Object, name="Character", poll=lambda self, obj: obj.type == "MESH",
                                         description="A mesh with ARKit-named shape keys that the head's takes drive")
    export_arkit_csv: bpy.props.BoolProperty(name="Live Link CSV", default=True)
    export_arkit_json: bpy.props.BoolProperty(name="JSON", default=True)


# ---------------------------------------------------------------------------------------------- characters
class ThunderArkitMatch(bpy.types.PropertyGroup):
    # `name` is the ARKit name (one row per name, in ARKit's order).
    shape_key: bpy.props.StringProperty(name="Shape key",
                                        description="The character's shape key for this ARKit weight (empty: none)")


def _is_armature(self, obj):
    return obj.type == "ARMATURE"


class ThunderCharacter(bpy.types.PropertyGroup):
    """A mesh driven by a Thunder head's takes (character.py), stored on the mesh object."""

    is_character: bpy.props.BoolProperty(name="Driven character")
    head: bpy.props.PointerProperty(type=bpy.types.Object, name="Head", poll=_is_head,
                                    description="The Thunder head whose takes drive this character")
    armature: bpy.props.PointerProperty(type=bpy.types.Object, name="Armature", poll=_is_armature,
                                        description="The character's armature, for jaw, eye and head bones")
    jaw_bone: bpy.props.StringProperty(name="Jaw bone", description="Turned by the take's jaw (then the jawOpen "
                                                                    "shape key is left alone)")
    eye_left_bone: bpy.props.StringProperty(name="Left eye bone")
    eye_right_bone: bpy.props.StringProperty(name="Right eye bone")
    head_bone: bpy.props.StringProperty(name="Head bone", description="Turned by the take's neck rotation")
    head_target: bpy.props.EnumProperty(
        name="Head rotation", items=[("NONE", "None", "The head does not turn"),
                                     ("BONE", "Bone", "The head bone turns with the take's neck"),
                                     ("OBJECT", "Object", "The armature (or the mesh) turns with the take's neck")])
    head_strength: bpy.props.FloatProperty(name="Strength", default=1.0, min=0.0, max=2.0,
                                           description="How much of the take's head rotation the character makes")
    jaw_open_angle: bpy.props.FloatProperty(name="Jaw at jawOpen 1", subtype="ANGLE", default=0.30, min=0.01,
                                            max=1.5, description="The jaw angle the character's jawOpen shape key "
                                                                 "makes at 1 (Calibrate measures it)")
    mapping: bpy.props.CollectionProperty(type=ThunderArkitMatch)
    active_match: bpy.props.IntProperty(name="Active row")
    slot_name: bpy.props.StringProperty(name="Slot", description="The name of its slots in the takes' actions")
    rest_rotation: bpy.props.FloatVectorProperty(name="Rest rotation", size=4, default=(1.0, 0.0, 0.0, 0.0))
    original_key_action: bpy.props.PointerProperty(type=bpy.types.Action)
    original_object_action: bpy.props.PointerProperty(type=bpy.types.Action)


classes = (ThunderTake, ThunderHead, ThunderConstraint, ThunderSettings, ThunderArkitMatch, ThunderCharacter)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Object.thunder = bpy.props.PointerProperty(type=ThunderHead)
    bpy.types.Object.thunder_character = bpy.props.PointerProperty(type=ThunderCharacter)
    bpy.types.Scene.thunder = bpy.props.PointerProperty(type=ThunderSettings)


def unregister():
    del bpy.types.Scene.thunder
    del bpy.types.Object.thunder_character
    del bpy.types.Object.thunder
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
