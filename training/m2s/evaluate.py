"""M2S scores: unit accuracy and mel L1 on a motion against the clip's own units and mel.

A score means something only against contrasts, so every evaluation also scores, for the same audio:
- "other_clip": the motion of another clip (another sentence), cut or repeated to the same length;
- "shifted": the clip's own motion, 200 ms (5 frames) late.
A model that hears the lips scores far better on "true" than on either.
"""

from __future__ import annotations

import numpy as np
import torch

from training.m2s.data import split_motion

SHIFT_FRAMES = 5  # 200 ms at 25 fps


def _score(m2s, motion: np.ndarray, ex) -> tuple[float, float, int]:
    expression, jaw = split_motion(torch.from_numpy(motion)[None], m2s.features.n_expression)
    units, mel = m2s.from_motion(expression, jaw)
    correct = (units[0].argmax(-1).numpy() == ex.units).sum()
    mel_l1 = (mel[0] - torch.from_numpy(ex.mel)).abs().mean().item()
    return float(correct), mel_l1, len(ex.units)


@torch.no_grad()
def evaluate_m2s(m2s, examples, seed: int = 0) -> dict[str, dict[str, float]]:
    """{"true"|"other_clip"|"shifted": {"unit_accuracy", "mel_l1"}} of an M2S model over the examples."""
    was_training = m2s.training
    m2s.eval()
    rng = np.random.default_rng(seed)
    totals = {k: [0.0, 0.0, 0] for k in ("true", "other_clip", "shifted")}
    for ex in examples:
        n = ex.n_frames
        others = [j for j in range(len(examples)) if examples[j].clip_id != ex.clip_id]
        other = examples[int(rng.choice(others))] if others else ex
        repeats = -(-n // other.n_frames)
        variants = {
            "true": ex.motion,
            "other_clip": np.concatenate([other.motion] * repeats)[:n],
            "shifted": np.concatenate([np.repeat(ex.motion[:1], SHIFT_FRAMES, 0), ex.motion])[:n],
        }
        for name, motion in variants.items():
            correct, mel_l1, count = _score(m2s, np.ascontiguousarray(motion), ex)
            totals[name][0] += correct
            totals[name][1] += mel_l1 * count
            totals[name][2] += count
    m2s.train(was_training)
    return {k: {"unit_accuracy": c / max(n, 1), "mel_l1": m / max(n, 1)} for k, (c, m, n) in totals.items()}


def score_checkpoint(checkpoint, corpus_dir, split: str = "test", head_spec: str = "builtin",
                     clean_only: bool = False) -> dict:
    """Scores of a saved M2S model on one split of a corpus (its clips with clean audio only, with
    `clean_only`: the mel M2S learns is the clean speech's), with the contrasts and the chance level."""
    from backend.head import load_head
    from training.corpus.format import open_corpus
    from backend.m2s import load_m2s
    from training.m2s.data import make_examples
    from training.m2s.units import unit_source_from_config

    head = load_head(head_spec)
    m2s = load_m2s(checkpoint, head)
    corpus = open_corpus(corpus_dir, full_check=False)
    units = unit_source_from_config(m2s.config["units"])
    metas = [m for m in corpus.split(split) if m.clean_audio or not clean_only]
    examples = make_examples((corpus.clip(m.id) for m in metas), units)
    scores = evaluate_m2s(m2s, examples)
    counts = np.bincount(np.concatenate([ex.units for ex in examples]), minlength=units.n_units)
    return {**scores, "clips": len(examples), "chance_unit_accuracy": float(counts.max() / counts.sum())}
