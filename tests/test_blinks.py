"""Blinks at a human rate in every take (backend/blinks.py) and their place after sampling (backend/finishing.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.blinks import (BLINK_RATE_PER_MINUTE, MAX_PER_MINUTE, blink_signal, blink_spans, count_blinks,
                            natural_blinks, random_blink, take_blink_rate)

NAMES = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp"]
FPS = 25.0


def expression_with_blinks(n: int, peaks_s=(), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.05 * rng.random((n, len(NAMES)))
    t = np.arange(n) / FPS
    for peak in peaks_s:
        b = random_blink(rng, t, peak)
        x[:, 1] = np.maximum(x[:, 1], b)
        x[:, 2] = np.maximum(x[:, 2], b)
    return x


def rate(expression) -> float:
    return count_blinks(blink_signal(expression, NAMES)) / (len(expression) / FPS / 60)


def test_a_staring_take_gets_its_seeds_rate_and_the_same_blinks_again():
    n = int(60 * FPS)
    staring = expression_with_blinks(n)
    energy = np.ones(n)
    for seed in range(6):
        out = natural_blinks(staring, NAMES, energy, seed, FPS)
        low, high = BLINK_RATE_PER_MINUTE
        assert low - 1 <= rate(out) <= high + 1, (seed, rate(out))
        assert abs(rate(out) - take_blink_rate(seed)) <= 1.0
        np.testing.assert_array_equal(out, natural_blinks(staring, NAMES, energy, seed, FPS))
        # only the lids move, and only by closing
        np.testing.assert_array_equal(out[:, [0, 3]], staring[:, [0, 3]])
        assert (out[:, 1:3] >= staring[:, 1:3]).all()
    rates = [take_blink_rate(seed) for seed in range(20)]
    assert np.ptp(rates) > 5.0   # takes differ


def test_the_models_own_blinks_are_kept_where_it_made_them_and_made_human_wide():
    n = int(30 * FPS)
    peaks = [50, 237, 425, 600]   # frames: 8 a minute, too few for any seed, so some are added
    take = expression_with_blinks(n)
    take[peaks, 1:3] = 1.0        # the model's kind: shut for one frame
    out = natural_blinks(take, NAMES, np.ones(n), 3, FPS)
    signal = blink_signal(out, NAMES)
    assert (out[:, 1:3] >= take[:, 1:3]).all()
    for p in peaks:
        assert signal[p] > 0.9
        assert np.count_nonzero(signal[p - 6:p + 7] > 0.5) >= 3   # 120 ms or more, as people blink
    assert count_blinks(signal) > len(peaks)


def test_added_blinks_fall_in_the_pauses():
    n = int(60 * FPS)
    energy = np.ones(n)
    pauses = [(int(s * FPS), int(s * FPS) + 12) for s in np.arange(2.0, 58.0, 2.5)]
    for lo, hi in pauses:
        energy[lo:hi] = 0.0
    out = natural_blinks(expression_with_blinks(n), NAMES, energy, 1, FPS)
    spans = blink_spans(blink_signal(out, NAMES))
    peaks = [s + int(np.argmax(blink_signal(out, NAMES)[s:e])) for s, e in spans]
    in_pause = [any(lo <= p < hi for lo, hi in pauses) for p in peaks]
    assert len(peaks) >= 10 and np.mean(in_pause) >= 0.8   # pauses are 19% of the frames


def test_a_take_that_blinks_too_often_is_thinned_to_the_most_a_person_does():
    n = int(20 * FPS)
    take = expression_with_blinks(n, np.arange(0.5, 19.5, 0.9))   # 66 a minute
    out = natural_blinks(take, NAMES, np.ones(n), 0, FPS)
    assert rate(take) > 60 and rate(out) <= MAX_PER_MINUTE
    assert np.isfinite(out).all() and out.min() >= take.min() - 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 400), st.integers(0, 2**31), st.floats(0.0, 1.0))
def test_imposed_frames_and_other_channels_stay_bit_for_bit(n, seed, imposed_share):
    rng = np.random.default_rng(seed)
    take = rng.random((n, len(NAMES)))
    free = rng.random(n) >= imposed_share
    out = natural_blinks(take, NAMES, rng.random(n), seed, FPS, free)
    np.testing.assert_array_equal(out[~free], take[~free])
    np.testing.assert_array_equal(out[:, [0, 3]], take[:, [0, 3]])
    assert out.shape == take.shape and np.isfinite(out).all()


def test_a_head_without_eyelid_expressions_is_left_alone():
    take = np.random.default_rng(0).random((100, 3))
    np.testing.assert_array_equal(natural_blinks(take, ["a", "b", "c"], np.ones(100), 0, FPS), take)


def test_a_blink_span_runs_from_the_lids_starting_to_close_to_their_rest():
    t = np.arange(50) / FPS
    signal = 0.1 + 0.9 * random_blink(np.random.default_rng(0), t, 1.0)
    (start, end), = blink_spans(signal)
    assert signal[start] == pytest.approx(0.1) and signal[end - 1] == pytest.approx(0.1)
    assert signal[start + 1] > 0.1 and signal[end - 2] > 0.1
    assert blink_spans(np.r_[np.ones(5), np.zeros(5)]) == [(0, 6)]   # starts shut: a blink, to where the lids rest


def test_generate_blinks_naturally_by_default_and_as_the_model_did_when_asked(tiny_model, tmp_path):
    from backend.generate import Generator
    from generation_fixtures import write_speech

    speech_file = write_speech(tmp_path / "speech.wav", 20.0)
    generator = Generator(tiny_model, device="cpu")
    names = generator.takes_head.expression_names
    model_blinks = generator.generate(speech_file, takes=2, seed=5, settings={"blinks": "model"})
    natural = generator.generate(speech_file, takes=2, seed=5)
    assert [t.settings["blinks"] for t in natural] == ["natural", "natural"]
    for raw, take in zip(model_blinks, natural):
        lids = [names.index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight")]
        others = [k for k in range(len(names)) if k not in lids]
        np.testing.assert_allclose(take.expression[:, others], raw.expression[:, others], atol=1e-6)
        np.testing.assert_allclose(take.jaw, raw.jaw, atol=1e-6)
        minutes = take.n_frames / take.fps / 60
        assert count_blinks(blink_signal(take.expression, names)) / minutes <= MAX_PER_MINUTE + 1e-9
        assert count_blinks(blink_signal(take.expression, names)) >= int(take_blink_rate(take.seed) * minutes) - 1


def test_eyes_held_open_get_no_added_blink(tiny_model, tmp_path):
    from backend.generate import Generator
    from generation_fixtures import write_speech

    speech_file = write_speech(tmp_path / "speech.wav", 12.0)
    generator = Generator(tiny_model, device="cpu")
    names = generator.takes_head.expression_names
    held = generator.generate(speech_file, takes=2, seed=1,
                              constraints=[{"kind": "hold", "pose": "eyes_open", "start": 0, "end": 300}])
    for take in held:
        assert count_blinks(blink_signal(take.expression, names)) == 0


def test_unknown_blinks_setting_is_refused_in_a_sentence():
    from backend.take_sampling import SamplingError, SamplingSettings

    with pytest.raises(SamplingError, match="unknown blinks 'often'; choose natural or model"):
        SamplingSettings(blinks="often").check(["neutral"])
