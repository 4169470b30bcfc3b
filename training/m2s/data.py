"""M2S training data: per clip, motion features (T, D), unit labels (2T,) and log-mel (4T, 80).

Vertices are computed in the head's own frame (expression and jaw only: no neck, no global pose), because
what M2S must hear is the lips relative to the head, not where the head points. The same rule holds when
the diffusion model's output is fed to M2S (`motion_to_vertices`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from backend.audio import MELS_PER_FRAME, SAMPLES_PER_FRAME, log_mel_spectrogram
from training.m2s.inputs import MotionFeatures
from training.m2s.model import UNITS_PER_FRAME


@dataclasses.dataclass
class M2SExample:
    clip_id: str
    speaker: str
    features: np.ndarray  # (T, D) float32
    units: np.ndarray     # (2T,) int64
    mel: np.ndarray       # (4T, 80) float32

    @property
    def n_frames(self) -> int:
        return self.features.shape[0]


def motion_to_vertices(head, expression: torch.Tensor, jaw: torch.Tensor) -> torch.Tensor:
    """(B, T, E) expression and (B, T, 3) jaw -> (B, T, V, 3) vertices in the head's frame."""
    batch, frames = expression.shape[:2]
    vertices = head(expression=expression.reshape(batch * frames, -1), jaw=jaw.reshape(batch * frames, 3))
    return vertices.reshape(batch, frames, -1, 3)


def clip_log_mel(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Log-mel of a clip's audio, padded or cut to exactly 4 frames per motion frame: (4T, 80)."""
    wave = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    wave[: min(len(audio), len(wave))] = audio[: len(wave)]
    return log_mel_spectrogram(torch.from_numpy(wave))[0].numpy()


@torch.no_grad()
def make_examples(clips, head, features: MotionFeatures, units) -> list[M2SExample]:
    """Turn corpus clips into M2S examples (features, unit labels, log-mel)."""
    examples = []
    for clip in clips:
        expression = torch.from_numpy(clip.expression.astype(np.float32))[None]
        jaw = torch.from_numpy(clip.jaw.astype(np.float32))[None]
        if features.kind == "expression":
            x = features.from_parameters(expression, jaw)[0]
        else:
            x = features.from_vertices(motion_to_vertices(head, expression, jaw))[0]
        n_frames = x.shape[0]
        examples.append(M2SExample(clip_id=clip.id, speaker=clip.meta.speaker, features=x.numpy(),
                                   units=units.labels(clip)[: n_frames * UNITS_PER_FRAME],
                                   mel=clip_log_mel(clip.audio, n_frames)))
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
    """A batch of random windows of `window` frames (shorter clips are padded and masked)."""
    feats, units, mels, lengths = [], [], [], []
    for i in rng.integers(0, len(examples), size=batch_size):
        ex = examples[i]
        rate = 1.0 if augment is None else rng.uniform(1 - augment.speed, 1 + augment.speed)
        span = min(ex.n_frames, int(window * rate))
        start = int(rng.integers(0, ex.n_frames - span + 1))
        # Positions (in source frames) of the output frames: `window` frames at `rate` source frames each.
        n_out = min(window, int(span / rate))
        pos = start + np.arange(n_out) * rate
        feats.append(_interp(ex.features, pos))
        units.append(ex.units[np.clip(((np.arange(n_out * UNITS_PER_FRAME) + 0.5) * rate / UNITS_PER_FRAME
                                       + start) * UNITS_PER_FRAME, 0, len(ex.units) - 1).astype(np.int64)])
        mels.append(_interp(ex.mel, (np.arange(n_out * MELS_PER_FRAME) * rate) + start * MELS_PER_FRAME))
        lengths.append(n_out)
    batch = {
        "features": torch.zeros(batch_size, window, examples[0].features.shape[1]),
        "units": torch.full((batch_size, window * UNITS_PER_FRAME), -100, dtype=torch.long),
        "mel": torch.zeros(batch_size, window * MELS_PER_FRAME, examples[0].mel.shape[1]),
        "lengths": torch.tensor(lengths),
    }
    for b, (f, u, m, n) in enumerate(zip(feats, units, mels, lengths)):
        batch["features"][b, :n] = torch.from_numpy(f)
        batch["units"][b, : n * UNITS_PER_FRAME] = torch.from_numpy(u)
        batch["mel"][b, : n * MELS_PER_FRAME] = torch.from_numpy(m)
    if augment is not None:
        scale = torch.from_numpy(rng.uniform(1 - augment.amplitude, 1 + augment.amplitude, (batch_size, 1, 1)))
        noise = torch.from_numpy(rng.normal(0, augment.noise, batch["features"].shape))
        batch["features"] = (batch["features"] * scale.float() + noise.float())
    return batch


def _interp(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of (N, D) values at fractional row positions (clamped to the ends)."""
    positions = np.clip(positions, 0, len(values) - 1)
    lo = np.floor(positions).astype(np.int64)
    hi = np.minimum(lo + 1, len(values) - 1)
    w = (positions - lo)[:, None].astype(np.float32)
    return (values[lo] * (1 - w) + values[hi] * w).astype(np.float32)
