"""Range resample and constraints, measured: are the kept frames the old take's, is either edge a seam, are
the constraints kept?

    python -m training.thunder.range_seams [--audio SPEECH.wav] [--ranges 6] [--seconds 2]

Generates one take of the audio (default: 60 s of espeak-ng speech, as the bench makes it), resamples
`--ranges` ranges of `--seconds` spread over it (each with its own seed, all parts, then lips only), and
reports: whether every frame outside the range (and every channel outside the part) is the old take's bit for
bit; the seam figure of `training/thunder/seams.py` at both edges (the fastest frame of the hand-over stretch,
context + 1 frames around the edge, against the fastest frame of every stretch of that length, mm per frame
over the lips and upper face; <= RATIO_TARGET); then the constraints: a mouth closed hold (largest lip gap
and jaw angle over the held frames), a smile key (its value at the keyed frame), an eyes-open hold (largest
eyeBlink weight), each against its tolerance.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from backend import directing
from backend.generate import Generator
from backend.take_file import take_vertices
from training import metrics
from training.thunder.seams import frame_speeds

RATIO_TARGET = 1.5
# Tolerances of the constraints (the sampler imposes them exactly on the 25 fps frames; these allow for
# float32 and the frame-rate conversion).
JAW_TOLERANCE = 1e-4        # radians
LIP_GAP_TOLERANCE_MM = 1.0  # the inner-lip gap of the head at rest with the jaw closed is below this
KEY_TOLERANCE = 1e-4
BLINK_TOLERANCE = 1e-4


def edge_ratio(head, old, new_takes, edges, span: int, indices) -> dict:
    """The seam figure: the fastest move in the `span`-frame stretch around each edge of each new take,
    against the median of the fastest move of every `span`-frame stretch of the old take."""
    ordinary_speeds = frame_speeds(head, _packed(old), indices)
    ordinary = np.median([ordinary_speeds[i:i + span].max() for i in range(len(ordinary_speeds) - span + 1)])
    at_edges = []
    for take, (start, end) in zip(new_takes, edges):
        speeds = frame_speeds(head, _packed(take), indices)
        for edge in (start, end):   # speed index i is the move into frame i + 1: the move into `edge` is edge - 1
            lo = max(0, edge - 1 - span // 2)
            at_edges.append(speeds[lo:lo + span].max())
    return {"ordinary_mm": float(ordinary), "median_edge_mm": float(np.median(at_edges)),
            "max_edge_mm": float(np.max(at_edges)), "ratio": float(np.median(at_edges) / ordinary)}


def _packed(take) -> np.ndarray:
    return np.concatenate([take.expression, take.jaw, take.neck, take.eyes], axis=1)


def kept_exactly(old, new, start: int, end: int, free_channels: np.ndarray) -> bool:
    a, b = _packed(old), _packed(new)
    outside = np.ones(a.shape, dtype=bool)
    outside[start:end] = ~free_channels
    return bool(np.array_equal(a[outside], b[outside]))


def measure(generator: Generator, audio, ranges: int = 6, seconds: float = 2.0, fps: float = 25.0, seed: int = 0,
            log=print) -> dict:
    head = generator.head
    sets = metrics.metric_vertex_sets(head)
    indices = np.concatenate([sets["lips"], sets["upper_face"]])
    old = generator.generate(audio, seeds=[seed], fps=fps)[0]
    length = int(round(seconds * fps))
    starts = np.linspace(length, old.n_frames - 2 * length, ranges).astype(int)
    span = generator.default_settings.context + 1
    groups = directing.channel_groups(head.expression_names)
    result = {"frames": old.n_frames, "range_frames": length}
    for only in (None, "lips"):
        free = groups[only] if only else np.ones(_packed(old).shape[1], dtype=bool)
        news, edges, exact = [], [], True
        for k, start in enumerate(starts):
            new = generator.resample_range(old, audio, int(start), int(start) + length, only=only,
                                           seeds=[seed + 100 + k])[0]
            exact &= kept_exactly(old, new, int(start), int(start) + length, free)
            news.append(new)
            edges.append((int(start), int(start) + length))
        figure = edge_ratio(head, old, news, edges, span, indices)
        figure["kept_bit_identical"] = exact
        result[only or "all"] = figure
        log(f"range resample ({only or 'all parts'}): {ranges} x {length} frames; kept frames bit-identical: "
            f"{exact}; edge {figure['median_edge_mm']:.3f} mm/frame (max {figure['max_edge_mm']:.3f}) vs any "
            f"stretch {figure['ordinary_mm']:.3f}: ratio {figure['ratio']:.2f} (<= {RATIO_TARGET})")
    result["constraints"] = measure_constraints(generator, audio, old, fps, seed, sets, log)
    return result


def measure_constraints(generator, audio, old, fps, seed, sets, log=print) -> dict:
    head = generator.head
    names = list(head.expression_names)
    mid = old.n_frames // 2
    hold = directing.Constraint("hold", pose="mouth_closed", start=mid, end=mid + int(fps))
    key = directing.Constraint("key", name="mouthSmileLeft", value=0.8, frame=mid // 2)
    eyes = directing.Constraint("hold", pose="eyes_open", start=mid // 3, end=mid // 3 + 3 * int(fps))
    take = generator.generate(audio, seeds=[seed], fps=fps, constraints=[hold, key, eyes])[0]
    held = slice(hold.start, hold.end)
    gap = metrics.lip_distance(take_vertices(take, head)[held], head.landmarks) * 1000.0
    old_gap = metrics.lip_distance(take_vertices(old, head)[held], head.landmarks) * 1000.0
    blink = np.abs(take.expression[eyes.start:eyes.end, [names.index(n) for n in names
                                                          if n.startswith("eyeBlink")]]).max()
    figures = {"mouth_closed": {"max_jaw_rad": float(np.abs(take.jaw[held]).max()),
                                "max_lip_gap_mm": float(gap.max()), "old_take_max_lip_gap_mm": float(old_gap.max())},
               "key": {"value": float(take.expression[key.frame, names.index(key.name)]), "wanted": key.value},
               "eyes_open": {"max_blink": float(blink)}}
    figures["kept"] = bool(figures["mouth_closed"]["max_jaw_rad"] <= JAW_TOLERANCE
                           and figures["mouth_closed"]["max_lip_gap_mm"] <= LIP_GAP_TOLERANCE_MM
                           and abs(figures["key"]["value"] - key.value) <= KEY_TOLERANCE
                           and figures["eyes_open"]["max_blink"] <= BLINK_TOLERANCE)
    log(f"hold {hold.describe()}: jaw <= {figures['mouth_closed']['max_jaw_rad']:.2e} rad, lip gap <= "
        f"{figures['mouth_closed']['max_lip_gap_mm']:.2f} mm (the unconstrained take: up to "
        f"{figures['mouth_closed']['old_take_max_lip_gap_mm']:.1f} mm); key {key.describe()}: "
        f"{figures['key']['value']:.4f}; hold {eyes.describe()}: eyeBlink <= "
        f"{figures['eyes_open']['max_blink']:.1e}; all within tolerance: {figures['kept']}")
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", help="a speech file (default: 60 s of espeak-ng speech)")
    parser.add_argument("--checkpoint", help="a THUNDER model (default: the shipped one)")
    parser.add_argument("--ranges", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=25.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    audio = args.audio
    if audio is None:
        from backend.bench import make_speech

        audios, how = make_speech(Path(tempfile.mkdtemp(prefix="thunder-range-")), [60.0])
        audio = audios[60.0]
        print(f"speech: {how}")
    measure(Generator(args.checkpoint, device="cpu"), audio, args.ranges, args.seconds, args.fps)


if __name__ == "__main__":
    main()
