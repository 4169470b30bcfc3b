"""Frame rates: the model makes 25 fps motion; a Blender scene may run at 24, 30, 60 or any other rate.

Frame k of a take at `fps` shows the head at exactly k / fps seconds after the start of its audio, whatever
the rate. A take covering `seconds` of audio has ceil(seconds * fps) frames: every frame time that falls
inside the audio (k / fps < seconds), so at 25 fps this is the model's own frame count, ceil(N / 640).

Resampling (the one rule, also for the corpus's conversion and the M2S model's speed augmentation)
interpolates between the two source frames around a frame's time, and holds the last source frame past it:
expression coefficients linearly, the poses (jaw, neck, eyes: axis-angle vectors, three numbers per joint)
along the shortest rotation between them (Slerp). Where a frame time coincides with a source frame (every
frame at 25 fps, every other one at 50, every sixth at 30 ...) the value is that source frame's, exactly.
"""

from __future__ import annotations

import math

import numpy as np

from backend.errors import ThunderError


# The frame rates Thunder makes takes at. Blender scenes run from 1 fps (a slide show) to 240 (slow motion);
# the bound keeps a take's arrays bounded (600 s x 240 fps x 64 takes is 2.4 GB), where --fps 1e9 asked for
# 44.8 GiB.
MIN_FPS, MAX_FPS = 1.0, 240.0


class FrameRateError(ThunderError):
    """A frame rate that is not a number from MIN_FPS to MAX_FPS."""


def check_fps(fps) -> float:
    """`fps` as a float, or FrameRateError when it is not a number from MIN_FPS to MAX_FPS. The one check of
    a frame rate: the edges (the CLI's arguments, the service's requests, Generator.generate) call it, and the
    functions below take the float it returns without checking again."""
    if isinstance(fps, bool):
        raise FrameRateError(f"the frame rate {fps!r} is not a number")
    try:
        value = float(fps)
    except (TypeError, ValueError, OverflowError):
        raise FrameRateError(f"the frame rate {fps!r} is not a number") from None
    if not math.isfinite(value) or not MIN_FPS <= value <= MAX_FPS:
        raise FrameRateError(f"the frame rate must be a number of frames per second from {MIN_FPS:g} to "
                             f"{MAX_FPS:g}, not {value:g}")
    return value


def frames_for_seconds(seconds: float, fps: float) -> int:
    """ceil(seconds * fps): the frames whose time k / fps falls inside `seconds` of audio.

    The product is rounded to 9 decimals first, so that 3.2 s at 25 fps is 80 frames and not 81 because
    3.2 * 25 comes out as 80.00000000000001 in binary floating point."""
    return max(0, math.ceil(round(float(seconds) * fps, 9)))


def frame_positions(n_out: int, from_fps: float, to_fps: float) -> np.ndarray:
    """Where frame k at `to_fps` falls among frames at `from_fps`, in (fractional) frames: k * from / to."""
    # k * from_fps is exact in float64 for any realistic k and an integer rate, so a frame time that
    # coincides with a source frame gives that frame's index exactly.
    return np.arange(n_out, dtype=np.float64) * from_fps / to_fps


ROTATION_PARTS = ("jaw", "neck", "eyes")   # axis-angle vectors, three numbers per joint (backend/motion.py)


def interpolate_rows(values, positions: np.ndarray) -> np.ndarray:
    """Rows of (N, ...) `values` at fractional row `positions` (clamped to 0 .. N - 1), linearly between the two
    rows around each position; the dtype is kept, and a whole position gives its row bit for bit."""
    values = np.asarray(values)
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0, len(values) - 1)
    before = np.floor(positions).astype(np.int64)
    after = np.minimum(before + 1, len(values) - 1)
    weight = (positions - before).reshape(-1, *([1] * (values.ndim - 1)))
    a, b = values[before].astype(np.float64), values[after].astype(np.float64)
    # a + w (b - a) is exactly a where w is 0, so coinciding frames keep their values bit for bit.
    return (a + weight * (b - a)).astype(values.dtype, copy=False)


def interpolate_rotations(rotvecs, positions: np.ndarray) -> np.ndarray:
    """Rows of (N, 3k) axis-angle vectors (k joints) at fractional row `positions` (clamped to 0 .. N - 1):
    each joint turns along the shortest rotation from the row before to the row after (Slerp); the dtype is
    kept, and a whole position gives its row bit for bit."""
    from scipy.spatial.transform import Rotation

    rotvecs = np.asarray(rotvecs)
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0, len(rotvecs) - 1)
    before = np.floor(positions).astype(np.int64)
    after = np.minimum(before + 1, len(rotvecs) - 1)
    weight = positions - before
    out = rotvecs[before].astype(np.float64)
    between = np.flatnonzero(weight > 0)
    if between.size:
        for k in range(0, rotvecs.shape[1], 3):
            first = Rotation.from_rotvec(rotvecs[before[between], k:k + 3].astype(np.float64))
            last = Rotation.from_rotvec(rotvecs[after[between], k:k + 3].astype(np.float64))
            step = (first.inv() * last).as_rotvec() * weight[between, None]
            out[between, k:k + 3] = (first * Rotation.from_rotvec(step)).as_rotvec()
    return out.astype(rotvecs.dtype, copy=False)


def interpolate_motion(parts: dict[str, np.ndarray], positions: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame parameters {name: (T, n)} at fractional frame `positions`: ROTATION_PARTS by Slerp, any other
    part linearly (the module docstring)."""
    return {name: (interpolate_rotations if name in ROTATION_PARTS else interpolate_rows)(value, positions)
            for name, value in parts.items()}


def resample_motion(parts: dict[str, np.ndarray], from_fps: float, to_fps: float,
                    n_out: int) -> dict[str, np.ndarray]:
    """Per-frame parameters {name: (T, n)} at `from_fps` to `n_out` frames at `to_fps` (see the module
    docstring). Every part must have the same T >= 1; the dtypes are kept. The rates are checked ones
    (check_fps)."""
    lengths = {name: int(np.shape(value)[0]) for name, value in parts.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the parts disagree on the number of frames: {lengths}")
    n_in = next(iter(lengths.values()), 0)
    if n_out < 0:
        raise ValueError(f"cannot make {n_out} frames")
    if n_in == 0:
        if n_out:
            raise ValueError("cannot resample a motion with no frames")
        return {name: np.asarray(value) for name, value in parts.items()}
    return interpolate_motion(parts, frame_positions(n_out, from_fps, to_fps))
