"""The evaluation harness (`thunder eval`): sample takes for every clip of a split (or every audio file of a
folder) and score them with the one metrics module, training/metrics.py.

Faces are measured in the head's own frame (expression, jaw and eyes; the neck rotation left out, see
`face_vertices`); head motion gets its own figure. Per clip, with K takes: LVE (mm), lip-distance L-PCC
and L-CCC against the reference motion (mean over takes), FDD, the bilabial closure rate (pooled over all
/p b m/ segments of all takes), upper-face diversity and lip spread across the takes, and M2S unit accuracy
of the takes. Reference-free figures (closure,
diversity, spread) are all a folder of audio gets; the closure rate needs phone timing, from the corpus's
alignment or from a transcript beside the audio file (NAME.txt, aligned with pocketsphinx).

Rows: the model, the corpus's own motion ("reference", what the metrics say about ground truth) and the
phones-to-visemes baseline (training/baseline.py) when asked.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from backend.audio import frames_for_samples
from backend.motion import pack_motion, unpack_motion
from backend.sampling import SamplingSettings, sample_takes
from training import metrics
from training.m2s.units import PhoneUnits
from training.thunder.data import clip_motion


def clip_takes(model, audio: np.ndarray, seeds, settings: SamplingSettings | None = None) -> np.ndarray:
    """Takes (K, T, D) in the head's parameters for 16 kHz mono audio."""
    features = model.encode(audio)
    return sample_takes(model, features, list(seeds), settings).numpy()


def motion_vertices(head, motion: np.ndarray, neck: bool = True) -> torch.Tensor:
    """Packed motion (T, D) -> vertices (T, V, 3); without `neck`, in the head's own frame."""
    parts = unpack_motion(torch.as_tensor(motion, dtype=torch.float32), head.n_expression)
    if not neck:
        parts = {k: v for k, v in parts.items() if k != "neck"}
    return head(**parts)


def face_vertices(head, motion: np.ndarray) -> torch.Tensor:
    """The vertices every face metric reads: expression, jaw and eyes, without the neck rotation. Head
    motion is free (stochastic) in the data and would swamp lip and brow differences; it is scored on its
    own (`head_motion_spread_deg`)."""
    return motion_vertices(head, motion, neck=False)


@torch.no_grad()
def m2s_unit_accuracy(m2s, takes: np.ndarray, clip) -> float:
    """Mean over takes of M2S's unit accuracy against the clip's aligned phones (phone units)."""
    labels = PhoneUnits().labels(clip)
    correct = total = 0
    for take in takes:
        parts = unpack_motion(torch.as_tensor(take, dtype=torch.float32)[None], m2s.features.n_expression)
        units, _ = m2s.from_motion(parts["expression"], parts["jaw"])
        n = min(units.shape[1], len(labels))
        correct += int((units[0, :n].argmax(-1).numpy() == labels[:n]).sum())
        total += n
    return correct / max(total, 1)


def with_clip_emotion(settings: SamplingSettings | None, model, clip) -> SamplingSettings:
    """The clip's own emotion label and intensity (the corpus sets one per clip; brows and cheeks follow it),
    so takes are compared with a reference made under the same emotion."""
    settings = settings or SamplingSettings(**model.config.get("sampling", {}))
    label = clip.meta.emotion.get("label", "neutral")
    if label not in model.emotions:
        return settings
    return dataclasses.replace(settings, emotion=label, intensity=float(clip.meta.emotion.get("intensity", 0.0)))


class Scores:
    """Accumulates per-clip figures of one row of the table."""

    def __init__(self):
        self.values: dict[str, list[float]] = {}
        self.closed = self.bilabials = 0

    def add(self, **figures):
        for k, v in figures.items():
            if v is not None and np.isfinite(v):
                self.values.setdefault(k, []).append(float(v))

    def summary(self) -> dict:
        out = {k: float(np.mean(v)) for k, v in self.values.items()}
        out["closure_rate"] = self.closed / self.bilabials if self.bilabials else float("nan")
        out["bilabials"] = self.bilabials
        return out


def score_takes(scores: Scores, head, sets, takes_vertices: list, phones, reference=None, m2s_accuracy=None):
    """Add one clip's figures: takes_vertices is a list of (T, V, 3) tensors."""
    for v in takes_vertices:
        if phones:
            closed = metrics.bilabial_closures(metrics.lip_distance(v, head.landmarks), phones)
            scores.closed += int(closed.sum())
            scores.bilabials += len(closed)
    if len(takes_vertices) > 1:
        stacked = torch.stack(takes_vertices)
        scores.add(upper_face_diversity_mm=metrics.take_spread(stacked, sets["upper_face"]),
                   lip_spread_mm=metrics.take_spread(stacked, sets["lips"]))
    if reference is not None:
        rest = torch.from_numpy(head.data.v_template)
        lve, pcc, ccc, fdd = [], [], [], []
        for v in takes_vertices:
            lve.append(metrics.lip_vertex_error(v, reference, sets["lips"]))
            p, c = metrics.lip_sync_correlations(v, reference, head.landmarks)
            pcc.append(p)
            ccc.append(c)
            fdd.append(metrics.upper_face_dynamics_deviation(v, reference, sets["upper_face"], rest))
        scores.add(lve_mm=np.mean(lve), lip_pcc=np.nanmean(pcc), lip_ccc=np.nanmean(ccc), fdd_mm=np.mean(fdd))
    if m2s_accuracy is not None:
        scores.add(m2s_unit_accuracy=m2s_accuracy)


def evaluate_corpus(models: dict, corpus_dir, head, split: str = "test", takes: int = 4, seed: int = 0,
                    settings: SamplingSettings | None = None, m2s=None, baseline: bool = True,
                    reference: bool = True, max_clips: int = 0, progress=None) -> dict:
    """Score every model in `models` ({row name: ThunderModel, or (ThunderModel, SamplingSettings)}) on a
    corpus split, plus the reference motion and the baseline. Returns {"rows": {name: figures}, ...}."""
    models = {name: m if isinstance(m, tuple) else (m, settings) for name, m in models.items()}
    from training.baseline import baseline_motion
    from training.corpus.format import open_corpus

    corpus = open_corpus(corpus_dir, full_check=False)
    metas = corpus.split(split)[: max_clips or None]
    sets = metrics.metric_vertex_sets(head)
    rows = {name: Scores() for name in models}
    if reference:
        rows["reference"] = Scores()
    if baseline:
        rows["phoneme baseline"] = Scores()
    seeds = [seed + k for k in range(takes)]
    seconds = {name: 0.0 for name in models}
    for i, meta in enumerate(metas):
        clip = corpus.clip(meta.id)
        ref_motion = clip_motion(clip)
        ref = face_vertices(head, ref_motion)
        phones = clip.meta.phones
        for name, (model, row_settings) in models.items():
            started = time.perf_counter()
            sampled = clip_takes(model, clip.audio, seeds, with_clip_emotion(row_settings, model, clip))
            seconds[name] += time.perf_counter() - started
            accuracy = m2s_unit_accuracy(m2s, sampled, clip) if m2s is not None else None
            score_takes(rows[name], head, sets, [face_vertices(head, m) for m in sampled], phones, ref, accuracy)
            rows[name].add(head_motion_spread_deg=metrics.head_motion_spread(sampled, head.n_expression))
        if reference:
            accuracy = m2s_unit_accuracy(m2s, ref_motion[None], clip) if m2s is not None else None
            score_takes(rows["reference"], head, sets, [ref], phones, None, accuracy)
        if baseline:
            base = baseline_motion(phones, clip.meta.n_frames, head)
            base_motion = pack_motion(**base)
            accuracy = m2s_unit_accuracy(m2s, base_motion[None], clip) if m2s is not None else None
            score_takes(rows["phoneme baseline"], head, sets, [face_vertices(head, base_motion)], phones, ref,
                        accuracy)
        if progress:
            progress(i + 1, len(metas))
    audio_seconds = sum(m.seconds for m in metas)
    return {"split": split, "clips": len(metas), "audio_seconds": round(audio_seconds, 1), "takes": takes,
            "seed": seed, "settings": (settings or SamplingSettings()).__dict__,
            "sampling_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "rows": {name: s.summary() for name, s in rows.items()}}


def evaluate_folder(models: dict, folder, head, takes: int = 4, seed: int = 0,
                    settings: SamplingSettings | None = None, max_seconds: float = 600.0) -> dict:
    """Reference-free figures on every audio file of a folder (closure needs NAME.txt beside the audio; with
    it, the phoneme baseline gets a row too, driven by the same aligned phones)."""
    from backend.audio_io import load_audio
    from training.baseline import baseline_motion
    from training.corpus.align import align

    models = {name: m if isinstance(m, tuple) else (m, settings) for name, m in models.items()}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
    sets = metrics.metric_vertex_sets(head)
    rows = {name: Scores() for name in models}
    seeds = [seed + k for k in range(takes)]
    for path in files:
        audio = load_audio(path, max_seconds=max_seconds)
        transcript = path.with_suffix(".txt")
        phones = align(audio, transcript.read_text())[1] if transcript.exists() else None
        for name, (model, row_settings) in models.items():
            sampled = clip_takes(model, audio, seeds, row_settings)
            score_takes(rows[name], head, sets, [face_vertices(head, m) for m in sampled], phones)
            rows[name].add(head_motion_spread_deg=metrics.head_motion_spread(sampled, head.n_expression))
        if phones:
            base = baseline_motion(phones, frames_for_samples(len(audio)), head)
            base_motion = pack_motion(**base)
            score_takes(rows.setdefault("phoneme baseline", Scores()), head, sets, [face_vertices(head, base_motion)],
                        phones)
    return {"folder": str(folder), "files": len(files), "takes": takes, "seed": seed,
            "rows": {name: s.summary() for name, s in rows.items()}}


COLUMNS = (("lve_mm", "LVE mm", "{:.2f}"), ("lip_pcc", "L-PCC", "{:.3f}"), ("lip_ccc", "L-CCC", "{:.3f}"),
           ("closure_rate", "closure", "{:.3f}"), ("upper_face_diversity_mm", "UF div mm", "{:.3f}"),
           ("lip_spread_mm", "lip spread mm", "{:.3f}"), ("head_motion_spread_deg", "head spr deg", "{:.2f}"),
           ("fdd_mm", "FDD mm", "{:.3f}"),
           ("m2s_unit_accuracy", "M2S acc", "{:.3f}"))


def format_table(result: dict) -> str:
    rows = result["rows"]
    width = max(len(n) for n in rows) + 2
    lines = [f"{'':<{width}}" + "".join(f"{title:>14}" for _, title, _ in COLUMNS)]
    for name, figures in rows.items():
        cells = []
        for key, _, fmt in COLUMNS:
            v = figures.get(key)
            cells.append(f"{fmt.format(v) if v is not None and np.isfinite(v) else '-':>14}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def write_result(result: dict, path) -> Path:
    from backend.files import write_atomically

    return write_atomically(Path(path), lambda p: p.write_text(json.dumps(result, indent=1)))
