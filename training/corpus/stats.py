"""Corpus statistics (`thunder corpus stats DIR`): hours, voices, phone coverage, emotions, and the ground
truth's lips measured with training.metrics (bilabial closure rate, lip-distance range)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import torch

from training.corpus.format import SPLITS, Corpus
from training.corpus.text import PHONES
from training.metrics import bilabial_closures, lip_distance


@torch.no_grad()
def clip_lip_distance(head, clip) -> np.ndarray:
    """(T,) inner-lip distance (metres) of a clip's ground-truth motion on the head."""
    vertices = head(expression=torch.as_tensor(clip.expression), jaw=torch.as_tensor(clip.jaw),
                    neck=torch.as_tensor(clip.neck), eyes=torch.as_tensor(clip.eyes))
    return lip_distance(vertices, head.landmarks)


def corpus_stats(corpus: Corpus, head=None, max_clips: int | None = None, seed: int = 0) -> dict:
    """Statistics of a corpus. With a head, the lips are measured on up to max_clips clips (all by default;
    a seeded random subset otherwise)."""
    hours = defaultdict(float)
    clips = Counter()
    speakers = defaultdict(set)
    groups = defaultdict(set)
    engines = Counter()
    emotions = Counter()
    phones = Counter({p: 0 for p in PHONES})
    for m in corpus.metas:
        hours[m.split] += m.seconds / 3600
        clips[m.split] += 1
        speakers[m.split].add(m.speaker)
        groups[m.split].add(m.extra.get("voice_group", m.speaker))
        engines[(m.voice or {}).get("engine", m.source)] += 1
        emotions[m.emotion["label"]] += 1
        for p in m.phones or []:
            if p.label != "SIL":
                phones[p.label] += 1
    shared = set.intersection(*(groups[s] for s in SPLITS)) if all(groups[s] for s in SPLITS) else set()
    leaks = {(a, b): len(groups[a] & groups[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}
    stats = {
        "clips": dict(clips), "hours": {s: round(hours[s], 3) for s in SPLITS}, "total_hours": round(sum(hours.values()), 3),
        "voice_configurations": {s: len(speakers[s]) for s in SPLITS},
        "voice_groups": {s: len(groups[s]) for s in SPLITS}, "voice_groups_shared_between_splits": leaks,
        "engines": dict(engines), "emotions": dict(emotions),
        "phones_covered": sum(1 for p in PHONES if phones[p] > 0), "phones_total": len(PHONES),
        "phone_counts": dict(sorted(phones.items(), key=lambda kv: kv[1])),
        "skipped_clips": len(corpus.skipped),
    }
    del shared
    if head is not None:
        metas = [m for m in corpus.metas if m.phones]
        if max_clips is not None and len(metas) > max_clips:
            rng = np.random.default_rng(seed)
            metas = [metas[i] for i in sorted(rng.choice(len(metas), max_clips, replace=False))]
        closed, dist_all, per_clip_p95 = [], [], []
        for m in metas:
            clip = corpus.clip(m.id)
            d = clip_lip_distance(head, clip)
            closed.append(bilabial_closures(d, m.phones, m.fps))
            dist_all.append(d)
            per_clip_p95.append(np.percentile(d, 95))
        closed = np.concatenate(closed) if closed else np.zeros(0, bool)
        d = np.concatenate(dist_all) * 1000 if dist_all else np.zeros(1)
        stats["lips"] = {
            "clips_measured": len(metas), "bilabial_segments": int(closed.size),
            "bilabial_closure_rate": round(float(closed.mean()), 4) if closed.size else None,
            "lip_distance_mm": {"min": round(float(d.min()), 2), "p5": round(float(np.percentile(d, 5)), 2),
                                "median": round(float(np.median(d)), 2),
                                "p95": round(float(np.percentile(d, 95)), 2), "max": round(float(d.max()), 2)},
            "clip_p95_opening_mm": {"min": round(1000 * float(np.min(per_clip_p95)), 2) if per_clip_p95 else None,
                                    "max": round(1000 * float(np.max(per_clip_p95)), 2) if per_clip_p95 else None},
        }
    return stats


def format_stats(stats: dict) -> str:
    """The statistics as a short human-readable report."""
    lines = [f"clips        {sum(stats['clips'].values())}  ("
             + ", ".join(f"{s} {stats['clips'].get(s, 0)}" for s in SPLITS) + f"); skipped {stats['skipped_clips']}",
             f"hours        {stats['total_hours']:.3f}  (" + ", ".join(f"{s} {stats['hours'][s]:.3f}" for s in SPLITS) + ")",
             "voices       " + ", ".join(f"{s} {stats['voice_configurations'][s]} configurations in "
                                         f"{stats['voice_groups'][s]} voice groups" for s in SPLITS),
             "split leaks  voice groups shared: " + ", ".join(f"{a}/{b} {n}" for (a, b), n in
                                                            stats["voice_groups_shared_between_splits"].items()),
             "engines      " + ", ".join(f"{k} {v}" for k, v in sorted(stats["engines"].items())),
             "emotions     " + ", ".join(f"{k} {v}" for k, v in sorted(stats["emotions"].items())),
             f"phones       {stats['phones_covered']}/{stats['phones_total']} covered; rarest: "
             + ", ".join(f"{k} {v}" for k, v in list(stats["phone_counts"].items())[:6])]
    lips = stats.get("lips")
    if lips:
        d = lips["lip_distance_mm"]
        lines += [f"lips         measured on {lips['clips_measured']} clips: bilabial closure rate "
                  f"{lips['bilabial_closure_rate']} over {lips['bilabial_segments']} /p b m/ segments",
                  f"lip distance mm: min {d['min']}, p5 {d['p5']}, median {d['median']}, p95 {d['p95']}, "
                  f"max {d['max']}; per-clip 95th percentile {lips['clip_p95_opening_mm']['min']} to "
                  f"{lips['clip_p95_opening_mm']['max']}"]
    return "\n".join(lines)
