"""The project's metrics: one definition each, used everywhere (corpus statistics, evaluation, training logs).

Definitions follow docs/method.md. Vertices are (T, V, 3) in metres; a clip's frame i stands for time i / fps.

* lip_distance: per frame, the distance between the upper and lower inner-lip centre landmarks.
* bilabial_closure_rate: the fraction of /p b m/ segments in which the lip distance falls below a closure
  threshold: 10% of the clip's 95th-percentile lip distance, or an absolute threshold in mm when one is given.
  A segment's frames are those whose time lies in [start, end); a segment too short to hold a frame is
  judged by the frame nearest its middle.
* lip_vertex_error (LVE, mm): per frame, the largest Euclidean (not squared) distance between a predicted
  and a reference lip vertex; the mean of that over frames.
* correlations: Pearson (PCC) and Lin's concordance (CCC) correlation of two 1-D signals, with population
  moments. CCC = 2 cov / (var_a + var_b + (mean_a - mean_b)^2) also punishes a wrong scale and offset, so
  |CCC| <= |PCC|. A constant signal has no PCC (NaN); its CCC against a moving one is 0 (the formula is
  defined and a frozen mouth must score badly, not drop out of an average as NaN); two constant signals give
  NaN for both. lip_sync_correlations (L-PCC, L-CCC) applies them to the lip distances of two clips.
* take_spread (mm): for K >= 2 takes of one audio, the Euclidean distance between the same vertex in two
  takes, averaged over the K (K - 1) / 2 pairs, the frames and the given vertices. Upper-face diversity is
  the spread of the upper-face vertices (should be large for a stochastic model), lip spread that of the
  lip vertices (should stay small: the lips are bound to the speech).
* upper_face_dynamics_deviation (FDD, after CodeTalker, mm): for each given vertex, the displacement norm
  |v_t - rest| from the head's rest position (the template, not the clip's first frame, so a clip that
  starts mid-blink is judged like any other), its standard deviation over time (population, ddof=0) in the
  reference and in the prediction; FDD is the mean over the vertices of |std_ref - std_pred|. The two clips
  may differ in length. (CodeTalker averages the signed difference; the absolute value keeps too much and
  too little motion on different vertices from cancelling.)
* metric_vertex_sets: the lips, and the upper face without the skin hidden behind the eyeballs. Some
  eye-region skin lies behind the front of an eyeball at rest (in the built-in head, the lid skin recessed
  inside the eye opening, which a blink brings forward; a FLAME head may have such skin around the eye
  socket). It cannot be seen, yet in the built-in head a blink moves it by up to 11 mm in depth, so left in
  it would make blinks dominate diversity and FDD. A skin vertex is dropped when,
  seen from the front (along -z), it lies inside an eyeball's silhouette and more than HIDDEN_DEPTH behind
  that eyeball's front surface. An eyeball is the sphere about its eye joint (FLAME's eye joints are the
  eyeballs' centres of rotation) whose radius is the median distance of its vertices from that joint. The
  tolerance keeps lid skin that rests on the eyeball or sinks into it a little (the lid margins, FLAME's
  slight lid-eyeball intersections, the eyeball's flat facets lying up to ~0.2 mm inside the true sphere).
  On the built-in head this drops 142 of the 1008 upper-face vertices; a full blink then moves no kept
  vertex more than 7.3 mm (the visible upper lid travels 7.8 mm), where the dropped ones moved up to 10.7 mm.
* Real speech (no reference motion; docs/method.md, "Real-speech evaluation"). The lip opening is
  lip_distance in mm.
  - bilabial closure with a margin: the real-speech mode judges a /p b m/ segment over its frames widened
    by REAL_SPEECH_CLOSURE_MARGIN (1) frame on each side, so an alignment off by a frame does not count as a
    missed closure.
  - open_vowels_never_open: for each open-vowel segment (OPEN_VOWELS: AA AE AH AO AW AY, the vowels of
    the baseline's open "A" viseme plus AO; pocketsphinx drops stress, so AH includes the schwa), whether
    the lip opening stays at or below NEVER_OPEN_MM (2 mm) on every frame of the segment (no margin: a
    vowel must open while it is heard). EH (mid) and ER (r-coloured, rounded) are left out: many speakers
    say them with the lips nearly together. open_vowel_peaks_mm gives each segment's widest opening; their
    mean, against the baseline's, tells a mouth that opens too wide (audio guidance does).
  - lip_spikes: frames more than SPIKE_MM (4 mm) above both neighbours or below both (a one-frame flicker);
    spike rate = spikes per second of audio.
  - mean_abs_second_difference: mean over frames of |x[t+1] - 2 x[t] + x[t-1]| (of the opening: mm per
    frame squared).
  - audio_envelope (backend/audio.py, which the blinks use too): the RMS amplitude (linear, not dB) of a 40 ms window centred on each frame's time,
    smoothed with a Gaussian of ENVELOPE_SIGMA_FRAMES (1 frame, 40 ms), so it follows syllables (the
    4-8 Hz beat the jaw follows) and not single pitch periods or plosive bursts.
    envelope_correlation: the Pearson r of the lip opening with it at the best lag within +-3 frames
    (120 ms either way: lips lead or lag the sound), as docs/method.md asks.
  - blinks (backend/blinks.py, which finishes every take with them): the blink signal is the mean of the eyeBlinkLeft and eyeBlinkRight expression weights (1 =
    lids shut on the built-in head). A blink starts when the signal rises above BLINK_ON (0.5) and ends when
    it falls below BLINK_OFF (0.25), so a wobble around 0.5 is one blink, not several. Blink rate =
    blinks per minute of audio.
* head_motion_spread (degrees): the mean over take pairs and frames of the difference between the takes'
  neck rotations (axis-angle difference, small angles); faces are scored without the neck, this scores it.
"""

from __future__ import annotations

import numpy as np

from backend.errors import HeadFileError

BILABIALS = ("P", "B", "M")
OPEN_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY")
REAL_SPEECH_CLOSURE_MARGIN = 1  # frames either side of a /p b m/ segment
NEVER_OPEN_MM = 2.0
SPIKE_MM = 4.0
ENVELOPE_MAX_LAG = 3  # frames
RELATIVE_CLOSURE_THRESHOLD = 0.10
OPENING_PERCENTILE = 95.0
HIDDEN_DEPTH = 0.0005  # metres behind an eyeball's front surface from which skin counts as hidden
EYE_JOINTS = {"eye_left": 3, "eye_right": 4}  # FLAME's joint order
MM = 1000.0


def lip_distance(vertices, landmarks: dict[str, int]) -> np.ndarray:
    """(T, V, 3) vertices and the head's landmarks -> (T,) distance between the inner-lip centres, in the
    vertices' unit (metres for Thunder's heads)."""
    v = np.asarray(vertices.detach().cpu() if hasattr(vertices, "detach") else vertices, dtype=np.float64)
    upper = v[:, landmarks["upper_lip_center"]]
    lower = v[:, landmarks["lower_lip_center"]]
    return np.linalg.norm(upper - lower, axis=-1)


def _array(x) -> np.ndarray:
    """A numpy float64 copy of an array or torch tensor (metrics are computed in double precision)."""
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)


def closure_threshold(distance: np.ndarray, absolute_mm: float | None = None) -> float:
    """The lip distance (metres) below which the lips count as closed."""
    if absolute_mm is not None:
        return absolute_mm / 1000.0
    return RELATIVE_CLOSURE_THRESHOLD * float(np.percentile(distance, OPENING_PERCENTILE))


def phone_segment(seg) -> tuple[str, float, float]:
    """(label, start, end) of a timed phone: a (label, start, end) triple in seconds, or a Segment object."""
    if hasattr(seg, "label"):
        return seg.label, float(seg.start), float(seg.end)
    label, start, end = seg
    return str(label), float(start), float(end)


def segment_frames(start: float, end: float, n_frames: int, fps: float, outside_clip: str = "nearest") -> np.ndarray:
    """Indices of the frames (of `n_frames` at `fps`) a time span [start, end) holds; the frame nearest its
    middle if it holds none. A span wholly outside the clip gets the clip's nearest frame with
    outside_clip="nearest" (a figure counts every segment) and no frame with "none" (the baseline leaves
    the clip's frames alone)."""
    first = int(np.ceil(start * fps - 1e-9))
    last = int(np.ceil(end * fps - 1e-9))  # exclusive
    idx = np.arange(max(first, 0), min(last, n_frames))
    inside = n_frames > 0 and end > 0 and start < n_frames / fps
    if idx.size == 0 and (outside_clip == "nearest" or inside):
        idx = np.array([min(max(int(round(0.5 * (start + end) * fps)), 0), n_frames - 1)])
    return idx


def segments_of(phones, labels) -> list[tuple[float, float]]:
    """(start, end) of the segments of `phones` whose label (any case, stress digits dropped) is in `labels`."""
    out = []
    for seg in phones:
        label, start, end = phone_segment(seg)
        if label.upper().rstrip("012") in labels:
            out.append((start, end))
    return out


def bilabial_closures(distance: np.ndarray, phones, fps: float = 25.0,
                      absolute_mm: float | None = None, margin_frames: int = 0) -> np.ndarray:
    """For each /p b m/ segment of `phones` ((label, start, end) in seconds, or Segment objects): whether the
    lip distance falls below the closure threshold in it, its frames widened by `margin_frames` on each side.
    Returns a bool array, one per segment."""
    distance = np.asarray(distance, dtype=np.float64)
    threshold = closure_threshold(distance, absolute_mm)
    closed = []
    for start, end in segments_of(phones, BILABIALS):
        idx = segment_frames(start, end, distance.size, fps)
        lo, hi = max(idx[0] - margin_frames, 0), min(idx[-1] + margin_frames + 1, distance.size)
        closed.append(bool(distance[lo:hi].min() < threshold))
    return np.array(closed, dtype=bool)


def bilabial_closure_rate(distance: np.ndarray, phones, fps: float = 25.0,
                          absolute_mm: float | None = None, margin_frames: int = 0) -> float:
    """The fraction of /p b m/ segments in which the lips close (NaN when there are none)."""
    closed = bilabial_closures(distance, phones, fps, absolute_mm, margin_frames)
    return float(closed.mean()) if closed.size else float("nan")


# ---------------------------------------------------------------------------------------------------------
# Real speech: figures that need no reference motion (module docstring)


def open_vowel_peaks_mm(distance: np.ndarray, phones, fps: float = 25.0) -> np.ndarray:
    """For each open-vowel segment (OPEN_VOWELS) of `phones`: the widest lip opening (mm) on its frames, from
    the lip distance in metres. One float per segment."""
    distance = np.asarray(distance, dtype=np.float64)
    return np.array([distance[segment_frames(start, end, distance.size, fps)].max() * MM
                     for start, end in segments_of(phones, OPEN_VOWELS)], dtype=np.float64)


def open_vowels_never_open(distance: np.ndarray, phones, fps: float = 25.0,
                           max_mm: float = NEVER_OPEN_MM) -> np.ndarray:
    """For each open-vowel segment (OPEN_VOWELS) of `phones`: whether the lip distance (metres) stays at or
    below `max_mm` on all of the segment's frames. A bool array, one per segment."""
    return open_vowel_peaks_mm(distance, phones, fps) <= max_mm


def lip_spikes(opening, jump: float = SPIKE_MM) -> np.ndarray:
    """Indices of the frames that lie more than `jump` above both neighbours or more than `jump` below both
    (same unit as `opening`; the default is for mm). The first and last frames have one neighbour: never."""
    x = np.asarray(opening, dtype=np.float64)
    if x.size < 3:
        return np.zeros(0, dtype=int)
    before, mid, after = x[:-2], x[1:-1], x[2:]
    up = mid - np.maximum(before, after) > jump
    down = np.minimum(before, after) - mid > jump
    return np.flatnonzero(up | down) + 1


def mean_abs_second_difference(x) -> float:
    """Mean of |x[t+1] - 2 x[t] + x[t-1]| over frames (and over columns of a (T, C) array); 0 below 3
    frames."""
    x = _array(x)
    return float(np.abs(x[2:] - 2 * x[1:-1] + x[:-2]).mean()) if len(x) > 2 else 0.0


def envelope_correlation(opening, envelope, max_lag: int = ENVELOPE_MAX_LAG) -> float:
    """The largest Pearson r of the lip opening with the audio envelope over lags of -max_lag..max_lag
    frames (NaN when every lag leaves a constant signal)."""
    a, b = _array(opening).ravel(), _array(envelope).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the signals differ in length: {a.size} and {b.size}")
    best = float("nan")
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b[:b.size - lag]) if lag >= 0 else (a[:lag], b[-lag:])
        if x.size > 2:
            r = correlations(x, y)[0]
            if np.isfinite(r) and not r <= best:
                best = r
    return best


# ---------------------------------------------------------------------------------------------------------
# Against a reference motion


def lip_vertex_error(pred, ref, lip_indices) -> float:
    """LVE in mm: per frame the largest Euclidean distance between a predicted and a reference lip vertex,
    averaged over frames. The maximum, not the mean, because a lip that misses its target on a few vertices
    (a corner, an unclosed middle) is what a viewer notices."""
    pred, ref = _array(pred), _array(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} must have the same shape")
    idx = np.asarray(lip_indices)
    distance = np.linalg.norm(pred[:, idx] - ref[:, idx], axis=-1)  # (T, L)
    return float(distance.max(axis=1).mean() * MM)


def correlations(a, b) -> tuple[float, float]:
    """(PCC, CCC) of two equally long 1-D signals; see the module docstring for constant signals."""
    a, b = _array(a).ravel(), _array(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the signals differ in length: {a.size} and {b.size}")
    mean_a, mean_b = a.mean(), b.mean()
    var_a, var_b = a.var(), b.var()
    cov = float(np.mean((a - mean_a) * (b - mean_b)))

    def constant(var, mean):  # below a picometre of spread for signals in metres: numerically constant
        return var <= (1e-12 * (1.0 + abs(mean))) ** 2

    const_a, const_b = constant(var_a, mean_a), constant(var_b, mean_b)
    pcc = float("nan") if const_a or const_b else cov / float(np.sqrt(var_a * var_b))
    denominator = var_a + var_b + (mean_a - mean_b) ** 2
    ccc = float("nan") if const_a and const_b else (0.0 if const_a or const_b else 2.0 * cov / denominator)
    return pcc, float(ccc)


def lip_sync_correlations(pred_vertices, ref_vertices, landmarks: dict[str, int]) -> tuple[float, float]:
    """(L-PCC, L-CCC): the correlations of the predicted and reference lip distance signals."""
    return correlations(lip_distance(pred_vertices, landmarks), lip_distance(ref_vertices, landmarks))


def upper_face_dynamics_deviation(pred, ref, indices, rest) -> float:
    """FDD in mm: the mean over the given vertices of |std_t |ref_t - rest| - std_t |pred_t - rest||.

    `rest` holds the rest positions (the head's template) in the same vertex layout as pred and ref. FDD
    asks whether the prediction moves each upper-face vertex as much as the reference does, not when."""
    idx = np.asarray(indices)
    rest = _array(rest)[idx]
    spread_ref = np.linalg.norm(_array(ref)[:, idx] - rest, axis=-1).std(axis=0)
    spread_pred = np.linalg.norm(_array(pred)[:, idx] - rest, axis=-1).std(axis=0)
    return float(np.abs(spread_ref - spread_pred).mean() * MM)


# ---------------------------------------------------------------------------------------------------------
# Across takes of one audio


def take_spread(takes, indices) -> float:
    """Mean over pairs of takes, frames and the given vertices of the distance between two takes' vertices,
    in mm. takes: (K, T, V, 3) with K >= 2, all for the same audio."""
    takes = _array(takes)
    if takes.ndim != 4 or takes.shape[0] < 2:
        raise ValueError(f"takes must have shape (K >= 2, T, V, 3); got {takes.shape}")
    part = takes[:, :, np.asarray(indices)]
    k = part.shape[0]
    pairs = [np.linalg.norm(part[i] - part[j], axis=-1).mean() for i in range(k) for j in range(i + 1, k)]
    return float(np.mean(pairs) * MM)


# ---------------------------------------------------------------------------------------------------------
# Which vertices the metrics look at


def behind_sphere(points: np.ndarray, center: np.ndarray, radius: float,
                  depth: float = HIDDEN_DEPTH) -> np.ndarray:
    """(N,) whether each point, seen from the front (along -z), lies inside the sphere's silhouette and more
    than `depth` behind the sphere's front surface: the sphere hides it from a frontal view."""
    points = np.asarray(points, dtype=np.float64)
    r2 = ((points[:, :2] - center[:2]) ** 2).sum(axis=1)
    inside = r2 < radius * radius
    front_z = center[2] + np.sqrt(np.clip(radius * radius - r2, 0.0, None))
    return inside & (points[:, 2] < front_z - depth)


def _eyeballs(head, sets: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(vertex indices, centre)] of the eyeballs: the named sets where the head has them, otherwise the
    vertices skinned (weight > 0.5) to the eye joints, as backend.head_regions finds them."""
    joints = _array(head.joint_template)
    balls = []
    for name, joint in EYE_JOINTS.items():
        idx = sets.get(name)
        if idx is None:
            idx = np.flatnonzero(np.asarray(head.data.weights)[:, joint] > 0.5)
        if len(idx):
            balls.append((np.asarray(idx), joints[joint]))
    return balls


def _first_set(sets: dict[str, np.ndarray], names: tuple, what: str, source) -> np.ndarray:
    for name in names:
        if name in sets and len(sets[name]):
            return np.asarray(sets[name])
    raise HeadFileError(f"{source}: the head has none of the vertex sets {', '.join(names)} that the {what} "
                        "metrics need")


def metric_vertex_sets(head) -> dict[str, np.ndarray]:
    """{'lips', 'upper_face'}: sorted vertex indices of the full mesh the metrics use (module docstring).

    A head that lacks some named sets falls back to those it has: the lips to the upper and lower lip sets
    or the inner lip line, the upper face to the face, the eyeballs to the eye-skinned vertices."""
    sets = dict(head.data.vertex_sets) if head.data.vertex_sets else dict(head.vertex_sets)
    lips_parts = [sets[n] for n in ("lips_upper", "lips_lower") if n in sets]
    if "lips" not in sets and len(lips_parts) == 2:
        sets["lips"] = np.union1d(*lips_parts)
    lips = _first_set(sets, ("lips", "lips_inner"), "lip", head.source)
    upper_face = _first_set(sets, ("upper_face", "face"), "upper-face", head.source)

    template = np.asarray(head.data.v_template, dtype=np.float64)
    hidden = np.zeros(len(template), dtype=bool)
    for idx, center in _eyeballs(head, sets):
        radius = float(np.median(np.linalg.norm(template[idx] - center, axis=1)))
        hidden |= behind_sphere(template, center, radius)
        hidden[idx] = True  # the eyeballs themselves are no skin
    return {"lips": np.sort(lips), "upper_face": np.sort(upper_face[~hidden[upper_face]])}


def head_motion_spread(takes: np.ndarray, n_expression: int) -> float:
    """Mean over take pairs and frames of the angle (degrees) between the takes' neck rotations, using the
    axis-angle difference (small angles)."""
    from backend.motion import part_slices

    neck = np.asarray(takes)[..., part_slices(n_expression)["neck"]]
    pairs = [np.linalg.norm(neck[i] - neck[j], axis=-1).mean() for i in range(len(neck))
             for j in range(i + 1, len(neck))]
    return float(np.degrees(np.mean(pairs))) if pairs else float("nan")
