"""Train mesh-to-speech. Read it top to bottom: config, data, model, optimizer, loop, eval, checkpoint.

    thunder m2s train --corpus data/corpus --out runs/m2s            # the default (CPU, < 1 hour)
    thunder m2s train --corpus data/corpus --out runs/m2s --resume   # after a kill: continues exactly

Loss: unit cross-entropy (label smoothing 0.1) + mel L1, Adam with warmup and cosine decay (Choi et al.).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from backend.head import load_head
from backend.checkpoint import save_checkpoint
from backend.errors import ThunderError
from backend.progress import ProgressBar
from training.train_state import load_training_state, save_training_state
from training.corpus.format import open_corpus
from backend.m2s import M2S, M2S_KIND
from training.m2s.data import Augment, augment_features, crop_batch, make_examples, split_motion
from training.m2s.evaluate import evaluate_m2s
from backend.m2s.inputs import MotionFeatures
from training.m2s.loss import mel_weights, unit_and_mel_loss
from backend.m2s.model import M2SConfig, MeshToSpeech
from training.m2s.units import KMeansUnits, PhoneUnits, unit_config
from training.plots import plot_training_log
from training.schedule import warmup_cosine


@dataclasses.dataclass
class M2STrainConfig:
    corpus: str = "data/corpus"
    out: str = "runs/m2s"
    head: str = "builtin"
    model: M2SConfig = dataclasses.field(default_factory=M2SConfig)
    augment: Augment = dataclasses.field(default_factory=Augment)
    steps: int = 3000
    batch_size: int = 16
    window: int = 64              # motion frames per training window (2.56 s)
    lr: float = 1e-3
    warmup: int = 200
    label_smoothing: float = 0.1
    mel_weight: float = 1.0
    degraded_mel_weight: float = 0.0  # the mel L1's weight on clips with degraded audio (training/m2s/loss.py)
    eval_every: int = 500
    log_every: int = 25
    seed: int = 0
    threads: int = 2
    max_clips: int = 0            # 0: all; a small number for smoke tests
    units: str = "phones"         # phones (aligned, offline) | kmeans (over a speech model's features)
    ssl_model: str = ""           # kmeans: a wav2vec 2.0 / HuBERT folder or hub id
    ssl_layer: int = 6            # kmeans: which hidden layer (Choi et al.: HuBERT layer 6)
    kmeans_units: int = 200       # kmeans: how many clusters
    kmeans_clips: int = 200       # kmeans: how many training clips to fit the clusters on


def lr_at(step: int, cfg: M2STrainConfig) -> float:
    return warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps)


def m2s_loss(m2s: M2S, batch, cfg: M2STrainConfig, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    expression, jaw = split_motion(batch["motion"], m2s.features.n_expression)
    with torch.no_grad():
        features = augment_features(m2s.features.from_motion(expression, jaw), rng, cfg.augment)
    units, mel = m2s.network(features, batch["lengths"])
    unit_loss, mel_l1 = unit_and_mel_loss(units, mel, batch["units"], batch["mel"], cfg.label_smoothing,
                                          mel_weight=mel_weights(batch["clean_audio"], cfg.degraded_mel_weight))
    return unit_loss + cfg.mel_weight * mel_l1, {"unit_ce": unit_loss.item(), "mel_l1": mel_l1.item()}


def train(cfg: M2STrainConfig, resume: bool = False, progress: bool = True) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # 1. Data: motion, unit labels and mel for the training and validation voices.
    head = load_head(cfg.head)
    corpus = open_corpus(cfg.corpus, full_check=False)
    features = MotionFeatures(cfg.model.input, head)
    train_metas = corpus.split("train")[: cfg.max_clips or None]
    if cfg.units == "kmeans":
        fit_clips = (corpus.clip(m.id) for m in train_metas[: cfg.kmeans_clips])
        units = KMeansUnits.fit(cfg.ssl_model, cfg.ssl_layer, fit_clips, cfg.kmeans_units, seed=cfg.seed)
    else:
        units = PhoneUnits()
    cfg.model.n_units = units.n_units
    val_metas = corpus.split("val")[: max(2, cfg.max_clips // 4) if cfg.max_clips else None]
    train_set = make_examples((corpus.clip(m.id) for m in train_metas), units)
    val_set = make_examples((corpus.clip(m.id) for m in val_metas), units)
    if not train_set:
        raise ThunderError(f"{cfg.corpus}: the corpus has no training clips")

    # 2. Model and optimizer (resumed exactly: weights, optimizer moments, step, log and RNG).
    model = MeshToSpeech(cfg.model, features.dim)
    m2s = M2S(features, model, _config_json(cfg, head, features, units))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    step, log = 0, []
    if resume and (out / "train_state.pt").exists():
        step, log, rng = load_training_state(out, model, optimizer)

    # 3. Loop.
    started = time.time()
    bar = ProgressBar(cfg.steps, label="m2s") if progress else None
    model.train()
    while step < cfg.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = crop_batch(train_set, cfg.batch_size, cfg.window, rng, cfg.augment)
        loss, parts = m2s_loss(m2s, batch, cfg, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.append({"step": step, "loss": loss.item(), **parts, "lr": lr_at(step - 1, cfg),
                        "seconds": round(time.time() - started, 1)})
        # 4. Eval and checkpoint (atomically; the training state makes --resume exact).
        if step % cfg.eval_every == 0 or step == cfg.steps:
            if val_set:
                log[-1]["val"] = evaluate_m2s(m2s, val_set)["true"]  # restores training mode itself
            save_checkpoint(out, model, m2s.config)
            save_training_state(out, model, optimizer, step, log, rng)
        if bar:
            bar.update(step, f"loss {loss.item():.3f}")
    if bar:
        bar.close()
    (out / "log.json").write_text(json.dumps(log, indent=1))
    plot_training_log(log, out / "training_curves.png", f"M2S ({cfg.model.input} input) on {cfg.corpus}",
                      ("unit_ce", "mel_l1"))
    return out


def _config_json(cfg: M2STrainConfig, head, features: MotionFeatures, units) -> dict:
    return {"kind": M2S_KIND, "version": 1, "model": dataclasses.asdict(cfg.model),
            "input_dim": features.dim, "head": {"name": head.name, "identity": head.identity},
            "units": unit_config(units),
            "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("model",)}}
