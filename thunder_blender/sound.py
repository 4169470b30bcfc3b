"""Which seconds of which audio file a take animates, and from which frame: a sound strip's file, trim, offset
and the scene's frame rate, or a plain file from the scene's start frame."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import compat
from .errors import ThunderError


class AudioSourceError(ThunderError):
    """The audio to animate cannot be found or read; one sentence."""


@dataclass(frozen=True)
class AudioRange:
    path: str              # the audio file
    start: float           # seconds into the file of the first animated frame
    end: float | None      # seconds into the file after the last one (None: the file's end)
    frame_start: float     # the scene frame of the take's first frame
    fps: float             # the scene's frame rate (fps / fps_base)


def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def strip_audio(scene, strip_name: str) -> AudioRange:
    """The audio of the sound strip `strip_name`, as the Sequencer plays it (measured from the mixdown of
    Blender 4.5, 5.0 and 5.2, tests/blender_cases.py strip_timing_matches_mixdown): file second t sounds at
    frame content_start + (t + sound_offset) * fps (a positive offset delays the sound), and only the frames
    between the handles play. A retimed strip (retiming keys: another speed) is refused."""
    strip = next((s for s in compat.sound_strips(scene) if s.name == strip_name), None)
    if strip is None:
        raise AudioSourceError(f"there is no sound strip named '{strip_name}' in the scene '{scene.name}'"
                               if strip_name else "choose a sound strip to animate")
    sound = strip.sound
    if sound is None:
        raise AudioSourceError(f"the strip '{strip.name}' has no sound")
    if retimed(strip):
        raise AudioSourceError(f"the sound strip '{strip.name}' is retimed (it has retiming keys), and Thunder "
                               "animates sound at its normal speed only: reset its retiming (Strip > Retiming > "
                               "Reset) or render the retimed sound to a file and use that")
    path = sound_file(sound, strip.name)
    return strip_range(path, compat.strip_timing(strip), scene_fps(scene), strip.name)


def retimed(strip) -> bool:
    """Whether a strip plays at another speed than its content's: Blender 4.5 and 5.x retime with keys."""
    return len(getattr(strip, "retiming_keys", None) or ()) > 0


def strip_range(path: str, timing, fps: float, strip_name: str = "") -> AudioRange:
    """The file seconds a strip with `timing` (compat.StripTiming) plays, and the frame of the first: the
    timing rule above. Pure arithmetic, so the rule has one home."""
    start = (timing.left - timing.content_start) / fps - timing.sound_offset
    end = (timing.right - timing.content_start) / fps - timing.sound_offset
    content_seconds = timing.duration / fps   # the sound's length, rounded up to whole frames
    if start < 0:   # the strip starts before its sound does (a positive offset): animate from the sound's start
        start = 0.0
    if end >= content_seconds - 1.0 / fps:   # plays to the sound's end (to within the rounding of the last frame)
        end = None
    if end is not None and end <= start:
        raise AudioSourceError(f"the sound strip '{strip_name}' plays none of its sound (its handles and its "
                               f"sound offset of {timing.sound_offset:g} s leave nothing)")
    frame_start = timing.content_start + (start + timing.sound_offset) * fps
    return AudioRange(path, start, end, frame_start, fps)


def file_audio(scene, path: str) -> AudioRange:
    absolute = bpy.path.abspath(path) if path else ""
    if not absolute:
        raise AudioSourceError("choose an audio file to animate")
    if not os.path.isfile(absolute):
        raise AudioSourceError(f"the audio file {absolute} does not exist")
    return AudioRange(absolute, 0.0, None, float(scene.frame_start), scene_fps(scene))


def sound_file(sound, strip_name: str) -> str:
    """The file a sound plays; a packed sound is written to a temporary file first."""
    if sound.packed_file is not None:
        # Named by its content, so generating again reuses the file instead of writing another copy.
        data = sound.packed_file.data
        suffix = Path(sound.filepath).suffix or ".wav"
        path = Path(tempfile.gettempdir()) / f"thunder-packed-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
        if not path.is_file() or path.stat().st_size != len(data):
            # A unique temporary name in the same folder: never another process's or a user's file.
            handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
            try:
                with os.fdopen(handle, "wb") as f:
                    f.write(data)
                os.replace(partial, path)
            except BaseException:
                Path(partial).unlink(missing_ok=True)
                raise
        return str(path)
    path = bpy.path.abspath(sound.filepath, library=sound.library)
    if not os.path.isfile(path):
        raise AudioSourceError(f"the sound strip '{strip_name}' plays {path}, which does not exist")
    return path


def add_listen_strip(scene, wav_path: str, name: str, frame_start: float, original: str = ""):
    """A muted sound strip of `wav_path` (what a take's lips say, second 0 at the take's first frame
    `frame_start`, which may fall between frames: the fraction goes into the sound offset, which delays the
    sound), in the channel under the strip `original` when that is free, else the first free one above it."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    source = next((s for s in compat.sound_strips(scene) if s.name == original), None) if original else None
    channel = source.channel if source is not None else 1
    whole = math.floor(frame_start + 1e-9)
    try:
        strip = compat.strips(editor).new_sound(name[:60], str(wav_path), 32, whole)
    except RuntimeError as exc:
        raise AudioSourceError(f"Blender cannot load {wav_path} as a sound strip ({str(exc).strip()})") from None
    strip.sound_offset = (frame_start - whole) / scene_fps(scene)
    timing = compat.strip_timing(strip)
    candidates = ([channel - 1] if source is not None and channel > 1 else []) + \
        list(range(channel + (1 if source is not None else 0), 128))
    strip.channel = next(c for c in candidates if _channel_free_except(scene, c, timing, strip))
    strip.mute = True
    return strip


def _channel_free_except(scene, channel: int, timing, own) -> bool:
    for strip in getattr(scene.sequence_editor, "strips_all", None) or getattr(scene.sequence_editor,
                                                                                "sequences_all", []):
        if strip.as_pointer() == own.as_pointer() or strip.channel != channel:
            continue
        other = compat.strip_timing(strip)
        if other.left < timing.right and other.right > timing.left:
            return False
    return True
