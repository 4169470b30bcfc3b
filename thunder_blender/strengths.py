"""Strengths: a take's motion scaled per face region and smoothed in time, in numpy alone (pure functions).

The animator sets them on a take after sampling (the panel's sliders, api.set_strengths); the take's action is
keyed again from its file with them, so they change without sampling again, 1 everywhere and smoothing 0 give
the take exactly as sampled, and export (which bakes the action) uses them.

    parts = apply_strengths(take_parts, expression_names, strengths, fps, lips)

Regions, by the built-in head's ARKit names (a FLAME head's exp000... match none, so there only lips/jaw
(through the jaw) and head motion apply):
- lips_jaw: every mouth* component and the jaw rotation
- brows: brow*;  blinks: eyeBlink*, eyeSquint*, eyeWide* (the lids);  cheeks_nose: cheek*, nose*
- head_motion: the neck rotation (the head's motion on the neck)
A strength s multiplies a component's value (a rotation's angle) by s: 0 holds the rest pose, 1 is the take,
2 doubles it.

Smoothing (0..1) filters every channel in time with a Gaussian of up to SMOOTHING_MAX_SECONDS standard
deviation, except where it would open a closed mouth: frames where the unsmoothed lip gap is at a local
minimum and below CLOSURE_FRACTION of the take's 95th-percentile gap (the project's /p b m/ closure rule
uses 10%) get their unsmoothed mouth and jaw back, blended into the smoothed neighbours over
CLOSURE_BLEND_SECONDS, so a /p b m/ closure is never filtered away (tests/test_strengths.py proves it on
takes with closures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import rig_math

REGIONS = ("lips_jaw", "brows", "blinks", "cheeks_nose", "head_motion")
REGION_PREFIXES = {"lips_jaw": ("mouth",), "brows": ("brow",), "blinks": ("eyeBlink", "eyeSquint", "eyeWide"),
                   "cheeks_nose": ("cheek", "nose")}
STRENGTH_RANGE = (0.0, 2.0)
SMOOTHING_MAX_SECONDS = 0.08   # the Gaussian's standard deviation at smoothing 1 (2 frames at 25 fps)
CLOSURE_FRACTION = 0.2
CLOSURE_BLEND_SECONDS = 0.08


@dataclass(frozen=True)
class LipGeometry:
    """What the lip gap of a head needs: the inner-lip centre landmarks at rest (2, 3), how the expression
    components move them (2, 3, E), the jaw joint (3,) and the lower lip's jaw skinning weight."""

    rest: np.ndarray
    basis: np.ndarray
    jaw_joint: np.ndarray
    lower_jaw_weight: float


def is_identity(strengths: dict) -> bool:
    """Whether `strengths` leave a take exactly as sampled."""
    return all(float(strengths.get(region, 1.0)) == 1.0 for region in REGIONS) \
        and float(strengths.get("smoothing", 0.0)) == 0.0


def region_mask(expression_names, region: str) -> np.ndarray:
    """(E,) bool: the expression components of `region`."""
    prefixes = REGION_PREFIXES.get(region, ())
    return np.array([any(name.startswith(p) for p in prefixes) for name in expression_names], dtype=bool)


def lip_gap(expression: np.ndarray, jaw: np.ndarray, lips: LipGeometry) -> np.ndarray:
    """(T,) distance between the inner-lip centres, in the head's unit: the landmarks moved by the
    expression, the lower one turned about the jaw joint by the jaw rotation (its skinning weight's share).
    Neck and eye rotations move both lips alike and the pose correctives are small: both are left out."""
    moved = lips.rest[None] + np.einsum("lce,te->tlc", lips.basis, expression)
    upper, lower = moved[:, 0], moved[:, 1]
    turned = lips.jaw_joint + np.einsum("trc,tc->tr", rig_math.axis_angle_to_matrix(jaw), lower - lips.jaw_joint)
    lower = (1.0 - lips.lower_jaw_weight) * lower + lips.lower_jaw_weight * turned
    return np.linalg.norm(upper - lower, axis=-1)


def closure_weights(gap: np.ndarray, fps: float) -> np.ndarray:
    """(T,) in [0, 1]: 1 on closure frames (a local minimum of the gap below CLOSURE_FRACTION of its 95th
    percentile), falling linearly to 0 over CLOSURE_BLEND_SECONDS on each side."""
    frames = len(gap)
    if frames < 2:
        return np.ones(frames)
    threshold = CLOSURE_FRACTION * np.percentile(gap, 95)
    padded = np.concatenate([[np.inf], gap, [np.inf]])
    closed = (gap <= padded[:-2]) & (gap <= padded[2:]) & (gap <= threshold)
    reach = max(1, int(round(CLOSURE_BLEND_SECONDS * fps)))
    distance = np.full(frames, np.inf)
    for index in np.flatnonzero(closed):
        distance = np.minimum(distance, np.abs(np.arange(frames) - index))
    return np.clip(1.0 - distance / (reach + 1), 0.0, 1.0)


def gaussian_smooth(values: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Each column of (T, C) filtered in time by a normalised Gaussian of `sigma_frames`; the ends are
    extended by their edge values, so a held pose stays held."""
    if sigma_frames <= 0 or len(values) < 2:
        return values.copy()
    radius = max(1, int(math.ceil(3 * sigma_frames)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_frames) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(values[:1], radius, 0), values, np.repeat(values[-1:], radius, 0)])
    out = np.zeros_like(values, dtype=np.float64)
    for k, weight in enumerate(kernel):
        out += weight * padded[k: k + len(values)]
    return out


def apply_strengths(parts: dict, expression_names, strengths: dict, fps: float,
                    lips: LipGeometry | None = None) -> dict:
    """A take's parts ({expression (T, E), jaw, neck, eyes}) with `strengths` ({region: s, "smoothing": 0..1})
    applied; new arrays, float64. Smoothing needs the head's `lips` (to keep closures); without them it is
    refused (ValueError), as a smoothing that could open a /p b m/ closure is worse than none."""
    out = {name: np.array(value, dtype=np.float64) for name, value in parts.items()}
    if is_identity(strengths):
        return out
    scale = np.ones(out["expression"].shape[1])
    for region in REGION_PREFIXES:
        scale[region_mask(expression_names, region)] = float(strengths.get(region, 1.0))
    out["expression"] *= scale
    out["jaw"] *= float(strengths.get("lips_jaw", 1.0))
    out["neck"] *= float(strengths.get("head_motion", 1.0))
    smoothing = float(strengths.get("smoothing", 0.0))
    if smoothing > 0:
        if lips is None:
            raise ValueError("smoothing needs the head's lip landmarks")
        gap = lip_gap(out["expression"], out["jaw"], lips)
        out = smooth_keeping_closures(out, expression_names, smoothing * SMOOTHING_MAX_SECONDS * fps, gap, fps)
    return out


def smooth_keeping_closures(parts: dict, expression_names, sigma_frames: float, gap: np.ndarray, fps: float,
                            raw_prefixes: tuple = ()) -> dict:
    """The parts ({expression (T, E), jaw, neck, eyes}) smoothed in time by a Gaussian of `sigma_frames`,
    except that on closure frames (`closure_weights` of the unsmoothed lip `gap`) the mouth's components and
    the jaw get their unsmoothed values back, so no /p b m/ closure is filtered away; the expression
    components named with `raw_prefixes` stay unsmoothed throughout (the backend's flicker filter keeps blinks
    so: a blink is short on purpose). New float64 arrays. The one closure-keeping smoothing of the project:
    the panel's smoothing slider and the backend's filter after sampling (backend/flicker_filter.py)."""
    parts = {name: np.asarray(value, dtype=np.float64) for name, value in parts.items()}
    smoothed = {name: gaussian_smooth(value, sigma_frames) for name, value in parts.items()}
    keep = closure_weights(gap, fps)[:, None]
    mouth = region_mask(expression_names, "lips_jaw")
    if not mouth.any():   # a head without ARKit names: which components close the lips is unknown
        mouth[:] = True
    for name in ("expression", "jaw"):
        restored = smoothed[name] + keep * (parts[name] - smoothed[name])
        if name == "expression":   # only the mouth's components come back; brows, lids... stay smoothed
            restored = np.where(mouth[None], restored, smoothed[name])
        smoothed[name] = restored
    raw = np.array([name.startswith(tuple(raw_prefixes)) for name in expression_names], dtype=bool) \
        if raw_prefixes else np.zeros(len(expression_names), dtype=bool)
    smoothed["expression"] = np.where(raw[None], parts["expression"], smoothed["expression"])
    return smoothed
