"""The add-on's one door for building a scene without its panel: what the backend's Blender code
(backend/blender/: `thunder generate --blend`, the preview renders, the bench) uses, so that a scene made there
is what the add-on would have made. backend/blender/ imports this module of thunder_blender and no other
(tests/test_import_rules.py).

    register_properties()                       the add-on's properties (heads, takes, settings), once
    build_head(arrays, info, name, location)    the head from the backend's head arrays (no file in between)
    mesh_from_arrays(name, vertices, faces)     a plain mesh with the head's region materials
    add_sound_strip(scene, path, start, ...)    a sound strip that plays audio second `start` at a frame
    read_take(path), add_take(head, ...), activate(head, index)
    check_strengths(strengths), set_strengths(head, index, strengths)   a take's strengths (strengths.py)
    animate_from_strip(scene, strip, head)      the panel's settings: this head, this strip
    export_takes(head, folder, formats), planned_paths(folder, head_name, take_names, formats)
    set_media_type(image_settings, "IMAGE" | "VIDEO")   Blender's drift in render output (compat.py)

Problems are ThunderError (the take reader's TakeReadError among them), one sentence each.
"""

from __future__ import annotations

import math
from pathlib import Path

from . import compat, properties, sound
from .compat import set_media_type
from .errors import ThunderError
from .export import FORMATS, export_takes, planned_paths
from .head_build import HEAD_ARRAYS, REGION_COLORS, build_head_from_arrays, mesh_from_arrays
from .take_file import TakeData, TakeReadError, read_take
from .take_actions import activate, add_take, check_strengths, set_strengths

__all__ = ["ThunderError", "TakeReadError", "TakeData", "FORMATS", "HEAD_ARRAYS", "REGION_COLORS",
           "register_properties", "build_head", "mesh_from_arrays", "add_sound_strip", "read_take", "add_take",
           "activate", "check_strengths", "set_strengths", "animate_from_strip", "export_takes", "planned_paths", "set_media_type"]


def register_properties() -> None:
    """Register the add-on's properties (heads, takes, settings) unless they are: the .blend then carries them."""
    import bpy

    if "thunder" not in bpy.types.Object.bl_rna.properties:
        properties.register()


def build_head(arrays: dict, info: dict, name: str | None = None, location=(0.0, 0.0, 0.0)):
    """The head (its armature object, its root at `location`) from the backend's head arrays and description
    (head_mesh_arrays and head_description in backend/head.py), exactly as the add-on builds it from the `head`
    reply's file."""
    return build_head_from_arrays(arrays, info, name, location=location)


def add_sound_strip(scene, audio_path, start: float = 0.0, end: float | None = None, frame_start: int = 1,
                    frames: int | None = None):
    """A sound strip of `audio_path` in which audio second `start` plays at `frame_start`, trimmed to start
    there (its content begins earlier when start > 0) and, when `end` is before the file's end, to end after
    `frames` frames. The timing is checked against the add-on's own reading of strips (sound.strip_audio), the
    rule the add-on uses to find the audio of a take."""
    fps = sound.scene_fps(scene)
    editor = scene.sequence_editor or scene.sequence_editor_create()
    path = Path(audio_path).resolve()
    try:
        strip = compat.strips(editor).new_sound(path.name[:60], str(path), 1, frame_start)
    except RuntimeError as exc:
        raise sound.AudioSourceError(f"Blender cannot load the audio {path} as a sound strip "
                                     f"({str(exc).strip()})") from None
    # Strips sit on whole frames; the fraction of a frame goes into the sound's own offset (seconds), which
    # delays the sound (sound.strip_audio): second `start` at frame_start needs an offset of -fraction.
    shift = start * fps
    whole = math.floor(shift + 1e-9)
    strip.sound_offset = (whole - shift) / fps
    compat.set_strip_frame(strip, "content_start", frame_start - whole)
    compat.set_strip_frame(strip, "left", frame_start)
    if end is not None and frames is not None:
        right = frame_start + frames
        if right < compat.strip_timing(strip).right:
            compat.set_strip_frame(strip, "right", right)
    heard = sound.strip_audio(scene, strip.name)
    if abs(heard.start - start) > 1e-4 or abs(heard.frame_start - frame_start) > 1e-4:
        raise RuntimeError(f"the sound strip plays second {heard.start:.4f} at frame {heard.frame_start:.3f}, "
                           f"not second {start:.4f} at frame {frame_start}")
    return strip


def animate_from_strip(scene, strip, head) -> None:
    """The panel's settings as an animator would leave them: animate `head` from the sound strip `strip`."""
    settings = scene.thunder
    settings.audio_source = "STRIP"
    settings.strip = strip.name
    settings.head = head
