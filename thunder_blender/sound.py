"""Which seconds of which audio file a take animates, and from which frame: a sound strip's file, trim, offset
and the scene's frame rate, or a plain file from the scene's start frame."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import compat


class AudioSourceError(Exception):
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
    """The audio of the sound strip `strip_name`, as the Sequencer plays it: audio second t sounds at frame
    content_start + (t - sound_offset) * fps, and only the frames between the handles play."""
    strip = next((s for s in compat.sound_strips(scene) if s.name == strip_name), None)
    if strip is None:
        raise AudioSourceError(f"there is no sound strip named '{strip_name}' in the scene '{scene.name}'"
                               if strip_name else "choose a sound strip to animate")
    sound = strip.sound
    if sound is None:
        raise AudioSourceError(f"the strip '{strip.name}' has no sound")
    path = sound_file(sound, strip.name)
    fps = scene_fps(scene)
    timing = compat.strip_timing(strip)
    start = timing.sound_offset + (timing.left - timing.content_start) / fps
    trimmed_end = timing.right < timing.content_start + timing.duration - 1e-6
    end = timing.sound_offset + (timing.right - timing.content_start) / fps if trimmed_end else None
    if start < 0:   # a handle dragged before the sound's start: animate from the sound's first second
        start = 0.0
    frame_start = timing.content_start + (start - timing.sound_offset) * fps
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
            partial = path.with_name(path.name + f".{os.getpid()}.part")
            partial.write_bytes(data)
            os.replace(partial, path)
        return str(path)
    path = bpy.path.abspath(sound.filepath, library=sound.library)
    if not os.path.isfile(path):
        raise AudioSourceError(f"the sound strip '{strip_name}' plays {path}, which does not exist")
    return path
