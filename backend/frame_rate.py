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


def resample_motion(parts: dict[str, np.ndarray], from_fps: float, to_fps: float,
                    n_out: int) -> dict[str, np.ndarray]:
    """Per-frame parameters {name: (T, n)} at `from_fps` to `n_out` frames at `to_fps` (linear, see the module
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
