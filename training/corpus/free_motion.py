"""Free motion: what the face does besides articulating. The lips are the articulation model's; this module
draws the rest per clip, from the clip's seed and its clean speech (energy, Praat's pitch, the alignment).

* Character: each clip is a different person in a different mood. A resting upper face (brows raised,
  lowered or knitted, squint or wide eyes, heavy lids, one brow higher than the other), how much the brows and
  head move with the voice, and an emotion label (neutral, happy, sad, angry, surprised) with an intensity,
  shown on the upper face and the mouth corners and breathing slowly in strength.
* Prosody: the vowels that stand out in loudness, pitch and length (pitch accents) raise the brows (a quick
  rise just before the vowel, a slower fall) and nod the head (a quick dip and a slower return); the brows also
  follow the clip's smoothed pitch contour a little, and some people knit the brows on emphasis instead.
* Blinks: a renewal process at human rates while talking (a clip's rate drawn from 10 to 25 per minute;
  gamma-distributed intervals, at least 0.35 s apart), pulled toward pauses, sometimes doubled, sometimes only
  partial; a blink closes in 80-130 ms, stays shut for a frame and opens in 130-220 ms.
* Gaze: fixations (0.3 to 3 s) joined by quick saccades, both eyes together.
* Head: smooth, band-limited rotation on the neck with a per-clip posture, plus the prosodic nods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.blinks import BLINK_RATE_PER_MINUTE, blink_shape, blink_timing
from training.corpus.articulation import ExpressionMap
from training.corpus.format import EMOTIONS, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, Segment
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
# Resting upper-face components a person may hold through a clip, with the largest weight drawn for each.
REST_COMPONENTS = {"browInnerUp": 0.5, "browOuterUp": 0.45, "browDown": 0.45, "eyeSquint": 0.5, "eyeWide": 0.4,
                   "cheekSquint": 0.35, "noseSneer": 0.15}
BLINK_MIN_INTERVAL_S = 0.35


@dataclass
class FreeMotion:
    expression: np.ndarray  # (T, E) to add to the articulation
    jaw: np.ndarray         # (T,) jaw pitch to add
    neck: np.ndarray        # (T, 3)
    eyes: np.ndarray        # (T, 6)
    emotion: dict           # {"label", "intensity"}
    blinks: int
    character: dict         # the clip's drawn upper-face character (rest pose, activity, blink rate)


def speech_energy(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Per-frame loudness in [0, 1]: RMS over 40 ms around each frame time, in dB, scaled by the clip's own
    10th and 98th percentiles."""
    pad = SAMPLES_PER_FRAME // 2
    x = np.pad(audio.astype(np.float64), (pad, pad + n_frames * SAMPLES_PER_FRAME))
    frames = np.stack([x[i * SAMPLES_PER_FRAME: i * SAMPLES_PER_FRAME + SAMPLES_PER_FRAME] for i in range(n_frames)])
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)
    lo, hi = np.percentile(db, 10), np.percentile(db, 98)
    return np.clip((db - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def pitch_semitones(audio: np.ndarray, n_frames: int, fps: float = FPS) -> np.ndarray:
    """(T,) the voice's pitch at each frame time in semitones from the clip's median voiced pitch, NaN where
    unvoiced; Praat's autocorrelation pitch tracker (parselmouth)."""
    import parselmouth

    sound = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=SAMPLE_RATE)
    pitch = sound.to_pitch(time_step=1.0 / fps, pitch_floor=60.0, pitch_ceiling=500.0)
    f0, times = pitch.selected_array["frequency"], pitch.xs()
    voiced = f0 > 0
    out = np.full(n_frames, np.nan)
    if voiced.sum() < 3:
        return out
    semitones = 12 * np.log2(f0[voiced] / np.median(f0[voiced]))
    frame_times = np.arange(n_frames) / fps
    nearest = np.clip(np.searchsorted(times, frame_times), 0, times.size - 1)
    on = voiced[nearest] & (np.abs(times[nearest] - frame_times) <= 1.0 / fps)
    out[on] = np.interp(frame_times[on], times[voiced], semitones)
    return out


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


def accents(phones: list[Segment], energy: np.ndarray, pitch: np.ndarray, fps: float = FPS) -> list[tuple[float, float]]:
    """(time s, prominence in [0, 1]) of the vowels at least 70 ms long that stand out in loudness, pitch and
    length: the upper 45% of the clip's vowels by a z-scored sum of the three."""
    rows = []
    for p in phones:
        if p.label.upper() in VOWELS and p.end - p.start >= 0.07:
            i0 = int(p.start * fps)
            i1 = min(max(i0 + 1, int(np.ceil(p.end * fps))), energy.size)
            if i0 >= i1:
                continue
            f0 = pitch[i0:i1]
            rows.append((0.5 * (p.start + p.end), float(energy[i0:i1].mean()),
                         float(np.nanmax(f0)) if np.any(np.isfinite(f0)) else np.nan, p.end - p.start))
    if len(rows) < 2:
        return [(t, 1.0) for t, *_ in rows]
    table = np.array([r[1:] for r in rows], dtype=np.float64)
    for j in range(table.shape[1]):
        col = table[:, j]
        col[~np.isfinite(col)] = np.nanmean(col) if np.any(np.isfinite(col)) else 0.0
        table[:, j] = (col - col.mean()) / max(col.std(), 1e-6)
    score = table @ np.array([1.0, 0.8, 0.5])
    cut = np.percentile(score, 55)
    top = max(score.max() - cut, 1e-6)
    return [(rows[i][0], float(np.clip(0.3 + 0.7 * (score[i] - cut) / top, 0.0, 1.0)))
            for i in range(len(rows)) if score[i] >= cut]


def blink_track(rng: np.random.Generator, n: int, per_minute: float, fps: float = FPS,
                pauses: list[float] = ()) -> tuple[np.ndarray, int]:
    """Eyelid closure in [0, 1] per frame, and the number of blinks (each double blink counts two)."""
    track = np.zeros(n)
    t = np.arange(n) / fps
    mean_gap = 60.0 / per_minute
    pauses = np.asarray(sorted(pauses), dtype=np.float64)
    now = rng.uniform(0.1, mean_gap)
    count = 0
    while now < n / fps:
        # People blink at pauses: a blink near one moves onto it half of the time.
        if pauses.size and rng.random() < 0.5:
            nearest = pauses[np.argmin(np.abs(pauses - now))]
            if abs(nearest - now) < 0.5:
                now = max(now, nearest) if nearest > now - 0.1 else now
        repeats = 2 if rng.random() < 0.08 else 1
        for _ in range(repeats):
            close, hold, open_ = blink_timing(rng)
            depth = rng.uniform(0.5, 0.8) if rng.random() < 0.1 else rng.uniform(0.95, 1.0)
            track = np.maximum(track, depth * blink_shape(t, now, close, hold, open_))
            count += int(now < n / fps)
            now += hold + 0.6 * open_ + rng.uniform(0.04, 0.1)  # a double blink starts while reopening
        now += max(BLINK_MIN_INTERVAL_S, rng.gamma(2.5, mean_gap / 2.5))
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


def add_sided(expr_map: ExpressionMap, expression: np.ndarray, name: str, value, lean: float) -> None:
    """Add `value` to a Left/Right pair, `lean` more on the left (and as much less on the right); a name
    without sides gets `value`."""
    if not (expr_map.has(name + "Left") or expr_map.has(name + "Right")):
        expr_map.add(expression, name, value)
        return
    for side, gain in (("Left", 1.0 + lean), ("Right", 1.0 - lean)):
        if expr_map.has(name + side):
            expression[:, expr_map.index[name + side]] += gain * np.asarray(value)


def draw_character(rng: np.random.Generator) -> dict:
    """A clip's upper-face character: resting components, brow lean, how much brows and head follow the voice,
    whether emphasis knits the brows, and the blink rate."""
    rest = {name: round(float(rng.uniform(0.05, top)), 3) for name, top in REST_COMPONENTS.items()
            if rng.random() < 0.5}
    if "eyeWide" in rest and "eyeSquint" in rest:  # one or the other
        del rest["eyeWide" if rng.random() < 0.5 else "eyeSquint"]
    return {
        "rest": rest,
        "heavy_lids": round(float(rng.uniform(0.0, 0.2)) if rng.random() < 0.3 else 0.0, 3),
        "brow_lean": round(float(rng.uniform(-0.3, 0.3)), 3),
        "brow_activity": round(float(rng.uniform(0.15, 1.0)), 3),
        "brow_inner_share": round(float(rng.uniform(0.3, 1.0)), 3),
        "emphasis_knits": bool(rng.random() < 0.2),
        "head_activity": round(float(rng.uniform(0.3, 1.0)), 3),
        "blinks_per_minute": round(float(rng.uniform(*BLINK_RATE_PER_MINUTE)), 2),
    }


def free_motion(rng: np.random.Generator, audio: np.ndarray, phones: list[Segment], n_frames: int,
                expr_map: ExpressionMap, emotion: str | None = None, fps: float = FPS) -> FreeMotion:
    """Draw a clip's character, blinks, brows, cheeks, emotion, gaze and head motion. `audio` is the clean
    speech the alignment was made on."""
    n = n_frames
    expression = np.zeros((n, expr_map.width))
    energy = speech_energy(audio, n)
    pitch = pitch_semitones(audio, n, fps)
    peaks = accents(phones, energy, pitch, fps)
    t = np.arange(n) / fps
    character = draw_character(rng)

    # Resting upper face.
    for name, value in character["rest"].items():
        add_sided(expr_map, expression, name, value, character["brow_lean"] if name.startswith("brow") else 0.0)

    # Blinks, pulled toward the pauses inside the speech; heavy lids stay a little lowered between blinks.
    speech = [p for p in phones if p.label != "SIL"]
    pauses = [p.start for p in phones if p.label == "SIL" and speech and speech[0].start < p.start < speech[-1].end]
    blink, n_blinks = blink_track(rng, n, character["blinks_per_minute"], fps, pauses)
    lids = character["heavy_lids"] + (1.0 - character["heavy_lids"]) * blink
    asym = rng.uniform(-0.05, 0.05)
    if expr_map.has("eyeBlinkLeft"):
        expression[:, expr_map.index["eyeBlinkLeft"]] += lids * (1 + asym)
        expression[:, expr_map.index["eyeBlinkRight"]] += lids * (1 - asym)

    # Brows and head with the prosody: accents raise (or knit) the brows and nod the head.
    activity, head_activity = character["brow_activity"], character["head_activity"]
    brow = np.zeros(n)
    nods = np.zeros(n)
    for ts, prominence in peaks:
        if rng.random() < 0.35 + 0.5 * activity:
            dt = t - ts
            rise_fall = np.where(dt < -0.05, np.exp(-0.5 * ((dt + 0.05) / 0.09) ** 2),
                                 np.exp(-0.5 * ((dt + 0.05) / 0.22) ** 2))
            brow += prominence * rng.uniform(0.6, 1.0) * rise_fall
        if rng.random() < 0.25 + 0.45 * head_activity:
            dt = np.clip(t - (ts - 0.08), 0.0, None) / 0.14  # a quick dip, a slower return
            nods += prominence * rng.uniform(0.5, 1.0) * dt * np.exp(1.0 - dt)
    contour = smooth(np.nan_to_num(pitch, nan=0.0), 3.0) / 4.0  # +-4 semitones -> +-1
    brow = np.clip(brow, 0.0, 1.3) * activity * rng.uniform(0.5, 0.9)
    brow_contour = np.clip(contour, -0.5, 1.0) * activity * rng.uniform(0.1, 0.25)
    if character["emphasis_knits"]:
        add_sided(expr_map, expression, "browDown", 0.8 * brow, character["brow_lean"])
        expr_map.add(expression, "browInnerUp", 0.3 * brow)
    else:
        share = character["brow_inner_share"]
        expr_map.add(expression, "browInnerUp", share * (brow + brow_contour))
        add_sided(expr_map, expression, "browOuterUp", (1.2 - share) * (brow + brow_contour), character["brow_lean"])
    expr_map.add(expression, "eyeWide", 0.25 * activity * np.clip(brow - 0.2, 0.0, None))
    expr_map.add(expression, "cheekSquint", rng.uniform(0.0, 0.2) * smooth(energy, 2.0))
    expr_map.add(expression, "browInnerUp", 0.06 * activity * np.clip(band_noise(rng, n, 12.0)[:, 0], -1, 2))

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

    # Head: a posture, smooth rotation (pitch, yaw, roll), the nods, and a slight lift with high pitch.
    amp = np.array([rng.uniform(0.01, 0.04), rng.uniform(0.015, 0.07), rng.uniform(0.005, 0.025)]) * head_activity
    neck = band_noise(rng, n, rng.uniform(8.0, 20.0), 3) * amp
    neck += np.array([rng.normal(0, 0.03), rng.normal(0, 0.05), rng.normal(0, 0.02)])
    neck[:, 0] += rng.uniform(0.015, 0.05) * head_activity * nods
    neck[:, 0] -= rng.uniform(0.0, 0.02) * head_activity * np.clip(contour, -0.5, 1.0)

    return FreeMotion(expression=expression, jaw=jaw, neck=neck, eyes=eyes,
                      emotion={"label": label, "intensity": intensity}, blinks=n_blinks, character=character)
