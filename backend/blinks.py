"""Blinks at a human rate in every take: the model's own blinks kept, topped up where a take has too few.

Why: the diffusion model draws its blinks from its noise, and how often it blinks follows the seed far more
than the speech. On the 72 real clips the shipped model blinked 3.4 times a minute with seed 2 and 26 with
seed 4, and half the clips of seeds 2 and 6 had no blink at all; an animator who keeps such a take has a
staring head. People blink about 10-25 times a minute while they talk, more at pauses (the corpus draws its
rates from BLINK_RATE_PER_MINUTE). So after sampling each take gets a rate of its own, drawn from its seed in
that range, and:

- every blink the model made is kept where it made it, and made as wide as a person's: the model's are often
  a single frame (40 ms) shut, which reads as a flicker of the lids, not a blink;
- while the take has fewer blinks than its rate asks for, one is added in the middle of the longest stretch
  without one, at its quietest frame (the audio's RMS, with a little jitter so that takes differ): people
  blink at pauses;
- while it has more than MAX_PER_MINUTE, the blink closest to another is taken out (the lids follow a
  straight line across it).

An added blink has the corpus's shape (`blink_shape`: an eased close in 80-130 ms, a frame shut, a slower
opening) on both eyes. Frames whose eyes are imposed (an `eyes_open` hold, the kept frames around a range
resample) are left alone and do not count. `blinks="model"` in SamplingSettings keeps the model's blinks as
they are.

    expression = natural_blinks(expression, names, energy, seed, fps)   # (T, E) -> (T, E)

A blink, for counting, is the mean of eyeBlinkLeft and eyeBlinkRight rising above BLINK_ON and falling back
below BLINK_OFF (hysteresis, so a wobble around BLINK_ON is one blink); training/metrics.py counts with it.
"""

from __future__ import annotations

import numpy as np

BLINK_EXPRESSIONS = ("eyeBlinkLeft", "eyeBlinkRight")
BLINK_ON, BLINK_OFF = 0.5, 0.25
BLINK_RATE_PER_MINUTE = (10.0, 25.0)   # while talking; each take draws its own
MAX_PER_MINUTE = 30.0
MIN_SEPARATION_S = 0.8                 # an added blink keeps this far from any other and from the ends
BLINK_STREAM = 0x0B11                  # the seed's random stream for blinks, apart from the sampler's noise


def blink_signal(expression, expression_names) -> np.ndarray | None:
    """(T,) the mean of the eyeBlinkLeft and eyeBlinkRight weights of (T, E) expression; None for a head
    without them."""
    names = list(expression_names)
    if not all(n in names for n in BLINK_EXPRESSIONS):
        return None
    x = np.asarray(expression, dtype=np.float64)
    return x[:, [names.index(n) for n in BLINK_EXPRESSIONS]].mean(axis=1)


def blink_spans(signal, on: float = BLINK_ON, off: float = BLINK_OFF) -> list[tuple[int, int]]:
    """Frames [start, end) of each blink in a blink signal: from where the lids start closing (the last
    frame before the signal rises past `on` at which it stopped falling) to where they have opened again
    (the first frame after it falls below `off` at which it stops falling). A signal that starts shut
    counts that blink too."""
    x = np.asarray(signal, dtype=np.float64).ravel()
    spans, shut, start = [], False, 0
    for t, value in enumerate(x):
        if not shut and value > on:
            shut, start = True, t
            while start > 0 and x[start - 1] < x[start]:
                start -= 1
        elif shut and value < off:
            end = t
            while end + 1 < x.size and x[end + 1] < x[end]:
                end += 1
            spans.append((start, end + 1))
            shut = False
    if shut:
        spans.append((start, x.size))
    return spans


def count_blinks(signal, on: float = BLINK_ON, off: float = BLINK_OFF) -> int:
    """Blinks in a blink signal (blink_spans)."""
    return len(blink_spans(signal, on, off))


def blink_shape(t: np.ndarray, peak: float, close: float, hold: float, open_: float) -> np.ndarray:
    """Eyelid closure of one blink over times t: eased closing that ends at `peak`, shut for `hold`, then an
    opening that starts fast and slows down."""
    x_close = np.clip((t - (peak - close)) / close, 0.0, 1.0)
    x_open = np.clip((t - peak - hold) / open_, 0.0, 1.0)
    closing = 0.5 - 0.5 * np.cos(np.pi * x_close)
    opening = (1.0 - x_open) ** 1.6
    return np.where(t <= peak + hold, closing, opening) * ((t > peak - close) & (t < peak + hold + open_))


def blink_timing(rng: np.random.Generator) -> tuple[float, float, float]:
    """A person's blink, drawn: seconds closing (80-130 ms), shut (40-70 ms) and opening (130-220 ms). The
    corpus's blinks (training/corpus/free_motion.py) and the added ones are drawn alike."""
    return rng.uniform(0.08, 0.13), rng.uniform(0.04, 0.07), rng.uniform(0.13, 0.22)


def random_blink(rng: np.random.Generator, t: np.ndarray, peak: float) -> np.ndarray:
    """One full blink at `peak` seconds over times t (blink_timing)."""
    close, hold, open_ = blink_timing(rng)
    return rng.uniform(0.95, 1.0) * blink_shape(t, peak, close, hold, open_)


def take_blink_rate(seed: int) -> float:
    """The blinks per minute a take of this seed asks for (uniform in BLINK_RATE_PER_MINUTE)."""
    return float(np.random.default_rng([BLINK_STREAM, int(seed) & 0xFFFFFFFF]).uniform(*BLINK_RATE_PER_MINUTE))


def _longest_free_stretch(free: np.ndarray, spans, margin: int) -> tuple[int, int] | None:
    """[lo, hi) of the longest run of free frames at least `margin` from every blink span and from the ends
    of the free run it lies in; None when no frame qualifies."""
    ok = free.copy()
    for start, end in spans:
        ok[max(start - margin, 0):end + margin] = False
    # keep away from the edges of free runs (the clip's ends, imposed frames)
    edges = np.flatnonzero(np.diff(np.r_[False, free, False].astype(np.int8)))
    for e in edges:
        ok[max(e - margin, 0):e + margin] = False
    if not ok.any():
        return None
    bounds = np.flatnonzero(np.diff(np.r_[False, ok, False].astype(np.int8))).reshape(-1, 2)
    lo, hi = max(bounds, key=lambda b: b[1] - b[0])
    return int(lo), int(hi)


def natural_blinks(expression: np.ndarray, expression_names, energy: np.ndarray, seed: int, fps: float,
                   free: np.ndarray | None = None) -> np.ndarray:
    """(T, E) expression weights with blinks at the take's rate (module docstring). `energy` (T,): the
    audio's loudness per frame (quiet frames get the added blinks); `free` (T,) bool: the frames this may
    change (default all). A head without eyeBlink expressions gets its expression back unchanged."""
    expression = np.array(expression, dtype=np.float64)
    signal = blink_signal(expression, expression_names)
    n = expression.shape[0]
    if signal is None or n == 0:
        return expression
    free = np.ones(n, dtype=bool) if free is None else np.asarray(free, dtype=bool)
    names = list(expression_names)
    columns = [names.index(c) for c in BLINK_EXPRESSIONS]
    rng = np.random.default_rng([BLINK_STREAM, int(seed) & 0xFFFFFFFF, n])
    minutes = free.sum() / fps / 60.0
    wanted = take_blink_rate(seed) * minutes
    wanted = int(np.floor(wanted) + (rng.random() < wanted - np.floor(wanted)))
    most = int(np.floor(MAX_PER_MINUTE * minutes))
    t = np.arange(n) / fps
    loud = np.asarray(energy, dtype=np.float64)
    loud = (loud - loud.min()) / max(np.ptp(loud), 1e-12) if loud.size == n else np.zeros(n)
    margin = int(round(MIN_SEPARATION_S * fps))

    def blinks_on_free_frames(signal):   # the blinks this take may change: those that peak on a free frame
        return [(a, b) for a, b in blink_spans(signal) if free[a + int(np.argmax(signal[a:b]))]]

    # 1. Too many: take out the most crowded (nearest another), the lids on a straight line across it.
    spans = blinks_on_free_frames(signal)
    for _ in range(len(spans)):   # each pass takes one out
        if len(spans) <= most:
            break
        starts, ends = np.array([a for a, _ in spans]), np.array([b for _, b in spans])
        gaps = starts[1:] - ends[:-1]
        crowded = int(np.argmin(np.minimum(np.r_[n, gaps], np.r_[gaps, n])))
        start, end = spans[crowded]
        last = min(end, n - 1)
        for c in columns:   # a lid shut at either end of the clip ends open, at the other end's level
            a, b = expression[start, c], expression[last, c]
            a, b = (min(a, b), min(a, b)) if max(a, b) > BLINK_OFF else (a, b)
            line = np.linspace(a, b, end - start)
            expression[start:end, c] = np.where(free[start:end], line, expression[start:end, c])
        signal = blink_signal(expression, names)
        spans = blinks_on_free_frames(signal)
    # 2. The model's blinks, where it made them, a human blink wide (it makes 40 ms ones).
    for start, end in spans:
        peak = start + int(np.argmax(signal[start:end]))
        blink = random_blink(rng, t, peak / fps) * free
        expression[:, columns] = np.maximum(expression[:, columns], blink[:, None])
    signal = blink_signal(expression, names)
    # 3. Too few: one more in the middle of the longest stretch without a blink, at its quietest frame.
    for _ in range(4 * wanted + 8):   # each try adds a blink or narrows the stretches; bounded all the same
        if len(blinks_on_free_frames(signal)) >= wanted:
            break
        stretch = _longest_free_stretch(free, blink_spans(signal), margin)
        if stretch is None:
            break
        lo, hi = stretch
        middle = slice(lo + (hi - lo) // 4, hi - (hi - lo) // 4)
        frames = np.arange(n)[middle]
        peak = frames[np.argmin(loud[middle] + 0.3 * rng.random(frames.size))]
        blink = random_blink(rng, t, peak / fps) * free
        expression[:, columns] = np.maximum(expression[:, columns], blink[:, None])
        signal = blink_signal(expression, names)
    return expression
