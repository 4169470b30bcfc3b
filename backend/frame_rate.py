"""Frame rates: the model makes 25 fps motion; a Blender scene may run at 24, 30, 60 or any other rate.

Frame k of a take at `fps` shows the head at exactly k / fps seconds after the start of its audio, whatever
the rate. A take covering `seconds` of audio has ceil(seconds * fps) frames: every frame time that falls
inside the audio (k / fps < seconds), so at 25 fps this is the model's own frame count, ceil(N / 640).

Resampling interpolates each parameter linearly between the two model frames around a frame's time, and
holds the last model frame past it. Where a frame time coincides with a model frame (every frame at 25
fps, every other one at 50, every sixth at 30 ...) the value is that model frame's, exactly. The poses are
axis-angle vectors; talking-head rotations are small and smooth from frame to frame, so interpolating their
components is indistinguishable from interpolating rotations.
"""

from __future__ import annotations

import math

import numpy as np

from backend.errors import ThunderError


class FrameRateError(ThunderError):
    """A frame rate that is zero, negative or not a number."""


def check_fps(fps) -> float:
    """`fps` as a float, or FrameRateError when it is not a positive finite number."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise FrameRateError(f"the frame rate {fps!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise FrameRateError(f"the frame rate must be a positive number of frames per second, not {value:g}")
    return value


def frames_for_seconds(seconds: float, fps: float) -> int:
    """ceil(seconds * fps): the frames whose time k / fps falls inside `seconds` of audio.

    The product is rounded to 9 decimals first, so that 3.2 s at 25 fps is 80 frames and not 81 because
    3.2 * 25 comes out as 80.00000000000001 in binary floating point."""
    fps = check_fps(fps)
    return max(0, math.ceil(round(float(seconds) * fps, 9)))


def frame_positions(n_out: int, from_fps: float, to_fps: float) -> np.ndarray:
    """Where frame k at `to_fps` falls among frames at `from_fps`, in (fractional) frames: k * from / to."""
    from_fps, to_fps = check_fps(from_fps), check_fps(to_fps)
    # k * from_fps is exact in float64 for any realistic k and an integer rate, so a frame time that
    # coincides with a source frame gives that frame's index exactly.
    return np.arange(n_out, dtype=np.float64) * from_fps / to_fps


def resample_motion(parts: dict[str, np.ndarray], from_fps: float, to_fps: float,
                    n_out: int) -> dict[str, np.ndarray]:
    """Per-frame parameters {name: (T, n)} at `from_fps` to `n_out` frames at `to_fps` (linear, see the module
    docstring). Every part must have the same T >= 1; the dtypes are kept."""
    from_fps, to_fps = check_fps(from_fps), check_fps(to_fps)
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

    positions = np.minimum(frame_positions(n_out, from_fps, to_fps), n_in - 1)
    before = np.floor(positions).astype(np.int64)
    after = np.minimum(before + 1, n_in - 1)
    weight = (positions - before)[:, None]
    out = {}
    for name, value in parts.items():
        value = np.asarray(value)
        a, b = value[before].astype(np.float64), value[after].astype(np.float64)
        # a + w (b - a) is exactly a where w is 0, so coinciding frames keep their values bit for bit.
        out[name] = (a + weight * (b - a)).astype(value.dtype, copy=False)
    return out
