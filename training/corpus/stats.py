"""Corpus statistics (`thunder corpus stats DIR`): hours, voices, phone coverage, emotions, the recording
acoustics mix, the free motion (blink rates, brow activity, how much the upper face differs between clips), and
the ground truth's lips measured with training.metrics (bilabial closure rate, lip-distance range)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import torch

from backend.blinks import count_blinks
from training.corpus.format import SPLITS, Corpus
from training.corpus.text import PHONES
from training.metrics import bilabial_closures, lip_distance, metric_vertex_sets, take_spread

UPPER_FACE_PAIRS = 200  # random clip pairs for the upper-face spread between clips


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
    acoustics = Counter()
    stages = Counter()
    snrs, rt60s = [], []
    for m in corpus.metas:
        acoustics["clean" if m.clean_audio else "degraded"] += 1
        if not m.clean_audio:
            a = m.extra["acoustics"]
            for stage in ("room", "noise", "microphone", "codec"):
                if stage in a:
                    stages[f"{stage}:{a[stage]['kind']}"] += 1
            stages["clipped"] += "clipping_percentile" in a
            snrs += [a["noise"]["snr_db"]] if "noise" in a else []
            rt60s += [a["room"]["rt60"]] if "room" in a else []
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
        "acoustics": {"clips": dict(acoustics), "stages": dict(sorted(stages.items())),
                      "unrecorded": sum(1 for m in corpus.metas if "acoustics" not in m.extra),
                      "snr_db": _quantiles(snrs), "rt60_s": _quantiles(rt60s)},
    }
    del shared
    stats["free_motion"] = free_motion_stats(corpus, head, max_clips, seed)
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


def _quantiles(values) -> dict | None:
    if not len(values):
        return None
    v = np.asarray(values, dtype=np.float64)
    return {q: round(float(np.percentile(v, p)), 3) for q, p in (("p10", 10), ("median", 50), ("p90", 90))}


def free_motion_stats(corpus: Corpus, head=None, max_clips: int | None = None, seed: int = 0) -> dict | None:
    """Blinks per minute per clip (clips of 3 s and more, counted on eyeBlinkLeft), the within-clip s.d. of
    browInnerUp, and with a head the upper-face spread between clips: take_spread (mm, neck and jaw removed) of
    random clip pairs over their common length, as `thunder eval` measures it between takes of one audio."""
    names = list(corpus.header.get("expression_names", []))
    if "eyeBlinkLeft" not in names or not corpus.metas:
        return None
    metas = corpus.metas
    if max_clips is not None and len(metas) > max_clips:
        rng = np.random.default_rng(seed)
        metas = [metas[i] for i in sorted(rng.choice(len(metas), max_clips, replace=False))]
    blink, brow = names.index("eyeBlinkLeft"), names.index("browInnerUp") if "browInnerUp" in names else None
    rates, brow_sd, clips = [], [], []
    for m in metas:
        clip = corpus.clip(m.id)
        clips.append(clip)
        if m.seconds >= 3.0:
            rates.append(count_blinks(clip.expression[:, blink]) / (m.seconds / 60))
        if brow is not None:
            brow_sd.append(float(clip.expression[:, brow].std()))
    out = {"clips_measured": len(metas), "blinks_per_minute": _quantiles(rates),
           "blink_rate_between_10_and_25": round(float(np.mean([(10 <= r <= 25) for r in rates])), 3) if rates else None,
           "browInnerUp_sd": _quantiles(brow_sd)}
    if head is not None and len(clips) >= 2:
        out["upper_face_spread_between_clips_mm"] = upper_face_spread_between_clips(head, clips, seed)
    return out


@torch.no_grad()
def upper_face_spread_between_clips(head, clips, seed: int = 0, pairs: int = UPPER_FACE_PAIRS) -> float:
    """Mean take_spread (mm) of the upper face over random pairs of clips, on their common first frames, with
    the neck and jaw at rest (so only the face itself counts)."""
    indices = metric_vertex_sets(head)["upper_face"]
    rng = np.random.default_rng([seed, 0x5EAD])
    spreads = []
    for _ in range(pairs):
        i, j = rng.choice(len(clips), 2, replace=False)
        n = min(clips[i].expression.shape[0], clips[j].expression.shape[0], 100)
        takes = []
        for c in (clips[i], clips[j]):
            expression = torch.as_tensor(c.expression[:n])
            rest = torch.zeros(n, 3)
            takes.append(head(expression=expression, jaw=rest, neck=rest, eyes=torch.zeros(n, 6)).numpy())
        spreads.append(take_spread(np.stack(takes), indices))
    return round(float(np.mean(spreads)), 3)


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
    a = stats["acoustics"]
    lines.append("acoustics    " + ", ".join(f"{k} {v}" for k, v in sorted(a["clips"].items()))
                 + (f" ({a['unrecorded']} made before augmentation)" if a["unrecorded"] else ""))
    if a["stages"]:
        lines.append("  stages     " + ", ".join(f"{k} {v}" for k, v in a["stages"].items()))
        for key, name in (("snr_db", "noise SNR dB"), ("rt60_s", "room RT60 s")):
            if a[key]:
                lines.append(f"  {name}: p10 {a[key]['p10']}, median {a[key]['median']}, p90 {a[key]['p90']}")
    fm = stats.get("free_motion")
    if fm:
        b, brow = fm["blinks_per_minute"], fm["browInnerUp_sd"]
        lines.append(f"free motion  measured on {fm['clips_measured']} clips: blinks/min (clips >= 3 s) "
                     + (f"p10 {b['p10']:.1f}, median {b['median']:.1f}, p90 {b['p90']:.1f}; "
                        f"{fm['blink_rate_between_10_and_25']:.0%} of clips at 10-25" if b else "none measured"))
        if brow:
            lines.append(f"  browInnerUp s.d. within a clip: p10 {brow['p10']}, median {brow['median']}, "
                         f"p90 {brow['p90']}")
        if "upper_face_spread_between_clips_mm" in fm:
            lines.append(f"  upper-face spread between clips (neck and jaw removed): "
                         f"{fm['upper_face_spread_between_clips_mm']} mm")
    lips = stats.get("lips")
    if lips:
        d = lips["lip_distance_mm"]
        lines += [f"lips         measured on {lips['clips_measured']} clips: bilabial closure rate "
                  f"{lips['bilabial_closure_rate']} over {lips['bilabial_segments']} /p b m/ segments",
                  f"lip distance mm: min {d['min']}, p5 {d['p5']}, median {d['median']}, p95 {d['p95']}, "
                  f"max {d['max']}; per-clip 95th percentile {lips['clip_p95_opening_mm']['min']} to "
                  f"{lips['clip_p95_opening_mm']['max']}"]
    return "\n".join(lines)
