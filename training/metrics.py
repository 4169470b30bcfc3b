"""The project's metrics: one definition each, used everywhere (corpus statistics, evaluation, training logs).

Definitions follow docs/method.md. Vertices are (T, V, 3) in metres; a clip's frame i stands for time i / fps.

* lip_distance: per frame, the distance between the upper and lower inner-lip centre landmarks.
* bilabial_closure_rate: the fraction of /p b m/ segments in which the lip distance falls below a closure
  threshold: 10% of the clip's 95th-percentile lip distance, or an absolute threshold in mm when one is given.
  A segment's frames are those whose time lies in [start, end); a segment too short to hold a frame is
  judged by the frame nearest its middle.
"""

from __future__ import annotations

import numpy as np

BILABIALS = ("P", "B", "M")
RELATIVE_CLOSURE_THRESHOLD = 0.10
OPENING_PERCENTILE = 95.0


def lip_distance(vertices, landmarks: dict[str, int]) -> np.ndarray:
    """(T, V, 3) vertices and the head's landmarks -> (T,) distance between the inner-lip centres, in the
    vertices' unit (metres for Thunder's heads)."""
    v = np.asarray(vertices.detach().cpu() if hasattr(vertices, "detach") else vertices, dtype=np.float64)
    upper = v[:, landmarks["upper_lip_center"]]
    lower = v[:, landmarks["lower_lip_center"]]
    return np.linalg.norm(upper - lower, axis=-1)


def closure_threshold(distance: np.ndarray, absolute_mm: float | None = None) -> float:
    """The lip distance (metres) below which the lips count as closed."""
    if absolute_mm is not None:
        return absolute_mm / 1000.0
    return RELATIVE_CLOSURE_THRESHOLD * float(np.percentile(distance, OPENING_PERCENTILE))


def _segment(seg) -> tuple[str, float, float]:
    if hasattr(seg, "label"):
        return seg.label, float(seg.start), float(seg.end)
    label, start, end = seg
    return label, float(start), float(end)


def segment_frames(start: float, end: float, n_frames: int, fps: float) -> np.ndarray:
    """Indices of the frames a time span [start, end) holds; the frame nearest its middle if it holds none."""
    first = int(np.ceil(start * fps - 1e-9))
    last = int(np.ceil(end * fps - 1e-9))  # exclusive
    idx = np.arange(max(first, 0), min(last, n_frames))
    if idx.size == 0:
        idx = np.array([min(max(int(round(0.5 * (start + end) * fps)), 0), n_frames - 1)])
    return idx


def bilabial_closures(distance: np.ndarray, phones, fps: float = 25.0,
                      absolute_mm: float | None = None) -> np.ndarray:
    """For each /p b m/ segment of `phones` ((label, start, end) in seconds, or Segment objects): whether the
    lip distance falls below the closure threshold in it. Returns a bool array, one per segment."""
    distance = np.asarray(distance, dtype=np.float64)
    threshold = closure_threshold(distance, absolute_mm)
    closed = []
    for seg in phones:
        label, start, end = _segment(seg)
        if label.upper() in BILABIALS:
            idx = segment_frames(start, end, distance.size, fps)
            closed.append(bool(distance[idx].min() < threshold))
    return np.array(closed, dtype=bool)


def bilabial_closure_rate(distance: np.ndarray, phones, fps: float = 25.0,
                          absolute_mm: float | None = None) -> float:
    """The fraction of /p b m/ segments in which the lips close (NaN when there are none)."""
    closed = bilabial_closures(distance, phones, fps, absolute_mm)
    return float(closed.mean()) if closed.size else float("nan")
