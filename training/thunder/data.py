"""THUNDER training data: per clip, normalized packed motion, the audio (or its frozen features), the speech
units and log-mel M2S is compared against, the emotion, and a style vector.

Batches are random windows of at most `window` frames (shorter clips are padded and masked). With
probability `context_prob` a window's first `context` frames are handed to the network as known motion, so
it learns to continue a previous window (long audio is sampled that way).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from backend.audio import MELS_PER_FRAME, SAMPLES_PER_FRAME, UNITS_PER_FRAME, clip_log_mel
from backend.motion import MotionStats, pack_motion
from backend.take_sampling import style_vector
from training.m2s.loss import IGNORE


@dataclasses.dataclass
class ThunderExample:
    clip_id: str
    speaker: str
    motion: np.ndarray           # (T, D) normalized
    wave: np.ndarray | None      # (T * 640,) 16 kHz, when the encoder trains
    features: np.ndarray | None  # (T, A) from the frozen encoder
    units: np.ndarray            # (2T,) int64
    mel: np.ndarray              # (4T, 80)
    emotion: int
    intensity: float
    style: np.ndarray            # (2D,)
    clean_audio: bool = True     # False: the mel is of degraded audio (training/m2s/loss.py, mel_weight)

    @property
    def n_frames(self) -> int:
        return self.motion.shape[0]


def clip_motion(clip) -> np.ndarray:
    """A corpus clip's packed motion (T, E + 12)."""
    return pack_motion(clip.expression, clip.jaw, clip.neck, clip.eyes).astype(np.float32)


def fit_stats(clips) -> MotionStats:
    return MotionStats.from_frames(np.concatenate([clip_motion(c) for c in clips]))


def make_examples(clips, stats: MotionStats, units, emotions, encoder=None, keep_wave: bool = False):
    """Corpus clips -> examples. With `encoder` (frozen), its features are computed once here."""
    from backend.audio_encoders import encode_long

    examples = []
    for clip in clips:
        n = clip.meta.n_frames
        motion = stats.normalize(clip_motion(clip))
        wave = np.zeros(n * SAMPLES_PER_FRAME, dtype=np.float32)
        wave[: min(len(clip.audio), len(wave))] = clip.audio[: len(wave)]
        features = encode_long(encoder, wave).numpy() if encoder is not None else None
        label = clip.meta.emotion.get("label", "neutral")
        examples.append(ThunderExample(
            clip_id=clip.id, speaker=clip.meta.speaker, motion=motion, wave=wave if keep_wave else None,
            features=features, units=units.labels(clip)[: n * UNITS_PER_FRAME], mel=clip_log_mel(clip.audio, n),
            emotion=emotions.index(label) if label in emotions else emotions.index("neutral"),
            intensity=float(clip.meta.emotion.get("intensity", 0.0)),
            style=style_vector(torch.from_numpy(motion)).numpy(), clean_audio=clip.meta.clean_audio))
    return examples


def crop_batch(examples, batch_size: int, window: int, context: int, context_prob: float,
               rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A batch of random windows: motion, lengths, units, mel, emotion, intensity, style, known_mask,
    clean_audio, and either features or wave."""
    picks = rng.integers(0, len(examples), size=batch_size)
    first = examples[0]
    dim = first.motion.shape[1]
    batch = {
        "motion": torch.zeros(batch_size, window, dim),
        "lengths": torch.zeros(batch_size, dtype=torch.long),
        "units": torch.full((batch_size, window * UNITS_PER_FRAME), IGNORE, dtype=torch.long),
        "mel": torch.zeros(batch_size, window * MELS_PER_FRAME, first.mel.shape[1]),
        "emotion": torch.zeros(batch_size, dtype=torch.long),
        "intensity": torch.zeros(batch_size),
        "style": torch.zeros(batch_size, first.style.shape[0]),
        "known_mask": torch.zeros(batch_size, window, dtype=torch.bool),
        "clean_audio": torch.tensor([examples[i].clean_audio for i in picks]),
    }
    if first.features is not None:
        batch["features"] = torch.zeros(batch_size, window, first.features.shape[1])
    if first.wave is not None:
        batch["wave"] = torch.zeros(batch_size, window * SAMPLES_PER_FRAME)
    for b, i in enumerate(picks):
        ex = examples[i]
        n = min(window, ex.n_frames)
        start = int(rng.integers(0, ex.n_frames - n + 1))
        batch["motion"][b, :n] = torch.from_numpy(ex.motion[start:start + n])
        batch["lengths"][b] = n
        batch["units"][b, : n * UNITS_PER_FRAME] = torch.from_numpy(
            ex.units[start * UNITS_PER_FRAME:(start + n) * UNITS_PER_FRAME])
        batch["mel"][b, : n * MELS_PER_FRAME] = torch.from_numpy(
            ex.mel[start * MELS_PER_FRAME:(start + n) * MELS_PER_FRAME])
        batch["emotion"][b] = ex.emotion
        batch["intensity"][b] = ex.intensity
        batch["style"][b] = torch.from_numpy(ex.style)
        if n > context and rng.random() < context_prob:
            batch["known_mask"][b, :context] = True
        if ex.features is not None:
            batch["features"][b, :n] = torch.from_numpy(ex.features[start:start + n])
        if ex.wave is not None:
            batch["wave"][b, : n * SAMPLES_PER_FRAME] = torch.from_numpy(
                ex.wave[start * SAMPLES_PER_FRAME:(start + n) * SAMPLES_PER_FRAME])
    return batch


def slice_batch(batch: dict, rank: int, world: int) -> dict:
    """This process's contiguous share of a global batch (DDP: every rank draws the same global batch)."""
    size = next(iter(batch.values())).shape[0] // world
    return {k: v[rank * size:(rank + 1) * size] for k, v in batch.items()}
