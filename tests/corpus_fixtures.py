"""A tiny corpus in the corpus format, written with the articulation model (no speech engines).

Random phone strings drive the mouth, so speech units are learnable from motion; the audio is a tone per phone.
Clips carry emotion labels (neutral, happy, sad with varied intensities) and small sinusoidal neck and eye
motion, so that every part of the packed motion has meaningful normalization statistics. The phones, mouth
motion and audio come from `seed` alone; the emotion, neck and eyes from a second generator, so adding them
did not change the mouth data the M2S tests were tuned on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.corpus.articulation import Style, articulate
from training.corpus.format import Clip, ClipMeta, Segment, prepare_output, write_clip, write_index
from training.corpus.text import PHONES

EMOTIONS = ("neutral", "happy", "sad")


def _phone_string(rng, seconds):
    segments, t = [Segment("SIL", 0.0, 0.2)], 0.2
    while t < seconds - 0.3:
        d = float(rng.uniform(0.06, 0.16))
        segments.append(Segment(str(rng.choice(PHONES)), t, t + d))
        t += d
    segments.append(Segment("SIL", t, seconds))
    return segments


def _split(i: int, n_clips: int) -> str:
    """The first three quarters train, then one val clip, the rest test (12 clips: 9 / 1 / 2)."""
    n_train = max(1, (3 * n_clips) // 4)
    return "train" if i < n_train else ("val" if i == n_train else "test")


def write_tiny_corpus(root, head, n_clips: int = 12, seed: int = 0) -> Path:
    root = prepare_output(root)
    rng = np.random.default_rng(seed)
    extra_rng = np.random.default_rng(seed + 1000)
    metas = []
    for i in range(n_clips):
        seconds = float(rng.uniform(2.0, 3.0))
        n_samples = int(seconds * 16000)
        n_frames = -(-n_samples // 640)
        phones = _phone_string(rng, seconds)
        expression, jaw, _ = articulate(head, phones, n_frames, Style())
        t = np.arange(n_samples) / 16000
        audio = np.zeros(n_samples, dtype=np.float32)
        for seg in phones[1:-1]:
            f0 = 200 + 40 * PHONES.index(seg.label)
            on = (t >= seg.start) & (t < seg.end)
            audio[on] = 0.3 * np.sin(2 * np.pi * f0 * t[on])
        split = _split(i, n_clips)
        label = EMOTIONS[i % len(EMOTIONS)]
        intensity = 0.0 if label == "neutral" else round(float(extra_rng.uniform(0.3, 1.0)), 3)
        frame_t = np.arange(n_frames, dtype=np.float32)[:, None] / 25.0
        neck_phase, eye_phase = extra_rng.uniform(0, 2 * np.pi, 3), extra_rng.uniform(0, 2 * np.pi, 6)
        neck = (0.03 * np.sin(2 * np.pi * 0.4 * frame_t + neck_phase)).astype(np.float32)
        eyes = (0.05 * np.sin(2 * np.pi * 0.7 * frame_t + eye_phase)).astype(np.float32)
        meta = ClipMeta(id=f"clip{i:03d}", head={"name": head.name, "identity": head.identity},
                        speaker=f"voice{i % 3}" if split == "train" else split, split=split,
                        n_frames=n_frames, n_samples=n_samples, emotion={"label": label, "intensity": intensity},
                        text="random phones", words=None, phones=phones)
        write_clip(root, Clip(meta=meta, audio=audio, expression=expression, jaw=jaw, neck=neck, eyes=eyes))
        metas.append(meta)
    write_index(root, {"head": {"name": head.name, "identity": head.identity},
                       "expression_names": list(head.expression_names)}, metas)
    return root
