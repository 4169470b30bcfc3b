"""The evaluation harness (`thunder eval`): sample takes for every clip of a split (or every audio file of a
folder) and score them with the one metrics module, training/metrics.py.

Faces are measured in the head's own frame (expression, jaw and eyes; the neck rotation left out, see
`face_vertices`); head motion gets its own figure. Per clip, with K takes: LVE (mm), lip-distance L-PCC
and L-CCC against the reference motion (mean over takes), FDD, the bilabial closure rate (pooled over all
/p b m/ segments of all takes), upper-face diversity and lip spread across the takes, and M2S unit accuracy
of the takes. Rows: the model, the corpus's own motion ("reference", what the metrics say about ground
truth) and the phones-to-visemes baseline (training/baseline.py) when asked.

The real-speech mode (`thunder eval --audio FOLDER`, `evaluate_real_speech`) scores a folder of recordings
with transcripts (training/real_speech.py aligns them with pocketsphinx and caches the alignment), where no
reference motion exists. Per model and for the baseline driven by the same alignment, with the lip opening
in mm (training/metrics.py defines every figure): the bilabial closure rate (segment +-1 frame), the
fraction of open vowels that never open past 2 mm, single-frame lip spikes per second, the mean |second
difference| of the opening (and its ratio to the baseline's), the Pearson r of the opening with the audio
envelope (and the baseline's), upper-face spread and head-motion spread between takes, and the blink rate
of every take. Figures are pooled over all clips, per group (sub-folder) and per clip, each from the same
counts (`RealSpeechTally`): closure and open vowels pool segments over takes, spikes per second pool over
the takes' seconds, the second difference over frames; envelope r is the mean over takes and clips; spreads
the mean over clips; a take's blink rate is take k's blinks over all clips per minute of audio.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from backend.audio import audio_envelope, frames_for_samples
from backend.blinks import blink_signal, count_blinks
from backend.motion import pack_motion, unpack_motion
from backend.finishing import finish_takes
from backend.take_sampling import SamplingSettings, model_settings, sample_takes
from training import metrics
from training.m2s.units import PhoneUnits
from training.thunder.data import clip_motion


def clip_takes(model, head, audio: np.ndarray, seeds, settings: SamplingSettings | None = None) -> np.ndarray:
    """Takes (K, T, D) in the head's parameters for 16 kHz mono audio, finished as `thunder generate` makes
    them (backend/finishing.py; settings.smoothing 0 and blinks "model": the raw samples)."""
    settings = settings or model_settings(model)
    features = model.encode(audio)
    motion = sample_takes(model, features, list(seeds), settings, expression_names=head.expression_names).numpy()
    return finish_takes(motion, head, settings, list(seeds), audio)


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
    settings = settings or model_settings(model)
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
                    reference: bool = True, max_clips: int = 0, progress=None, clean_only: bool = False) -> dict:
    """Score every model in `models` ({row name: ThunderModel, or (ThunderModel, SamplingSettings)}) on a
    corpus split, plus the reference motion and the baseline; `clean_only`: only the clips whose speech was
    left as synthesized (no room, noise or codec; the corpus's clean share). Returns {"rows": {name:
    figures}, ...}."""
    models = {name: m if isinstance(m, tuple) else (m, settings) for name, m in models.items()}
    from training.baseline import baseline_motion
    from training.corpus.format import open_corpus

    corpus = open_corpus(corpus_dir, full_check=False)
    metas = [m for m in corpus.split(split) if not clean_only or m.clean_audio]
    metas = metas[: max_clips or None]
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
            sampled = clip_takes(model, head, clip.audio, seeds, with_clip_emotion(row_settings, model, clip))
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
            "seed": seed, "settings": (settings or SamplingSettings()).__dict__, "row_settings": _row_settings(models),
            "sampling_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "rows": {name: s.summary() for name, s in rows.items()}}


@dataclasses.dataclass
class RealSpeechTally:
    """One row's counts and sums over some clips of real speech. Figures per clip, per group and pooled are
    all made from sums of per-clip tallies, so they always agree with each other."""

    clips: int = 0
    seconds: float = 0.0         # audio seconds
    take_seconds: float = 0.0    # audio seconds summed over takes
    closed: int = 0
    bilabials: int = 0
    never_open: int = 0
    open_vowels: int = 0
    vowel_peak_sum_mm: float = 0.0  # the widest opening of each open vowel, summed over them
    spikes: int = 0
    second_diff_sum: float = 0.0  # mm, summed over the frames that have two neighbours
    second_diff_frames: int = 0
    envelope_r_sum: float = 0.0
    envelope_r_count: int = 0
    spread_sum: float = 0.0       # upper-face spread, mm, summed over clips with >= 2 takes
    head_spread_sum: float = 0.0
    spread_clips: int = 0
    blinks: list = dataclasses.field(default_factory=list)  # per take index, summed over clips

    def __add__(self, other: "RealSpeechTally") -> "RealSpeechTally":
        out = RealSpeechTally()
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "blinks":
                n = max(len(a), len(b))
                value = [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]
            else:
                value = a + b
            setattr(out, f.name, value)
        return out

    def figures(self, baseline: "RealSpeechTally | None" = None) -> dict:
        def ratio(a, b):
            return a / b if b else float("nan")

        out = {"clips": self.clips, "seconds": round(self.seconds, 2), "bilabials": self.bilabials,
               "open_vowels": self.open_vowels,
               "closure_rate": ratio(self.closed, self.bilabials),
               "never_open_fraction": ratio(self.never_open, self.open_vowels),
               "open_vowel_peak_mm": ratio(self.vowel_peak_sum_mm, self.open_vowels),
               "spikes_per_s": ratio(self.spikes, self.take_seconds),
               "second_diff_mm": ratio(self.second_diff_sum, self.second_diff_frames),
               "envelope_r": ratio(self.envelope_r_sum, self.envelope_r_count)}
        if self.spread_clips:
            out["upper_face_spread_mm"] = self.spread_sum / self.spread_clips
            out["head_motion_spread_deg"] = self.head_spread_sum / self.spread_clips
        if self.blinks:
            rates = [60.0 * b / self.seconds for b in self.blinks] if self.seconds else []
            out["blinks_per_min"] = rates
            out["blinks_per_min_min"], out["blinks_per_min_max"] = (min(rates), max(rates)) if rates else (None,) * 2
        if baseline is not None and baseline is not self:
            base = baseline.figures()
            out["second_diff_vs_baseline"] = ratio(out["second_diff_mm"], base["second_diff_mm"])
            out["envelope_r_baseline"] = base["envelope_r"]
        return out


def real_speech_tally(head, sets, clip, takes_vertices: list, expressions=None,
                      motion: np.ndarray | None = None) -> RealSpeechTally:
    """One clip's tally: takes_vertices holds each take's (T, V, 3) face vertices (neck removed),
    expressions each take's (T, E) expression weights (None: no blinks, as for the baseline), motion the
    packed takes (K, T, D) for head motion."""
    tally = RealSpeechTally(clips=1, seconds=clip.seconds)
    envelope = None
    for v in takes_vertices:
        distance = metrics.lip_distance(v, head.landmarks)
        opening = distance * metrics.MM
        if envelope is None:
            envelope = audio_envelope(clip.audio, len(opening))
        closed = metrics.bilabial_closures(distance, clip.phones, margin_frames=metrics.REAL_SPEECH_CLOSURE_MARGIN)
        never = metrics.open_vowels_never_open(distance, clip.phones)
        peaks = metrics.open_vowel_peaks_mm(distance, clip.phones)
        tally.take_seconds += clip.seconds
        tally.closed += int(closed.sum())
        tally.bilabials += closed.size
        tally.never_open += int(never.sum())
        tally.open_vowels += never.size
        tally.vowel_peak_sum_mm += float(peaks.sum())
        tally.spikes += metrics.lip_spikes(opening).size
        frames = max(len(opening) - 2, 0)
        tally.second_diff_sum += metrics.mean_abs_second_difference(opening) * frames
        tally.second_diff_frames += frames
        r = metrics.envelope_correlation(opening, envelope)
        if np.isfinite(r):
            tally.envelope_r_sum += r
            tally.envelope_r_count += 1
    if len(takes_vertices) > 1:
        tally.spread_sum = metrics.take_spread(torch.stack(takes_vertices), sets["upper_face"])
        tally.head_spread_sum = metrics.head_motion_spread(motion, head.n_expression) if motion is not None else 0.0
        tally.spread_clips = 1
    if expressions is not None:
        signals = [blink_signal(e, head.expression_names) for e in expressions]
        if all(s is not None for s in signals):
            tally.blinks = [count_blinks(s) for s in signals]
    return tally


BASELINE_ROW = "phoneme baseline"


def evaluate_real_speech(models: dict, folder, head, takes: int = 4, seed: int = 0,
                         settings: SamplingSettings | None = None, max_seconds: float = 600.0,
                         cache_dir=None, baseline: bool = True, progress=None) -> dict:
    """The real-speech figures (training/metrics.py) of every model in `models` ({row name: ThunderModel, or
    (ThunderModel, SamplingSettings)}) and of the phones-to-visemes baseline, on a folder of audio with
    transcripts (training/real_speech.py), aligned once and cached in `cache_dir`. Returns {"rows": {name:
    pooled figures}, "groups": {group: {name: figures}}, "per_clip": [...], ...}."""
    from training.baseline import baseline_motion
    from training.real_speech import load_real_speech

    models = {name: m if isinstance(m, tuple) else (m, settings) for name, m in models.items()}
    clips = load_real_speech(folder, cache_dir, max_seconds,
                             progress=(lambda i, n: progress("align", i, n)) if progress else None)
    sets = metrics.metric_vertex_sets(head)
    seeds = [seed + k for k in range(takes)]
    seconds = {name: 0.0 for name in models}
    per_clip: list[tuple] = []  # (clip, {row: tally})
    for i, clip in enumerate(clips):
        tallies = {}
        for name, (model, row_settings) in models.items():
            started = time.perf_counter()
            sampled = clip_takes(model, head, clip.audio, seeds, row_settings)
            seconds[name] += time.perf_counter() - started
            expressions = [unpack_motion(m, head.n_expression)["expression"] for m in sampled]
            tallies[name] = real_speech_tally(head, sets, clip, [face_vertices(head, m) for m in sampled],
                                              expressions, sampled)
        if baseline:
            base = pack_motion(**baseline_motion(clip.phones, frames_for_samples(clip.audio.size), head))
            tallies[BASELINE_ROW] = real_speech_tally(head, sets, clip, [face_vertices(head, base)])
        per_clip.append((clip, tallies))
        if progress:
            progress("generate", i + 1, len(clips))

    def figures(tallies: dict) -> dict:
        return {name: t.figures(tallies.get(BASELINE_ROW)) for name, t in tallies.items()}

    def total(items) -> dict:
        out: dict = {}
        for _clip, tallies in items:
            for name, t in tallies.items():
                out[name] = out[name] + t if name in out else t
        return out

    groups = sorted({clip.group for clip in clips})
    return {"mode": "real speech", "folder": str(folder), "clips": len(clips),
            "audio_seconds": round(sum(c.seconds for c in clips), 1), "takes": takes, "seed": seed,
            "bilabials": sum(len(metrics.segments_of(c.phones, metrics.BILABIALS)) for c in clips),
            "open_vowels": sum(len(metrics.segments_of(c.phones, metrics.OPEN_VOWELS)) for c in clips),
            "settings": (settings or SamplingSettings()).__dict__, "row_settings": _row_settings(models),
            "alignment_cache": str(cache_dir or ""),
            "sampling_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "rows": figures(total(per_clip)),
            "groups": {g: figures(total([item for item in per_clip if item[0].group == g])) for g in groups},
            "per_clip": [{"id": clip.id, "group": clip.group, "seconds": round(clip.seconds, 2),
                          "rows": figures(tallies)} for clip, tallies in per_clip]}


COLUMNS = (("lve_mm", "LVE mm", "{:.2f}"), ("lip_pcc", "L-PCC", "{:.3f}"), ("lip_ccc", "L-CCC", "{:.3f}"),
           ("closure_rate", "closure", "{:.3f}"), ("upper_face_diversity_mm", "UF div mm", "{:.3f}"),
           ("lip_spread_mm", "lip spread mm", "{:.3f}"), ("head_motion_spread_deg", "head spr deg", "{:.2f}"),
           ("fdd_mm", "FDD mm", "{:.3f}"),
           ("m2s_unit_accuracy", "M2S acc", "{:.3f}"))


def _row_settings(models: dict) -> dict:
    """{row: the sampling settings its takes were made with} (each model's own where a row gave none)."""
    return {name: dataclasses.asdict(settings or model_settings(model)) for name, (model, settings) in models.items()}


def _table(rows: dict, columns, label: str = "") -> str:
    """A fixed-width table: one line per row name, one cell per (key, title, format) column; '-' for a
    figure a row does not have."""
    width = max([len(n) for n in rows] + [len(label)]) + 2
    lines = [f"{label:<{width}}" + "".join(f"{title:>14}" for _, title, _ in columns)]
    for name, figures in rows.items():
        cells = []
        for key, _, fmt in columns:
            v = figures.get(key)
            text = fmt(figures) if callable(fmt) else (
                fmt.format(v) if v is not None and np.isfinite(v) else "-")
            cells.append(f"{text:>14}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def format_table(result: dict) -> str:
    if result.get("mode") == "real speech":
        return format_real_speech_table(result)
    return _table(result["rows"], COLUMNS)


def _blink_range(figures: dict) -> str:
    lo, hi = figures.get("blinks_per_min_min"), figures.get("blinks_per_min_max")
    return f"{lo:.1f}-{hi:.1f}" if lo is not None and hi is not None else "-"


REAL_SPEECH_COLUMNS = (("closure_rate", "closure", "{:.3f}"), ("never_open_fraction", "never-open", "{:.1%}"),
                       ("open_vowel_peak_mm", "vowel mm", "{:.1f}"),
                       ("spikes_per_s", "spikes/s", "{:.2f}"), ("second_diff_mm", "|d2| mm", "{:.3f}"),
                       ("second_diff_vs_baseline", "|d2| / base", "{:.2f}"), ("envelope_r", "envelope r", "{:.3f}"),
                       ("upper_face_spread_mm", "UF spread mm", "{:.3f}"),
                       ("blinks", "blinks/min", _blink_range), ("head_motion_spread_deg", "head spr deg", "{:.2f}"))


def format_real_speech_table(result: dict, per_clip: bool = False) -> str:
    """The pooled rows, then each group's, then (per_clip) each clip's."""
    blocks = [_table(result["rows"], REAL_SPEECH_COLUMNS, "all clips")]
    if len(result["groups"]) > 1:
        for group, rows in result["groups"].items():
            first = next(iter(rows.values()))
            blocks.append(_table(rows, REAL_SPEECH_COLUMNS, f"{group} ({first['clips']} clips, "
                                                             f"{first['seconds']:.0f} s)"))
    if per_clip:
        for clip in result["per_clip"]:
            blocks.append(_table(clip["rows"], REAL_SPEECH_COLUMNS, f"{clip['id']} ({clip['seconds']:.1f} s)"))
    return "\n\n".join(blocks)


def write_result(result: dict, path) -> Path:
    from backend.files import write_atomically

    return write_atomically(Path(path), lambda p: p.write_text(json.dumps(result, indent=1)))
