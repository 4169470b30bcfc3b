"""Head motion rendered with Workbench into a video with its audio (render_clip_video), and PNG frames joined
into an MP4 with sound (encode_frames).
Builds on preview.py's scene (one mesh, camera and caption; each frame replaces the vertices). The video is
PNG frames joined by ffmpeg with the clip's audio; where ffmpeg is missing, the frames are the result.
bpy is imported inside the functions only (through preview.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from backend.audio import write_wav
from backend.blender.preview import FRONT, CameraView, PreviewScene


def _vertices(head, motion: dict) -> np.ndarray:
    import torch

    with torch.no_grad():
        v = head(**{k: torch.as_tensor(np.asarray(motion[k]), dtype=torch.float32)
                    for k in ("expression", "jaw", "neck", "eyes") if motion.get(k) is not None})
    return v.numpy()


def _label_at(phones, t: float) -> str:
    for p in phones or ():
        label, start, end = (p.label, p.start, p.end) if hasattr(p, "label") else p
        if start <= t < end:
            return "" if label == "SIL" else label
    return ""


def _scene(head, resolution: int, view: CameraView) -> PreviewScene:
    return PreviewScene(head.faces, getattr(head, "face_region", None),
                        getattr(head, "face_region_names", None) or ("skin",), resolution=resolution, view=view)


def render_clip_video(head, motion: dict, audio: np.ndarray | None, out, fps: float = 25.0,
                      sample_rate: int = 16000, resolution: int = 384, phones=None, captions: bool = True,
                      keep_frames: bool = False, view: CameraView = FRONT) -> Path:
    """Render per-frame head parameters (expression, jaw, neck, eyes) to `out` (.mp4 with the audio), captioned
    with the phone at each frame. Without ffmpeg, writes PNG frames into the folder `out` minus its suffix and
    returns that folder."""
    out = Path(out)
    vertices = _vertices(head, motion)
    scene = _scene(head, resolution, view)
    ffmpeg = shutil.which("ffmpeg")
    frames_dir = out.with_suffix("") if (keep_frames or not ffmpeg) else Path(tempfile.mkdtemp(prefix="thunder-frames-"))
    frames_dir.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(vertices):
        caption = f"{i / fps:5.2f} s  {_label_at(phones, i / fps)}" if captions else ""
        scene.render(v, frames_dir / f"frame_{i:05d}.png", caption=caption)
    if not ffmpeg:
        return frames_dir
    wav = None
    if audio is not None:
        wav = frames_dir / "audio.wav"
        write_wav(wav, audio, sample_rate)
    encode_frames(frames_dir / "frame_%05d.png", fps, out, audio=wav)
    if not keep_frames:
        shutil.rmtree(frames_dir, ignore_errors=True)
    return out


def encode_frames(pattern, fps: float, out, audio=None, audio_start: float = 0.0, start_number: int = 0) -> Path:
    """Join numbered PNG frames (`pattern`, e.g. frames/frame_%05d.png, from `start_number`) into an H.264 MP4
    at `fps`, with the sound of the file `audio` from its second `audio_start` (AAC), cut to the video's length.
    Needs ffmpeg on PATH."""
    args = ["ffmpeg", "-y", "-loglevel", "error", "-framerate", f"{fps:g}", "-start_number", str(start_number),
            "-i", str(pattern)]
    if audio is not None:
        args += ["-ss", f"{audio_start:.6f}", "-i", str(audio), "-c:a", "aac", "-b:a", "128k", "-shortest"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20", str(out)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args, check=True)
    return Path(out)
