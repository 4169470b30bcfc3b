"""Strengths (thunder_blender/strengths.py, numpy alone): per-region scaling that 1 undoes exactly, and a
smoothing that never filters a /p b m/ closure away, proved on a take with quick closures against the
backend's own LBS (the truth the add-on's lip gap approximates)."""

import numpy as np
import pytest
import torch

from thunder_blender import strengths
from thunder_blender.strengths import LipGeometry, apply_strengths, lip_gap

FPS = 25.0
CLOSURES = (14, 31, 47, 66, 83)   # frames where the lips meet for one frame, as a /p b m/ does at 25 fps


def lip_geometry(head) -> LipGeometry:
    """The built-in head's LipGeometry from its data, as head_build.head_lip_geometry reads it from the mesh."""
    data, landmarks = head.data, head.landmarks
    centres = [landmarks["upper_lip_center"], landmarks["lower_lip_center"]]
    jaw_joint = (data.joint_regressor @ data.v_template)[2]
    return LipGeometry(data.v_template[centres].astype(np.float64), data.exprdirs[centres].astype(np.float64),
                       jaw_joint.astype(np.float64), float(data.weights[centres[1], 2]))


def take_with_closures(head, frames: int = 100, seed: int = 0) -> dict:
    """Speech-like motion: the jaw mostly open and moving, dipping shut on single frames (CLOSURES), brows,
    lids and the neck wandering, some mouth shapes on top."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    jaw = np.zeros((frames, 3))
    jaw[:, 0] = 0.12 + 0.05 * np.sin(2 * np.pi * 3.1 * t) + 0.01 * rng.standard_normal(frames)
    for c in CLOSURES:
        jaw[c, 0] = 0.0
        jaw[[c - 1, c + 1], 0] = 0.04
    expression = 0.15 * rng.standard_normal((frames, head.n_expression))
    names = head.expression_names
    mouth_shut = [k for k, name in enumerate(names) if name.startswith("mouth")]
    expression[np.ix_(list(CLOSURES), mouth_shut)] = 0.0   # closed frames: lips together, no mouth shape
    neck = 0.05 * np.cumsum(rng.standard_normal((frames, 3)), axis=0) / np.sqrt(frames)
    eyes = 0.02 * rng.standard_normal((frames, 6))
    return {"expression": expression, "jaw": jaw, "neck": neck, "eyes": eyes}


def true_gap(head, parts) -> np.ndarray:
    """The inner-lip distance of the posed mesh (backend LBS), (T,) metres."""
    landmarks = head.landmarks
    with torch.no_grad():
        v = head(**{k: torch.as_tensor(np.asarray(p), dtype=torch.float32) for k, p in parts.items()}).numpy()
    return np.linalg.norm(v[:, landmarks["upper_lip_center"]] - v[:, landmarks["lower_lip_center"]], axis=-1)


def roughness(values: np.ndarray) -> float:
    return float(np.abs(np.diff(values, n=2, axis=0)).mean())


def test_the_add_ons_lip_gap_matches_the_posed_mesh(head):
    parts = take_with_closures(head)
    approx = lip_gap(parts["expression"], parts["jaw"], lip_geometry(head))
    truth = true_gap(head, parts)
    assert np.abs(approx - truth).max() < 0.5e-3   # half a millimetre on a gap of up to ~20 mm
    assert np.corrcoef(approx, truth)[0, 1] > 0.99


def test_strengths_of_one_leave_the_take_exactly_and_scale_only_their_region(head):
    parts = take_with_closures(head)
    names = head.expression_names
    same = apply_strengths(parts, names, {r: 1.0 for r in strengths.REGIONS} | {"smoothing": 0.0}, FPS)
    assert all(np.array_equal(same[k], parts[k]) for k in parts)

    changed = apply_strengths(parts, names, {"brows": 0.0, "head_motion": 0.5, "lips_jaw": 1.5}, FPS)
    brows = strengths.region_mask(names, "brows")
    mouth = strengths.region_mask(names, "lips_jaw")
    assert brows.sum() == 5 and mouth.sum() == 23   # the built-in head's ARKit names
    assert np.all(changed["expression"][:, brows] == 0)
    np.testing.assert_allclose(changed["expression"][:, mouth], 1.5 * parts["expression"][:, mouth])
    untouched = ~(brows | mouth)
    assert np.array_equal(changed["expression"][:, untouched], parts["expression"][:, untouched])
    np.testing.assert_allclose(changed["neck"], 0.5 * parts["neck"])
    np.testing.assert_allclose(changed["jaw"], 1.5 * parts["jaw"])
    assert np.array_equal(changed["eyes"], parts["eyes"])   # gaze is no strength's


def test_smoothing_keeps_every_closure_that_plain_smoothing_removes(head):
    parts = take_with_closures(head)
    names, lips = head.expression_names, lip_geometry(head)
    raw_gap = true_gap(head, parts)
    threshold = 0.1 * np.percentile(raw_gap, 95)   # the project's closure rule (training/metrics.py)
    closures = list(CLOSURES)
    assert np.all(raw_gap[closures] < threshold)

    # A plain Gaussian of the same width opens every one of them: the test would catch a filter that forgot.
    sigma = strengths.SMOOTHING_MAX_SECONDS * FPS
    plain = {k: strengths.gaussian_smooth(v, sigma) for k, v in parts.items()}
    assert np.all(true_gap(head, plain)[closures] > 2 * threshold)

    smoothed = apply_strengths(parts, names, {"smoothing": 1.0}, FPS, lips)
    assert np.all(true_gap(head, smoothed)[closures] < threshold)
    # ... and it does smooth: the neck, brows and lids are less jerky, and the mouth is between frames.
    assert roughness(smoothed["neck"]) < 0.5 * roughness(parts["neck"])
    brows = strengths.region_mask(names, "brows")
    assert roughness(smoothed["expression"][:, brows]) < 0.5 * roughness(parts["expression"][:, brows])
    between = [f for f in range(5, 95) if min(abs(f - c) for c in CLOSURES) > 3]
    assert roughness(smoothed["jaw"][between]) < 0.5 * roughness(parts["jaw"][between])


def test_smoothing_without_the_lips_is_refused(head):
    parts = take_with_closures(head)
    with pytest.raises(ValueError, match="lip landmarks"):
        apply_strengths(parts, head.expression_names, {"smoothing": 0.5}, FPS, None)
