"""M2S training data: per clip, motion (T, E + 3: expression then jaw), unit labels (2T,) and log-mel (4T, 80).

Only expression and jaw are kept: M2S hears the lips relative to the head (no neck, no global pose), and the
same holds when the diffusion model's output is fed to it. Features are computed per batch from the motion
(`MotionFeatures.from_motion` poses only the input vertices), so the examples stay small.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from backend.audio import MELS_PER_FRAME, UNITS_PER_FRAME, clip_log_mel
from backend.frame_rate import interpolate_motion, interpolate_rows
from training.m2s.loss import IGNORE


@dataclasses.dataclass
class M2SExample:
    clip_id: str
    speaker: str
    motion: np.ndarray    # (T, E + 3) float32: expression, then jaw
    units: np.ndarray     # (2T,) int64
    mel: np.ndarray       # (4T, 80) float32
    clean_audio: bool = True   # False: the mel is of degraded audio (training/m2s/loss.py, mel_weight)

    @property
    def n_frames(self) -> int:
        return self.motion.shape[0]


def split_motion(motion: torch.Tensor, n_expression: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., E + 3) motion -> expression (..., E), jaw (..., 3)."""
    return motion[..., :n_expression], motion[..., n_expression:]


def make_examples(clips, units) -> list[M2SExample]:
    """Turn corpus clips into M2S examples (motion, unit labels, log-mel)."""
    examples = []
    for clip in clips:
        motion = np.concatenate([clip.expression, clip.jaw], axis=1).astype(np.float32)
        n_frames = motion.shape[0]
        examples.append(M2SExample(clip_id=clip.id, speaker=clip.meta.speaker, motion=motion,
                                   units=units.labels(clip)[: n_frames * UNITS_PER_FRAME],
                                   mel=clip_log_mel(clip.audio, n_frames), clean_audio=clip.meta.clean_audio))
    return examples


@dataclasses.dataclass
class Augment:
    """Motion perturbations, so M2S also judges motion that is not ground truth (THUNDER feeds it
    diffusion samples). Amplitude scales the offsets from rest; speed resamples motion and targets
    together, so they stay aligned; noise is added per value."""

    amplitude: float = 0.15   # scale drawn from [1 - a, 1 + a]
    speed: float = 0.1        # rate drawn from [1 - s, 1 + s]
    noise: float = 0.02       # std, in feature units (cm for vertices)


def crop_batch(examples: list[M2SExample], batch_size: int, window: int, rng: np.random.Generator,
               augment: Augment | None = None) -> dict[str, torch.Tensor]:
    """A batch of random windows of `window` frames (shorter clips are padded and masked); with `augment`,
    a speed change resamples motion and targets together. Returns motion, units, mel, lengths and clean_audio."""
    motions, units, mels, lengths = [], [], [], []
    picks = rng.integers(0, len(examples), size=batch_size)
    for i in picks:
        ex = examples[i]
        rate = 1.0 if augment is None else rng.uniform(1 - augment.speed, 1 + augment.speed)
        span = min(ex.n_frames, int(window * rate))
        start = int(rng.integers(0, ex.n_frames - span + 1))
        # Positions (in source frames) of the output frames: `window` frames at `rate` source frames each.
        n_out = min(window, int(span / rate))
        pos = start + np.arange(n_out) * rate
        expression, jaw = split_motion(ex.motion, ex.motion.shape[1] - 3)
        moved = interpolate_motion({"expression": expression, "jaw": jaw}, pos)
        motions.append(np.concatenate([moved["expression"], moved["jaw"]], axis=1))
        units.append(ex.units[np.clip(((np.arange(n_out * UNITS_PER_FRAME) + 0.5) * rate / UNITS_PER_FRAME
                                       + start) * UNITS_PER_FRAME, 0, len(ex.units) - 1).astype(np.int64)])
        mels.append(interpolate_rows(ex.mel, (np.arange(n_out * MELS_PER_FRAME) * rate) + start * MELS_PER_FRAME)
                    .astype(np.float32))
        lengths.append(n_out)
    batch = {
        "motion": torch.zeros(batch_size, window, examples[0].motion.shape[1]),
        "units": torch.full((batch_size, window * UNITS_PER_FRAME), IGNORE, dtype=torch.long),
        "mel": torch.zeros(batch_size, window * MELS_PER_FRAME, examples[0].mel.shape[1]),
        "lengths": torch.tensor(lengths),
        "clean_audio": torch.tensor([examples[i].clean_audio for i in picks]),
    }
    for b, (f, u, m, n) in enumerate(zip(motions, units, mels, lengths)):
        batch["motion"][b, :n] = torch.from_numpy(f)
        batch["units"][b, : n * UNITS_PER_FRAME] = torch.from_numpy(u)
        batch["mel"][b, : n * MELS_PER_FRAME] = torch.from_numpy(m)
    return batch


def augment_features(features: torch.Tensor, rng: np.random.Generator, augment: Augment) -> torch.Tensor:
    """Scale each item's features (offsets from rest) and add noise; numpy's generator keeps resume exact."""
    scale = rng.uniform(1 - augment.amplitude, 1 + augment.amplitude, (features.shape[0], 1, 1))
    noise = rng.normal(0, augment.noise, features.shape)
    return features * torch.from_numpy(scale).float() + torch.from_numpy(noise).float()
