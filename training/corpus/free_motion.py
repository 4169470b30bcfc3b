"""Free motion: what the face does besides articulating, drawn at random per clip and not determined by the audio.

* Blinks: a renewal process at human rates (a clip's rate drawn from 8 to 26 per minute, at least 0.5 s
  apart, sometimes doubled); a blink closes in about 90 ms and opens in about 180 ms.
* Brows and cheeks: brows rise on a random subset of stressed syllables (loud, long vowels), cheeks follow
  the speech energy a little; how much is drawn per clip.
* Emotion: one label per clip (neutral, happy, sad, angry, surprised) with an intensity, shown on the upper
  face and the mouth corners, slowly breathing in strength.
* Gaze: fixations (0.3 to 3 s) joined by quick saccades, both eyes together.
* Head: smooth, band-limited rotation on the neck, with small nods on some stressed syllables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.corpus.articulation import ExpressionMap
from training.corpus.format import EMOTIONS, FPS, SAMPLES_PER_FRAME, Segment
from training.corpus.text import VOWELS

# Each emotion's pose at intensity 1: ARKit component -> weight (pairs name both sides), and a jaw offset.
EMOTION_POSES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"mouthSmile": 0.65, "cheekSquint": 0.45, "eyeSquint": 0.2, "mouthDimple": 0.2, "browOuterUp": 0.1},
    "sad": {"browInnerUp": 0.7, "mouthFrown": 0.55, "browDown": 0.15, "mouthShrugLower": 0.25, "eyeSquint": 0.1},
    "angry": {"browDown": 0.75, "noseSneer": 0.35, "eyeSquint": 0.3, "mouthFrown": 0.25, "eyeWide": 0.05},
    "surprised": {"browInnerUp": 0.65, "browOuterUp": 0.75, "eyeWide": 0.6},
}
EMOTION_JAW = {"surprised": 0.03}


@dataclass
class FreeMotion:
    expression: np.ndarray  # (T, E) to add to the articulation
    jaw: np.ndarray         # (T,) jaw pitch to add
    neck: np.ndarray        # (T, 3)
    eyes: np.ndarray        # (T, 6)
    emotion: dict           # {"label", "intensity"}
    blinks: int


def speech_energy(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Per-frame loudness in [0, 1]: RMS over 40 ms around each frame time, in dB, scaled by the clip's own
    10th and 98th percentiles."""
    pad = SAMPLES_PER_FRAME // 2
    x = np.pad(audio.astype(np.float64), (pad, pad + n_frames * SAMPLES_PER_FRAME))
    frames = np.stack([x[i * SAMPLES_PER_FRAME: i * SAMPLES_PER_FRAME + SAMPLES_PER_FRAME] for i in range(n_frames)])
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)
    lo, hi = np.percentile(db, 10), np.percentile(db, 98)
    return np.clip((db - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing along the first axis, with reflected edges."""
    if sigma_frames <= 0:
        return x
    r = int(np.ceil(3 * sigma_frames))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_frames) ** 2)
    k /= k.sum()
    xp = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="reflect")
    if x.ndim == 1:
        return np.convolve(xp, k, mode="valid")
    return np.stack([np.convolve(xp[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def band_noise(rng: np.random.Generator, n: int, sigma_frames: float, dims: int = 1) -> np.ndarray:
    """Smooth random motion with unit standard deviation."""
    pad = int(4 * sigma_frames)
    x = smooth(rng.standard_normal((n + 2 * pad, dims)), sigma_frames)[pad:pad + n]
    return x / max(float(x.std()), 1e-9)


def stressed_syllables(phones: list[Segment], energy: np.ndarray, fps: float = FPS) -> list[float]:
    """Times (s) of stressed syllables: vowels at least 70 ms long that are louder than most of the clip's."""
    rows = []
    for p in phones:
        if p.label.upper() in VOWELS + ("AW", "AY", "OY", "EY", "OW") and p.end - p.start >= 0.07:
            i0, i1 = int(p.start * fps), max(int(p.start * fps) + 1, int(np.ceil(p.end * fps)))
            rows.append((0.5 * (p.start + p.end), float(energy[i0:i1].mean()) if i1 <= energy.size else 0.0))
    if not rows:
        return []
    cut = np.percentile([e for _, e in rows], 55)
    return [t for t, e in rows if e >= cut]


def blink_track(rng: np.random.Generator, n: int, per_minute: float, fps: float = FPS) -> tuple[np.ndarray, int]:
    """Eyelid closure in [0, 1] per frame, and the number of blinks."""
    track = np.zeros(n)
    t = np.arange(n) / fps
    now = rng.uniform(0.0, 60.0 / per_minute)
    count = 0
    while now < n / fps:
        close, open_ = rng.uniform(0.07, 0.11), rng.uniform(0.14, 0.24)
        depth = rng.uniform(0.85, 1.0)
        rise = np.clip((t - (now - close)) / close, 0, 1)
        fall = np.clip(1 - (t - now) / open_, 0, 1)
        shape = np.where(t < now, rise, fall) * depth
        shape = np.where((t > now - close) & (t < now + open_), shape, 0.0)
        track = np.maximum(track, shape ** 0.8)
        count += 1
        if rng.random() < 0.08:  # a double blink
            now += close + open_ + rng.uniform(0.05, 0.15)
            continue
        now += max(0.5, rng.exponential(60.0 / per_minute))
    return np.clip(track, 0, 1), count


def gaze_track(rng: np.random.Generator, n: int, fps: float = FPS) -> np.ndarray:
    """(n, 2) eye pitch and yaw (radians): fixations joined by saccades of about 40 ms."""
    out = np.zeros((n, 2))
    centre = np.array([rng.normal(0.0, 0.03), rng.normal(0.0, 0.05)])
    i, current = 0, centre.copy()
    while i < n:
        hold = int(max(0.3, min(3.0, rng.lognormal(np.log(1.0), 0.6))) * fps)
        target = centre + np.array([rng.normal(0, 0.05), rng.normal(0, 0.09)])
        ramp = min(2, n - i)
        for j in range(ramp):
            out[i + j] = current + (target - current) * (j + 1) / (ramp + 1)
        out[i + ramp:i + hold] = target
        current = target
        i += max(hold, ramp + 1)
    return out + 0.004 * band_noise(rng, n, 3.0, 2)


def free_motion(rng: np.random.Generator, audio: np.ndarray, phones: list[Segment], n_frames: int,
                expr_map: ExpressionMap, emotion: str | None = None, fps: float = FPS) -> FreeMotion:
    """Draw a clip's blinks, brows, cheeks, emotion, gaze and head motion."""
    n = n_frames
    expression = np.zeros((n, expr_map.width))
    energy = speech_energy(audio, n)
    stressed = stressed_syllables(phones, energy, fps)
    t = np.arange(n) / fps

    # Blinks.
    blink, n_blinks = blink_track(rng, n, rng.uniform(8, 26), fps)
    asym = rng.uniform(-0.05, 0.05)
    if expr_map.has("eyeBlinkLeft"):
        expression[:, expr_map.index["eyeBlinkLeft"]] += blink * (1 + asym)
        expression[:, expr_map.index["eyeBlinkRight"]] += blink * (1 - asym)

    # Brows on a random subset of stressed syllables; cheeks with energy.
    brow_gain, brow_share = rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.7)
    brow = np.zeros(n)
    nods = np.zeros(n)
    for ts in stressed:
        if rng.random() < brow_share:
            brow += rng.uniform(0.5, 1.0) * np.exp(-0.5 * ((t - ts + 0.05) / 0.12) ** 2)
        if rng.random() < 0.3:
            nods += rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((t - ts) / 0.15) ** 2)
    brow = np.clip(brow, 0, 1.2) * brow_gain
    inner_share = rng.uniform(0.3, 1.0)
    expr_map.add(expression, "browInnerUp", inner_share * brow)
    expr_map.add(expression, "browOuterUp", (1.2 - inner_share) * brow)
    expr_map.add(expression, "cheekSquint", rng.uniform(0.0, 0.2) * smooth(energy, 2.0))
    expr_map.add(expression, "browInnerUp", 0.08 * np.clip(band_noise(rng, n, 12.0)[:, 0], -1, 2) * rng.uniform(0, 1))

    # Emotion: a label and intensity per clip, breathing slowly.
    label = emotion or EMOTIONS[int(rng.integers(len(EMOTIONS)))]
    intensity = 0.0 if label == "neutral" else float(np.round(rng.uniform(0.3, 1.0), 2))
    breath = intensity * np.clip(1 + 0.15 * band_noise(rng, n, 20.0)[:, 0], 0.5, 1.5)
    for component, weight in EMOTION_POSES[label].items():
        expr_map.add(expression, component, weight * breath)
    jaw = EMOTION_JAW.get(label, 0.0) * breath

    # Gaze, both eyes together (pitch about x, yaw about y), with a hint of convergence.
    gaze = gaze_track(rng, n, fps)
    eyes = np.zeros((n, 6))
    verge = rng.uniform(0.0, 0.03)
    eyes[:, 0], eyes[:, 1] = gaze[:, 0], gaze[:, 1] - verge
    eyes[:, 3], eyes[:, 4] = gaze[:, 0], gaze[:, 1] + verge

    # Head: smooth rotation (pitch, yaw, roll) plus nods on some stressed syllables.
    amp = np.array([rng.uniform(0.01, 0.05), rng.uniform(0.015, 0.08), rng.uniform(0.005, 0.03)])
    neck = band_noise(rng, n, rng.uniform(8.0, 20.0), 3) * amp
    neck += np.array([rng.normal(0, 0.03), rng.normal(0, 0.05), rng.normal(0, 0.02)])
    neck[:, 0] += rng.uniform(0.0, 0.04) * nods

    return FreeMotion(expression=expression, jaw=jaw, neck=neck, eyes=eyes,
                      emotion={"label": label, "intensity": intensity}, blinks=n_blinks)
