"""What every sampled take goes through before it is a take, in `thunder generate`, the service and
`thunder eval` alike, so that what is measured is what an animator gets:

1. the flicker filter (backend/flicker_filter.py): one-frame flicker out, every lip closure kept;
2. blinks at a human rate (backend/blinks.py), unless settings.blinks is "model".

    motion = finish_takes(motion, head, settings, seeds, wave)   # (K, T, D) packed takes at 25 fps

`wave`: the 16 kHz audio the T frames animate (its quiet frames get the added blinks); `imposed_weight`
(T, D), when the sampler kept values: frames whose blink channels are imposed are left alone.
"""

from __future__ import annotations

import numpy as np

from backend.audio import MOTION_FPS, audio_envelope
from backend.blinks import BLINK_EXPRESSIONS, natural_blinks
from backend.flicker_filter import filter_takes
from backend.motion import pack_motion, unpack_motion


def finish_takes(motion: np.ndarray, head, settings, seeds, wave: np.ndarray,
                 imposed_weight: np.ndarray | None = None) -> np.ndarray:
    """The finished takes (module docstring) of (K, T, D) packed motion for `head`, one seed per take."""
    motion = filter_takes(motion, head, settings.smoothing)
    names = list(head.expression_names)
    if settings.blinks != "natural" or len(motion) == 0 or not all(n in names for n in BLINK_EXPRESSIONS):
        return motion
    n_frames = motion.shape[1]
    free = None
    if imposed_weight is not None:
        expression_weight = unpack_motion(np.asarray(imposed_weight), head.n_expression)["expression"]
        free = ~(expression_weight[:, [names.index(n) for n in BLINK_EXPRESSIONS]] > 0).any(axis=1)
    energy = audio_envelope(wave, n_frames)
    out = []
    for take, seed in zip(motion, seeds):
        parts = unpack_motion(take.astype(np.float64), head.n_expression)
        parts["expression"] = natural_blinks(parts["expression"], names, energy, seed, MOTION_FPS, free)
        out.append(pack_motion(**parts).astype(motion.dtype))
    return np.stack(out)
