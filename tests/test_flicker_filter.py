"""The flicker filter (backend/flicker_filter.py, through thunder_blender/strengths.py's closure-keeping
smoothing): one-frame noise goes, every lip closure stays as sampled, blinks stay, smoothing 0 is the raw take,
and `thunder generate` records the amount it used."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.flicker_filter import filter_takes, lip_gaps
from backend.take_sampling import SamplingSettings
from backend.motion import pack_motion, part_slices, unpack_motion
from thunder_blender.strengths import closure_weights, smooth_keeping_closures


def _take(head, n=120, seed=0):
    """A speaking-like take: the jaw opens and closes at 4 Hz, with three short closures (1, 2 and 3 frames
    with the jaw shut and every mouth component at rest), one-frame noise on every channel, and one blink."""
    rng = np.random.default_rng(seed)
    names = list(head.expression_names)
    t = np.arange(n) / 25.0
    expression = np.clip(0.03 * rng.standard_normal((n, len(names))), 0, 1)
    jaw = np.zeros((n, 3))
    jaw[:, 0] = 0.12 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.03 * rng.standard_normal(n)
    for start, length in ((20, 1), (50, 2), (80, 3)):
        jaw[start:start + length, 0] = 0.0
        expression[start:start + length, [i for i, name in enumerate(names) if name.startswith("mouth")]] = 0.0
    blink = names.index("eyeBlinkLeft")
    expression[60:63, blink] = [0.5, 1.0, 0.5]
    return pack_motion(expression=expression, jaw=jaw, neck=np.zeros((n, 3)), eyes=np.zeros((n, 6)))


def test_closures_are_kept_and_the_rest_is_smoothed(head):
    take = _take(head)
    names = list(head.expression_names)
    jaw = part_slices(len(names))["jaw"]
    mouth = [i for i, n in enumerate(names) if n.startswith("mouth")] + list(range(jaw.start, jaw.stop))
    blinks = [i for i, n in enumerate(names) if n.startswith("eyeBlink")]
    gap = lip_gaps(head, take[None])[0]
    closed = closure_weights(gap, 25.0) == 1.0
    assert closed[[20, 50, 80]].all(), np.round(gap * 1000, 1)
    out = filter_takes(take[None], head, 0.7)[0]
    np.testing.assert_allclose(out[np.ix_(closed, mouth)], take[np.ix_(closed, mouth)], atol=1e-6)
    np.testing.assert_array_equal(out[:, blinks], take[:, blinks])
    # Every closure still closes the lips as deeply as sampled.
    new_gap = lip_gaps(head, out[None])[0]
    for start, length in ((20, 1), (50, 2), (80, 3)):
        assert new_gap[start:start + length].min() <= gap[start:start + length].min() + 1e-5
    # Elsewhere the one-frame noise is gone: the second difference of the open frames falls by half or more.
    far = ~np.convolve(closed, np.ones(7), "same").astype(bool)
    d2 = lambda x: np.abs(np.diff(x, 2, axis=0))[far[1:-1]].mean()
    assert d2(out) < 0.5 * d2(take)


def test_smoothing_zero_is_the_raw_take(head):
    take = _take(head)
    np.testing.assert_array_equal(filter_takes(take[None], head, 0.0)[0], take)


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 60), st.floats(0.1, 3.0), st.integers(0, 2**31))
def test_mouth_on_closure_frames_and_raw_components_never_change(n, sigma, seed):
    rng = np.random.default_rng(seed)
    names = ["mouthClose", "mouthFunnel", "browInnerUp", "eyeBlinkLeft"]
    parts = {"expression": rng.standard_normal((n, 4)), "jaw": rng.standard_normal((n, 3)),
             "neck": rng.standard_normal((n, 3)), "eyes": rng.standard_normal((n, 6))}
    gap = np.abs(rng.standard_normal(n)) * (rng.random(n) > 0.3)   # some frames exactly closed
    out = smooth_keeping_closures(parts, names, sigma, gap, 25.0, raw_prefixes=("eyeBlink",))
    closed = closure_weights(gap, 25.0) == 1.0
    np.testing.assert_allclose(out["expression"][closed][:, :2], parts["expression"][closed][:, :2], atol=1e-12)
    np.testing.assert_allclose(out["jaw"][closed], parts["jaw"][closed], atol=1e-12)
    np.testing.assert_array_equal(out["expression"][:, 3], parts["expression"][:, 3])
    assert all(np.isfinite(v).all() and v.shape == parts[k].shape for k, v in out.items())


def test_generate_applies_it_and_records_it(tiny_model, tmp_path):
    from backend.generate import Generator
    from generation_fixtures import write_speech

    speech_file = write_speech(tmp_path / "speech.wav", 3.0)
    generator = Generator(tiny_model, device="cpu")
    raw = generator.generate(speech_file, takes=1, seed=3, settings={"smoothing": 0.0})[0]
    smooth = generator.generate(speech_file, takes=1, seed=3)[0]
    default = SamplingSettings().smoothing
    assert raw.settings["smoothing"] == 0.0 and smooth.settings["smoothing"] == pytest.approx(default)
    n_expression = raw.expression.shape[1]
    packed = pack_motion(raw.expression, raw.jaw, raw.neck, raw.eyes)
    expected = filter_takes(packed[None], generator.takes_head, default)[0]
    got = pack_motion(smooth.expression, smooth.jaw, smooth.neck, smooth.eyes)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert set(unpack_motion(got, n_expression)) == {"expression", "jaw", "neck", "eyes"}
