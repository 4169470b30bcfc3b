"""The inner-lip gap of packed motion on a head: the distance between its upper and lower inner-lip centre
landmarks, the figure by which /p b m/ closures and open vowels are judged (training/metrics.py). One
definition for the flicker filter (which keeps closures) and for training's lip-gap loss (which needs its
gradient), so it is torch and works on batches.

    lips = lip_centres(head)                       # the head computing only those two vertices
    gap = lip_gap(lips, motion, head.n_expression) # (..., T, D) packed motion -> (..., T) metres
"""

from __future__ import annotations

import torch

from backend.motion import unpack_motion


def lip_centres(head):
    """The head computing only its two inner-lip centre vertices (upper, lower)."""
    landmarks = head.landmarks
    return head.subset([landmarks["upper_lip_center"], landmarks["lower_lip_center"]])


def lip_gap(lips, motion: torch.Tensor, n_expression: int) -> torch.Tensor:
    """(..., T, D) packed motion -> (..., T) inner-lip gap in metres, in the head's own frame (no neck
    rotation: it moves both lips alike). Differentiable."""
    lead = motion.shape[:-1]
    parts = unpack_motion(motion.reshape(-1, motion.shape[-1]), n_expression)
    v = lips(expression=parts["expression"], jaw=parts["jaw"], eyes=parts["eyes"])
    return torch.linalg.norm(v[:, 0] - v[:, 1], dim=-1).reshape(lead)
