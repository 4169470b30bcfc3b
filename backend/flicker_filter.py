"""The filter every take goes through after sampling: it removes one-frame flicker and keeps every lip closure.

A diffusion model sampled in ten steps leaves a little high-frequency noise in its motion. On real speech the
shipped model's lips jumped by more than 4 mm for a single frame about 0.3 times a second, and the mean
|second difference| of the lip opening was twice that of a phones-to-visemes rule. Smoothing in time removes
that, but a plain low-pass also rounds off the short /p b m/ closures an animator checks first. So the takes go
through the project's one closure-keeping smoothing (`smooth_keeping_closures` in thunder_blender/strengths.py,
which the panel's smoothing slider uses too): every channel smoothed with a Gaussian of `sigma` frames (at the
model's 25 fps), the mouth and jaw given back their sampled values around each closure of the lips, and the
blinks left as sampled (a blink is short on purpose, not flicker). The lip gap comes from the head itself here
(LBS on its two inner-lip landmarks).

    motion = filter_takes(motion, head, sigma)    # (K, T, D) packed takes at 25 fps; sigma 0: unchanged

`thunder eval --audio ... --smoothing 0,1.5` prints its effect on real speech.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.audio import MOTION_FPS
from backend.lip_gap import lip_centres, lip_gap
from backend.motion import pack_motion, unpack_motion
from thunder_blender.strengths import smooth_keeping_closures

RAW_PREFIXES = ("eyeBlink",)   # left as sampled


@torch.no_grad()
def lip_gaps(head, motion: np.ndarray) -> np.ndarray:
    """(K, T, D) packed takes -> (K, T) distance between the head's inner-lip centres (backend/lip_gap.py)."""
    motion = np.asarray(motion, dtype=np.float32)
    if len(motion) == 0:
        return np.zeros((0, motion.shape[1] if motion.ndim > 1 else 0))
    return lip_gap(lip_centres(head), torch.from_numpy(motion), head.n_expression).double().numpy()


def filter_takes(motion: np.ndarray, head, sigma: float) -> np.ndarray:
    """The filter (module docstring) on every take of (K, T, D) packed motion at 25 fps for `head`."""
    motion = np.asarray(motion)
    if sigma <= 0 or len(motion) == 0 or motion.shape[1] < 3:
        return motion
    names = list(head.expression_names)
    out = []
    for take, gap in zip(motion, lip_gaps(head, motion)):
        parts = unpack_motion(take.astype(np.float64), head.n_expression)
        smoothed = smooth_keeping_closures(parts, names, sigma, gap, MOTION_FPS, raw_prefixes=RAW_PREFIXES)
        out.append(pack_motion(**smoothed).astype(motion.dtype))
    return np.stack(out)
