"""Motion as the diffusion model sees it: one vector per frame, normalized with the training set's statistics.

A frame packs the head's parameters in a fixed order: expression (E), jaw (3), neck (3), eyes (6). The model
works on (motion - mean) / std, so every value is O(1); the statistics travel with the checkpoint, so a take
is always turned back into the head's own parameters with the numbers it was trained with.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

# The one motion layout of the backend and training (the add-on's take reader, thunder_blender/take_file.py,
# states the same widths for itself: tests/test_generate.py checks that they agree).
POSE_PARTS = (("jaw", 3), ("neck", 3), ("eyes", 6))
MIN_STD = 1e-3  # values that hardly move in the data must not be blown up by normalization


def motion_dim(n_expression: int) -> int:
    return n_expression + sum(size for _, size in POSE_PARTS)


def part_slices(n_expression: int) -> dict[str, slice]:
    """Where each part lives in a packed frame."""
    slices, start = {"expression": slice(0, n_expression)}, n_expression
    for name, size in POSE_PARTS:
        slices[name] = slice(start, start + size)
        start += size
    return slices


def pack_motion(expression, jaw, neck=None, eyes=None):
    """(..., E), (..., 3), (..., 3), (..., 6) -> (..., E + 12); numpy or torch; missing neck/eyes are zeros."""
    lib = torch if isinstance(expression, torch.Tensor) else np
    parts = [expression, jaw]
    for value, (_, size) in zip((neck, eyes), POSE_PARTS[1:]):
        parts.append(value if value is not None else lib.zeros(tuple(expression.shape[:-1]) + (size,),
                                                                dtype=expression.dtype))
    return lib.concatenate(parts, -1) if lib is np else torch.cat(parts, -1)


def unpack_motion(motion, n_expression: int) -> dict:
    """(..., E + 12) -> {"expression", "jaw", "neck", "eyes"} views."""
    return {name: motion[..., s] for name, s in part_slices(n_expression).items()}


@dataclasses.dataclass
class MotionStats:
    """Per-value mean and std of packed motion over the training frames."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_frames(cls, frames: np.ndarray) -> "MotionStats":
        frames = np.asarray(frames, dtype=np.float64)
        return cls(frames.mean(0).astype(np.float32), np.maximum(frames.std(0), MIN_STD).astype(np.float32))

    def normalize(self, motion):
        mean, std = self._like(motion)
        return (motion - mean) / std

    def denormalize(self, motion):
        mean, std = self._like(motion)
        return motion * std + mean

    def _like(self, motion):
        if isinstance(motion, torch.Tensor):
            return (torch.as_tensor(self.mean, device=motion.device, dtype=motion.dtype),
                    torch.as_tensor(self.std, device=motion.device, dtype=motion.dtype))
        return self.mean, self.std

    def to_json(self) -> dict:
        return {"mean": [round(float(v), 7) for v in self.mean], "std": [round(float(v), 7) for v in self.std]}

    @classmethod
    def from_json(cls, data: dict) -> "MotionStats":
        return cls(np.asarray(data["mean"], dtype=np.float32), np.asarray(data["std"], dtype=np.float32))
