"""Real data in: per-clip FLAME parameter sequences plus audio, as reconstruction tools write them, to the corpus
format (docs/corpus_format.md).

Input: a folder with, per clip, `<name>.npz` and `<name>.wav` (any rate, any channel count), and optionally
`<name>.txt` (its transcript; aligned with pocketsphinx when all its words are in the dictionary). The npz
holds, under these names or their common aliases:

| corpus field | npz names (first found) | shape |
| --- | --- | --- |
| expression | expression, exp, expr | (T, E) |
| jaw | jaw, jaw_pose; else columns 3:6 of pose (T, 6) or 6:9 of pose (T, 15) | (T, 3) |
| neck | neck, neck_pose; else columns 3:6 of pose (T, 15); else the global rotation (pose 0:3, global_pose) | (T, 3) |
| eyes | eyes, eye_pose; else columns 9:15 of pose (T, 15); else zeros | (T, 6) |
| fps | fps (scalar), or --fps | |

(pose (T, 6) = global + jaw, as DECA/EMOCA write it; pose (T, 15) = global, neck, jaw, eyes, FLAME's order.)
A global head rotation becomes the neck rotation: the corpus has no root motion. Motion is resampled to 25 fps
(linear for expression, spherical for rotations) and audio to 16 kHz mono.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from backend.frame_rate import resample_motion
from training.corpus.errors import ClipError, CorpusError
from training.corpus.format import (FPS, Clip, ClipMeta, assign_splits, frames_for_samples, prepare_output,
                                    read_audio, to_mono_16k, write_clip, write_index)

ALIASES = {"expression": ("expression", "exp", "expr"), "jaw": ("jaw", "jaw_pose"),
           "neck": ("neck", "neck_pose"), "eyes": ("eyes", "eye_pose"), "global": ("global_pose", "global_orient")}
MAX_LENGTH_MISMATCH_S = 0.2  # motion and audio may differ by this much; the motion is held or cut to fit


def _first(z, names):
    for n in names:
        if n in z.files:
            return np.asarray(z[n], dtype=np.float64)
    return None


def read_flame_sequence(path: Path, fps: float | None = None) -> tuple[dict[str, np.ndarray], float]:
    """A reconstruction tool's .npz to ({expression, jaw, neck, eyes}, fps), or raise ClipError."""
    clip_id = path.stem
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ClipError(clip_id, f"cannot read {path.name} ({exc})") from None
    with z:
        expression = _first(z, ALIASES["expression"])
        if expression is None or expression.ndim != 2:
            raise ClipError(clip_id, f"{path.name} has no (frames, n) expression array "
                                     f"(looked for {', '.join(ALIASES['expression'])})")
        pose = _first(z, ("pose", "poses"))
        jaw, neck, eyes, glob = (_first(z, ALIASES[k]) for k in ("jaw", "neck", "eyes", "global"))
        if pose is not None:
            width = pose.shape[1] if pose.ndim == 2 else 0
            if width == 6:
                glob = pose[:, 0:3] if glob is None else glob
                jaw = pose[:, 3:6] if jaw is None else jaw
            elif width == 15:
                glob = pose[:, 0:3] if glob is None else glob
                neck = pose[:, 3:6] if neck is None else neck
                jaw = pose[:, 6:9] if jaw is None else jaw
                eyes = pose[:, 9:15] if eyes is None else eyes
            else:
                raise ClipError(clip_id, f"{path.name}: 'pose' must be (frames, 6) or (frames, 15); got {pose.shape}")
        if jaw is None:
            raise ClipError(clip_id, f"{path.name} has no jaw rotation (jaw, jaw_pose or pose)")
        n = expression.shape[0]
        if neck is None:
            neck = glob if glob is not None else np.zeros((n, 3))
        if eyes is None:
            eyes = np.zeros((n, 6))
        file_fps = float(z["fps"]) if "fps" in z.files else None
    fps = file_fps or fps
    if not fps or fps <= 0:
        raise ClipError(clip_id, f"{path.name} does not say its frame rate; give --fps")
    motion = {"expression": expression, "jaw": jaw, "neck": neck, "eyes": eyes}
    for name, value in motion.items():
        if value.ndim != 2 or value.shape[0] != n:
            raise ClipError(clip_id, f"{path.name}: '{name}' has shape {value.shape}, expected {n} frames")
        if not np.all(np.isfinite(value)):
            raise ClipError(clip_id, f"{path.name}: '{name}' has NaN or infinite values")
    return motion, fps


def convert_clip(npz: Path, head, speaker: str, split: str, fps: float | None = None,
                 align_text: bool = True) -> Clip:
    """One clip of real data to the corpus format (ClipError on any problem)."""
    clip_id = npz.stem
    motion, src_fps = read_flame_sequence(npz, fps)
    if motion["expression"].shape[1] > head.n_expression:
        raise ClipError(clip_id, f"it has {motion['expression'].shape[1]} expression coefficients; the head "
                                 f"{head.name} has {head.n_expression}")
    wav = npz.with_suffix(".wav")
    if not wav.exists():
        raise ClipError(clip_id, f"the audio {wav.name} is missing")
    try:
        audio, rate = read_audio(wav)
    except (OSError, ValueError) as exc:
        raise ClipError(clip_id, f"cannot read {wav.name} ({exc})") from None
    audio = to_mono_16k(audio, rate)
    motion_s, audio_s = motion["expression"].shape[0] / src_fps, audio.size / 16000
    if abs(motion_s - audio_s) > MAX_LENGTH_MISMATCH_S:
        raise ClipError(clip_id, f"the motion lasts {motion_s:.2f} s but the audio {audio_s:.2f} s")
    n_frames = frames_for_samples(audio.size)
    motion = resample_motion(motion, src_fps, FPS, n_frames)   # the one rule: Slerp for the rotations
    text = words = phones = None
    txt = npz.with_suffix(".txt")
    extra = {"original": npz.name, "original_fps": src_fps, "original_sample_rate": rate}
    if txt.exists():
        text = " ".join(txt.read_text(errors="replace").lower().replace(",", " ").replace(".", " ").split())
        if align_text and text:
            from training.corpus.align import align
            from training.corpus.errors import AlignmentError

            try:
                words, phones = align(audio, text)
            except AlignmentError as exc:
                extra["alignment_problem"] = str(exc)
    meta = ClipMeta(id=clip_id, head={"name": head.name, "identity": head.identity}, speaker=speaker,
                    split=split, n_frames=n_frames, n_samples=int(audio.size),
                    emotion={"label": "unknown", "intensity": 0.0}, voice=None, text=text, words=words,
                    phones=phones, source="converted", extra=extra)
    return Clip(meta=meta, audio=audio.astype(np.float32),
                **{k: v.astype(np.float32) for k, v in motion.items()})


def convert_folder(source: str | Path, out: str | Path, fps: float | None = None, head: str = "builtin",
                   speaker: str | None = None, align_text: bool = True, seed: int = 0, report=None) -> dict:
    """Convert every <name>.npz (+ .wav) in `source` into the corpus `out`; bad clips are reported and skipped.
    Speakers: `speaker` for all, else an npz 'speaker' entry, else the name up to its first '_'. Splits are by
    speaker (see assign_splits)."""
    from backend.head import load_head

    source = Path(source)
    if not source.is_dir():
        raise CorpusError(f"{source} is not a folder of .npz and .wav files")
    files = sorted(source.glob("*.npz"))
    if not files:
        raise CorpusError(f"{source} holds no .npz files to convert")
    the_head = load_head(head)
    out = prepare_output(out)
    report = report or (lambda err: print(f"thunder: skipping {err}", file=sys.stderr))

    def speaker_of(path: Path) -> str:
        if speaker:
            return speaker
        try:
            with np.load(path, allow_pickle=False) as z:
                if "speaker" in z.files:
                    return str(z["speaker"])
        except (OSError, ValueError):
            pass
        return path.stem.split("_")[0]

    speakers = {p: speaker_of(p) for p in files}
    splits = assign_splits(list(speakers.values()), seed)
    metas, failed, seconds = [], 0, 0.0
    for path in files:
        try:
            clip = convert_clip(path, the_head, speakers[path], splits[speakers[path]], fps, align_text)
            write_clip(out, clip)
            metas.append(clip.meta)
            seconds += clip.meta.seconds
        except ClipError as exc:
            failed += 1
            report(exc)
    header = {"head": {"name": the_head.name, "identity": the_head.identity, "spec": str(head)},
              "expression_names": list(the_head.expression_names), "converted_from": str(source)}
    write_index(out, header, metas)
    return {"converted": len(metas), "failed": failed, "hours": seconds / 3600}
