"""Seams between sampling windows on long audio: is the frame where a window's new motion starts a jump?

    python -m training.thunder.seams backend/models/thunder --corpus data/corpus --seconds 60

Concatenates test clips into one long recording, samples takes with the model's windows, and compares the
motion between consecutive frames (mean vertex speed over lips and upper face, head rotation included, mm per
frame): the fastest frame of each hand-over stretch (context + 1 frames) against the fastest frame of every
stretch of the same length ("any stretch"). Also samples with no context (each window starts afresh), which
shows what continuing the previous window buys.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from backend.head import load_head
from backend.take_sampling import SamplingSettings, model_settings, window_starts
from backend.thunder_model import load_model
from training import metrics
from training.corpus.format import open_corpus
from training.thunder.evaluate import clip_takes, motion_vertices


def frame_speeds(head, take: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(T - 1,) mean distance (mm) the chosen vertices move from each frame to the next."""
    v = motion_vertices(head, take)[:, indices].numpy()
    return np.linalg.norm(np.diff(v, axis=0), axis=-1).mean(-1) * 1000.0


def measure(model, head, audio: np.ndarray, settings: SamplingSettings, takes: int = 4) -> dict:
    sets = metrics.metric_vertex_sets(head)
    indices = np.concatenate([sets["lips"], sets["upper_face"]])
    sampled = clip_takes(model, head, audio, list(range(takes)), settings)
    n_frames = sampled.shape[1]
    # A seam is the stretch where a later window takes over: from its first frame s (the overlap, where the
    # motion fades from the old window to the new) to s + context, its first frame of its own. Speed index i
    # is the move into frame i + 1, so the stretch is indices s - 1 .. s + context - 1; take its fastest.
    starts = window_starts(n_frames, settings.window, settings.context)[1:]
    speeds = np.stack([frame_speeds(head, take, indices) for take in sampled])
    at_seams = np.array([speeds[:, s - 1:s + settings.context].max(1) for s in starts]).ravel()
    seams = starts
    # The same figure for every stretch of the same length: what a seam should be compared with.
    span = settings.context + 1
    ordinary = np.stack([speeds[:, i:i + span].max(1) for i in range(speeds.shape[1] - span + 1)])
    return {"frames": n_frames, "seams": len(seams), "median_speed_mm": float(np.median(speeds)),
            "median_stretch_max_mm": float(np.median(ordinary)),
            "p95_speed_mm": float(np.percentile(speeds, 95)), "median_seam_speed_mm": float(np.median(at_seams)),
            "max_seam_speed_mm": float(at_seams.max()) if len(at_seams) else float("nan"),
            "seam_to_stretch_ratio": float(np.median(at_seams) / np.median(ordinary))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--takes", type=int, default=4)
    parser.add_argument("--head", default="builtin")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    head = load_head(args.head)
    model = load_model(args.checkpoint, head)
    corpus = open_corpus(args.corpus, full_check=False)
    pieces, total = [], 0.0
    for meta in corpus.split("test"):
        if total >= args.seconds:
            break
        pieces.append(corpus.clip(meta.id).audio)
        total += meta.seconds
    audio = np.concatenate(pieces)
    settings = model_settings(model)
    print(f"{len(audio) / 16000:.1f} s of test speech ({len(pieces)} clips), {args.takes} takes, window "
          f"{settings.window} frames, context {settings.context}")
    print(f"{'':<18}{'seams':>6}{'median mm/frame':>16}{'p95':>7}{'any stretch':>12}{'at seams':>10}"
          f"{'max at seam':>12}{'seam/stretch':>13}")
    for name, s in (("with context", settings), ("without context", dataclasses.replace(settings, context=0))):
        r = measure(model, head, audio, s, args.takes)
        print(f"{name:<18}{r['seams']:>6}{r['median_speed_mm']:>16.3f}{r['p95_speed_mm']:>7.3f}"
              f"{r['median_stretch_max_mm']:>12.3f}{r['median_seam_speed_mm']:>10.3f}{r['max_seam_speed_mm']:>12.3f}"
              f"{r['seam_to_stretch_ratio']:>13.2f}")


if __name__ == "__main__":
    main()
