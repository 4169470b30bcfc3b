"""The reference metrics of training.metrics on tiny arrays with known answers, and the vertex sets they use
on the built-in head (the upper face without the skin hidden behind the eyeballs)."""

import dataclasses

import numpy as np
import pytest
import torch

from backend.builtin_head import build
from backend.head import Head
from training.metrics import (
    correlations,
    head_motion_spread,
    lip_sync_correlations,
    lip_vertex_error,
    metric_vertex_sets,
    take_spread,
    upper_face_dynamics_deviation,
)

RNG = np.random.default_rng(0)


def blink_displacement(head) -> np.ndarray:
    """(V,) how far each vertex moves from rest to both eyes fully closed (eyeBlinkLeft/Right = 1)."""
    expression = torch.zeros(2, head.n_expression)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        expression[1, head.expression_names.index(name)] = 1.0
    v = head(expression=expression).detach().numpy().astype(np.float64)
    return np.linalg.norm(v[1] - v[0], axis=-1)


# --- LVE ---------------------------------------------------------------------------------------------------

def test_lve_of_a_constant_offset_is_the_offset_in_mm():
    ref = RNG.normal(size=(5, 8, 3)) * 0.01
    pred = ref + np.array([0.003, -0.004, 0.0])  # 5 mm
    assert lip_vertex_error(pred, ref, np.arange(8)) == pytest.approx(5.0)
    assert lip_vertex_error(torch.from_numpy(pred), torch.from_numpy(ref), [0, 3]) == pytest.approx(5.0)


def test_lve_takes_the_worst_lip_vertex_of_each_frame_and_ignores_other_vertices():
    ref = np.zeros((2, 4, 3))
    pred = ref.copy()
    pred[0, 1, 0] = 0.002  # frame 0: one lip vertex 2 mm off, the others exact
    pred[1, :3, 1] = 0.004  # frame 1: all lip vertices 4 mm off
    pred[:, 3, 2] = 0.5  # vertex 3 is no lip vertex
    assert lip_vertex_error(pred, ref, [0, 1, 2]) == pytest.approx(0.5 * (2.0 + 4.0))


# --- PCC / CCC ---------------------------------------------------------------------------------------------

def test_correlations_of_identical_signals_are_one_and_ccc_punishes_scale():
    a = np.sin(np.linspace(0, 6, 50))
    assert correlations(a, a) == pytest.approx((1.0, 1.0))
    pcc, ccc = correlations(a, 0.5 * a)
    assert pcc == pytest.approx(1.0)
    # Known answer for b = s a (zero-mean a): CCC = 2 s var / (var + s^2 var + (1 - s)^2 mean^2).
    s, mean, var = 0.5, a.mean(), a.var()
    assert ccc == pytest.approx(2 * s * var / (var + s * s * var + (1 - s) ** 2 * mean**2))
    assert ccc < pcc
    assert correlations(a, -a)[0] == pytest.approx(-1.0)


def test_constant_signals_give_nan_not_a_crash():
    a, flat = np.linspace(0, 1, 10), np.full(10, 0.3)
    pcc, ccc = correlations(a, flat)
    assert np.isnan(pcc) and ccc == 0.0  # a frozen mouth scores 0 in CCC, it does not drop out as NaN
    assert all(np.isnan(correlations(flat, flat)))


def test_lip_sync_correlations_use_the_lip_distance(head):
    lm = head.landmarks
    opening = np.abs(np.sin(np.linspace(0, 5, 20)))
    ref = np.zeros((20, head.n_vertices, 3))
    ref[:, lm["lower_lip_center"], 1] = -0.01 * opening
    pred = ref.copy()
    pred[:, lm["lower_lip_center"], 1] *= 0.5
    pcc, ccc = lip_sync_correlations(pred, ref, lm)
    assert pcc == pytest.approx(1.0) and ccc < 0.9


# --- spread across takes ------------------------------------------------------------------------------------

def test_take_spread_known_answers():
    take = RNG.normal(size=(6, 5, 3)) * 0.01
    assert take_spread(np.stack([take, take, take]), np.arange(5)) == 0.0
    shifted = take + np.array([0.0, 0.0, 0.002])
    # Pairs (a, a), (a, a+2mm), (a, a+2mm): mean 4/3 mm.
    assert take_spread(np.stack([take, take, shifted]), [1, 2]) == pytest.approx(4.0 / 3.0)
    assert take_spread(torch.from_numpy(np.stack([take, shifted])), [0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        take_spread(take[None], [0])


def test_take_spread_sees_only_the_vertex_set_it_is_given(head):
    sets = metric_vertex_sets(head)
    rest = head.data.v_template.astype(np.float64)
    moved = np.repeat(rest[None], 3, axis=0)
    moved[:, sets["upper_face"], 0] += 0.001  # the upper face 1 mm to the side, the lips still
    takes = np.stack([np.repeat(rest[None], 3, axis=0), moved])
    assert take_spread(takes, sets["upper_face"]) == pytest.approx(1.0)
    assert take_spread(takes, sets["lips"]) == pytest.approx(0.0)


# --- FDD ---------------------------------------------------------------------------------------------------

def test_fdd_known_answers():
    rest = RNG.normal(size=(4, 3)) * 0.05
    on_off = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # population std 0.5

    def clip(amplitude_m):
        return rest[None] + amplitude_m * on_off[:, None, None] * np.array([0.0, 1.0, 0.0])

    ref = clip(0.004)  # every vertex's displacement norm alternates 0 / 4 mm: std 2 mm
    assert upper_face_dynamics_deviation(ref, ref, np.arange(4), rest) == 0.0
    assert upper_face_dynamics_deviation(clip(0.001), ref, np.arange(4), rest) == pytest.approx(1.5)
    assert upper_face_dynamics_deviation(clip(0.010), ref, [2], rest) == pytest.approx(3.0)
    # The rest is the template, not the first frame: a clip that only holds a blink-like offset has no FDD
    # against a still reference, whatever frame it starts on.
    still = np.repeat(rest[None] + 0.003, 5, axis=0)
    assert upper_face_dynamics_deviation(still, rest[None].repeat(7, 0), np.arange(4), rest) == 0.0


# --- the vertex sets the metrics use -------------------------------------------------------------------------

def test_upper_face_drops_the_skin_hidden_behind_the_eyeballs(head):
    sets = metric_vertex_sets(head)
    upper = head.vertex_sets["upper_face"]
    kept = sets["upper_face"]
    dropped = np.setdiff1d(upper, kept)
    assert set(kept.tolist()) <= set(upper.tolist())
    assert 0 < len(dropped) < 0.2 * len(upper)
    assert np.array_equal(sets["lips"], np.sort(head.vertex_sets["lips"]))

    # A blink moves no kept vertex further than the visible upper lid travels (the generator closes the
    # aperture at LID_CLOSE_LINE of its height), but it moves some of the dropped, hidden skin further.
    lid_travel = (build.EYE_OPEN_TOP + build.EYE_OPEN_BOTTOM) * build.LID_CLOSE_LINE
    moved = blink_displacement(head)
    assert moved[kept].max() < lid_travel
    assert moved[dropped].max() > lid_travel + 0.002


def test_the_dropped_skin_is_hidden_by_the_eyeball_mesh_from_the_front(head):
    """Checked against the eyeball triangles themselves, not the sphere the rule uses: a ray from each
    dropped vertex towards the viewer (+z) hits an eyeball."""
    sets = metric_vertex_sets(head)
    dropped = np.setdiff1d(head.vertex_sets["upper_face"], sets["upper_face"])
    v = head.data.v_template.astype(np.float64)
    eyes = np.zeros(len(v), dtype=bool)
    eyes[head.vertex_sets["eyes"]] = True
    faces = head.data.faces[eyes[head.data.faces].all(axis=1)]
    a, b, c = (v[faces[:, k]] for k in range(3))  # (F, 3)
    origin = v[dropped][:, None, :]  # (N, 1, 3)
    # Moller-Trumbore for the direction (0, 0, 1): the ray hits where barycentrics are in [0, 1].
    e1, e2 = b - a, c - a
    p = np.cross(np.array([0.0, 0.0, 1.0]), e2)
    det = np.einsum("fk,fk->f", e1, p)
    s = origin - a
    u = np.einsum("nfk,fk->nf", s, p) / det
    q = np.cross(s, e1)
    w = q[..., 2] / det
    t = np.einsum("nfk,fk->nf", q, e2) / det
    hit = (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
    assert hit.any(axis=1).all()


def test_a_head_lacking_sets_falls_back_to_those_it_has(head):
    data = head.data
    kept = {k: v for k, v in data.vertex_sets.items()
            if k not in ("lips", "upper_face", "eyes", "eye_left", "eye_right")}
    reduced = Head(dataclasses.replace(data, vertex_sets=kept))
    sets = metric_vertex_sets(reduced)
    assert np.array_equal(sets["lips"], np.union1d(data.vertex_sets["lips_upper"], data.vertex_sets["lips_lower"]))
    # The face stands in for the upper face; the eyeballs come from the skinning weights and still hide the
    # same skin.
    full = metric_vertex_sets(head)
    dropped = np.setdiff1d(data.vertex_sets["upper_face"], full["upper_face"])
    assert set(full["upper_face"].tolist()) <= set(sets["upper_face"].tolist())
    assert not set(dropped.tolist()) & set(sets["upper_face"].tolist())


def test_head_motion_spread_is_the_mean_neck_angle_between_takes():
    from backend.motion import motion_dim

    takes = np.zeros((3, 10, motion_dim(4)))
    takes[1, :, 4 + 3 + 1] = np.radians(6.0)  # take 2 turns its head 6 degrees about y; takes 1 and 3 do not
    # pairs (1,2) and (2,3) differ by 6 degrees, (1,3) by 0
    assert head_motion_spread(takes, 4) == pytest.approx(4.0)
    assert np.isnan(head_motion_spread(takes[:1], 4))


# ------------------------------------------------------------------------------------- real-speech figures
def test_a_closure_one_frame_outside_its_segment_counts_only_with_the_margin():
    from training.metrics import bilabial_closures

    distance = np.full(20, 0.010)  # 10 mm open everywhere ...
    distance[12] = 0.0             # ... shut on frame 12 only
    phones = [("AA", 0.0, 0.36), ("M", 0.36, 0.48), ("AA", 0.48, 0.8)]  # /m/ holds frames 9, 10, 11
    assert bilabial_closures(distance, phones).tolist() == [False]
    assert bilabial_closures(distance, phones, margin_frames=1).tolist() == [True]
    distance[12], distance[13] = 0.010, 0.0  # two frames after the segment: missed even with the margin
    assert bilabial_closures(distance, phones, margin_frames=1).tolist() == [False]


def test_an_open_vowel_that_never_opens_past_two_mm_is_counted_and_other_vowels_are_not():
    from training.metrics import OPEN_VOWELS, open_vowels_never_open

    distance = np.full(30, 0.0015)   # 1.5 mm
    distance[20:25] = 0.006          # the second AA opens to 6 mm
    phones = [("M", 0.0, 0.2), ("AA1", 0.2, 0.4), ("IY", 0.4, 0.8), ("AA", 0.8, 1.0), ("AE", 1.0, 1.2)]
    assert open_vowels_never_open(distance, phones).tolist() == [True, False, True]
    assert {"AA", "AE", "AH", "AO", "AW", "AY"} == set(OPEN_VOWELS)
    exactly_two = np.full(10, 0.002)
    assert open_vowels_never_open(exactly_two, [("AH", 0.0, 0.4)]).tolist() == [True]  # "<= 2 mm"


def test_an_open_vowels_peak_is_its_widest_frame_in_mm():
    from training.metrics import open_vowel_peaks_mm

    distance = np.full(30, 0.0015)
    distance[21], distance[22] = 0.006, 0.009   # inside the second AA (frames 20-24)
    distance[26] = 0.02                          # in the AE after it (frames 25-29)
    phones = [("M", 0.0, 0.2), ("AA1", 0.2, 0.4), ("IY", 0.4, 0.8), ("AA", 0.8, 1.0), ("AE", 1.0, 1.2)]
    assert np.allclose(open_vowel_peaks_mm(distance, phones), [1.5, 9.0, 20.0])


def test_lip_spikes_find_one_frame_jumps_both_ways_and_not_steps_or_small_bumps():
    from training.metrics import lip_spikes

    opening = np.full(60, 8.0)
    opening[10] = 13.0    # up 5 mm: a spike
    opening[20] = 3.5     # down 4.5 mm: a spike
    opening[30] = 11.0    # up 3 mm: too small
    opening[40:43] = 2.0  # a 3-frame closure: no single-frame spike
    opening[50:] = 20.0   # a step
    assert lip_spikes(opening).tolist() == [10, 20]
    train = np.zeros(100)
    train[5::10] = 6.0    # a spike train: 10 spikes in 100 frames
    assert lip_spikes(train).size == 10
    assert lip_spikes(np.array([0.0, 9.0])).size == 0


def test_mean_abs_second_difference_known_answers():
    from training.metrics import mean_abs_second_difference

    assert mean_abs_second_difference(np.arange(10.0) * 3.0) == 0.0  # a ramp does not accelerate
    assert mean_abs_second_difference(np.array([0.0, 1.0, 0.0, 1.0, 0.0])) == 2.0
    assert mean_abs_second_difference(np.tile([[0.0], [2.0]], (5, 2))) == 4.0  # columns too
    assert mean_abs_second_difference(np.ones(2)) == 0.0


def test_the_audio_envelope_is_the_rms_at_frame_times():
    from backend.audio import audio_envelope

    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 200 * t)  # 200 Hz: whole periods in 40 ms
    envelope = audio_envelope(tone, 25, sigma_frames=0)
    np.testing.assert_allclose(envelope[1:-1], 0.5 / np.sqrt(2), rtol=1e-6)
    assert envelope[0] == pytest.approx(0.5 / np.sqrt(2) / np.sqrt(2), rel=1e-3)  # half of the window is silence
    half = np.concatenate([tone[:8000], np.zeros(8000)])
    assert audio_envelope(half, 25, sigma_frames=0)[20:].max() == 0.0


def test_the_audio_envelope_of_ten_minutes_holds_one_copy_of_the_audio():
    # Found by the bench: every take's blinks read the envelope, and one 640-sample window per frame at once
    # took 10 min of speech from 1.08x to 1.59x the 60 s peak.
    import tracemalloc

    from backend.audio import audio_envelope

    audio = np.random.default_rng(0).standard_normal(600 * 16000).astype(np.float32)
    tracemalloc.start()
    try:
        envelope = audio_envelope(audio, 600 * 25)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert envelope.shape == (15000,) and np.isfinite(envelope).all()
    assert peak < 2 * audio.nbytes, peak / audio.nbytes


def test_envelope_correlation_finds_a_construction_at_its_lag_and_nothing_in_noise():
    from backend.audio import audio_envelope
    from training.metrics import envelope_correlation

    rng = np.random.default_rng(3)
    n_frames = 250
    t = np.arange(n_frames * 640) / 16000
    syllables = np.clip(np.sin(2 * np.pi * 3.3 * t), 0, None) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.4 * t) ** 2)
    audio = syllables * rng.standard_normal(t.size) * 0.3
    envelope = audio_envelope(audio, n_frames)
    lips = 12.0 * np.roll(envelope, 2) / envelope.max()  # the lips follow the sound two frames late
    assert envelope_correlation(lips, envelope) > 0.99
    assert envelope_correlation(lips, envelope, max_lag=0) < envelope_correlation(lips, envelope)
    assert abs(envelope_correlation(rng.standard_normal(n_frames), envelope)) < 0.3
    assert np.isnan(envelope_correlation(np.ones(n_frames), envelope))


def test_blinks_are_counted_with_hysteresis_from_the_blink_expressions(head):
    from backend.blinks import blink_signal, count_blinks

    signal = np.zeros(100)
    signal[10:14] = [0.4, 0.9, 1.0, 0.3]          # a blink
    signal[30:36] = [0.6, 0.45, 0.55, 0.6, 0.1, 0]  # a wobble around 0.5: still one blink
    signal[60:63] = [0.7, 0.2, 0.8]              # a double blink: two
    assert count_blinks(signal) == 4
    assert count_blinks(np.full(50, 0.49)) == 0
    expression = np.zeros((100, head.n_expression))
    names = list(head.expression_names)
    expression[:, names.index("eyeBlinkLeft")] = signal
    expression[:, names.index("eyeBlinkRight")] = signal
    expression[:, names.index("mouthClose")] = 1.0  # other components do not count
    assert count_blinks(blink_signal(expression, names)) == 4
    assert blink_signal(expression[:, 6:], names[6:]) is None  # a head without blink components
