"""Pretrain the offline audio encoder on phone posteriors, so THUNDER-F has a frozen speech encoder without
downloading wav2vec 2.0.

    thunder encoder train --corpus data/corpus --out runs/audio_encoder

The encoder (backend.audio_encoders.MelEncoder) gets a linear phone classifier on top (2 phones per motion
frame, the 50 Hz units M2S uses) and learns to tell the corpus's aligned phones apart. Voices are many but
synthetic, so training hears them through a rough room: random gain, background noise at 10-40 dB SNR and a
random spectral tilt, which is what a real microphone changes. The classifier is dropped afterwards; the
checkpoint holds the encoder only.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.audio import SAMPLES_PER_FRAME, UNITS_PER_FRAME, log_mel_spectrogram
from backend.audio_encoders import MelEncoder, build_encoder
from backend.checkpoint import load_weights, read_checkpoint, save_checkpoint
from backend.errors import ThunderError
from backend.progress import ProgressBar
from training.corpus.format import open_corpus
from training.m2s.loss import IGNORE
from training.m2s.units import PhoneUnits
from training.schedule import warmup_cosine

ENCODER_KIND = "thunder-audio-encoder"


@dataclasses.dataclass
class EncoderTrainConfig:
    corpus: str = "data/corpus"
    out: str = "runs/audio_encoder"
    width: int = 128
    steps: int = 2000
    batch_size: int = 32
    window: int = 64           # motion frames per crop
    lr: float = 2e-3
    warmup: int = 100
    noise_prob: float = 0.7
    snr_db: tuple = (10.0, 40.0)
    tilt: float = 1.5          # log-mel units from the lowest to the highest band, at most
    seed: int = 0
    threads: int = 2
    max_clips: int = 0


def roughen(wave: torch.Tensor, cfg: EncoderTrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """Random gain and background noise at a random SNR (white or brown), per item."""
    out = wave * torch.from_numpy(10 ** (rng.uniform(-20, 6, (len(wave), 1)) / 20)).float()
    for b in range(len(out)):
        if rng.random() < cfg.noise_prob:
            noise = torch.from_numpy(rng.standard_normal(out.shape[1])).float()
            if rng.random() < 0.5:  # brown: low-frequency hum and rumble
                noise = torch.cumsum(noise, 0)
                noise = noise - torch.nn.functional.avg_pool1d(noise[None, None], 801, 1, 400,
                                                               count_include_pad=False)[0, 0]
            power = out[b].square().mean().clamp_min(1e-8)
            snr = 10 ** (rng.uniform(*cfg.snr_db) / 10)
            out[b] += noise * (power / snr / noise.square().mean().clamp_min(1e-12)).sqrt()
    return out


def tilt_log_mel(log_mel: torch.Tensor, cfg: EncoderTrainConfig, rng: np.random.Generator) -> torch.Tensor:
    slope = torch.from_numpy(rng.uniform(-cfg.tilt, cfg.tilt, (len(log_mel), 1, 1))).float()
    return log_mel + slope * torch.linspace(-0.5, 0.5, log_mel.shape[-1])


def _crops(clips, units, n: int, window: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    waves = torch.zeros(n, window * SAMPLES_PER_FRAME)
    labels = torch.full((n, window * UNITS_PER_FRAME), IGNORE, dtype=torch.long)
    for b, i in enumerate(rng.integers(0, len(clips), n)):
        wave, lab = clips[i]
        frames = len(lab) // UNITS_PER_FRAME
        span = min(window, frames)
        start = int(rng.integers(0, frames - span + 1))
        piece = wave[start * SAMPLES_PER_FRAME:(start + span) * SAMPLES_PER_FRAME]
        waves[b, : len(piece)] = torch.from_numpy(piece)
        labels[b, : span * UNITS_PER_FRAME] = torch.from_numpy(
            lab[start * UNITS_PER_FRAME:(start + span) * UNITS_PER_FRAME])
    return waves, labels


def phone_examples(corpus, metas, units: PhoneUnits) -> list[tuple[np.ndarray, np.ndarray]]:
    """(audio padded to the clip's frames, 50 Hz phone labels) per clip."""
    out = []
    for m in metas:
        clip = corpus.clip(m.id)
        wave = np.zeros(m.n_frames * SAMPLES_PER_FRAME, np.float32)
        wave[: min(len(clip.audio), len(wave))] = clip.audio[: len(wave)]
        out.append((wave, units.labels(clip)))
    return out


def phone_logits(encoder: MelEncoder, classifier: nn.Linear, log_mel: torch.Tensor) -> torch.Tensor:
    features = encoder.features_from_log_mel(log_mel)
    return classifier(features).reshape(features.shape[0], -1, classifier.out_features // UNITS_PER_FRAME)


def train_encoder(cfg: EncoderTrainConfig, progress: bool = True) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    corpus = open_corpus(cfg.corpus, full_check=False)
    units = PhoneUnits()

    train_set = phone_examples(corpus, corpus.split("train")[: cfg.max_clips or None], units)
    val_set = phone_examples(corpus, corpus.split("val")[: max(4, cfg.max_clips // 4) if cfg.max_clips else 200],
                             units)
    if not train_set:
        raise ThunderError(f"{cfg.corpus}: the corpus has no training clips")

    encoder = MelEncoder(cfg.width)
    classifier = nn.Linear(cfg.width, UNITS_PER_FRAME * units.n_units)
    params = list(encoder.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    log, started = [], time.time()
    bar = ProgressBar(cfg.steps, label="encoder") if progress else None
    for step in range(1, cfg.steps + 1):
        lr = warmup_cosine(step - 1, cfg.lr, cfg.warmup, cfg.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        waves, labels = _crops(train_set, units, cfg.batch_size, cfg.window, rng)
        log_mel = tilt_log_mel(log_mel_spectrogram(roughen(waves, cfg, rng)), cfg, rng)
        logits = phone_logits(encoder, classifier, log_mel)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 25 == 0 or step == cfg.steps:
            log.append({"step": step, "phone_ce": loss.item(), "seconds": round(time.time() - started, 1)})
        if bar:
            bar.update(step, f"ce {loss.item():.3f}")
    if bar:
        bar.close()
    accuracy = phone_accuracy(encoder, classifier, val_set)
    log[-1]["val"] = {"unit_accuracy": accuracy}
    out = Path(cfg.out)
    config = {"kind": ENCODER_KIND, "encoder": encoder.config, "val_phone_accuracy": accuracy,
              "train": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}}
    save_checkpoint(out, encoder, config)
    save_checkpoint(out / "phone_classifier", classifier, {"kind": "thunder-phone-classifier",
                                                           "inventory": list(units.inventory)})
    (out / "log.json").write_text(json.dumps(log, indent=1))
    return out


@torch.no_grad()
def phone_accuracy(encoder, classifier, clips) -> float:
    """Frame phone accuracy (50 Hz) over whole clips."""
    encoder.eval()
    correct = total = 0
    for wave, labels in clips:
        logits = phone_logits(encoder, classifier, log_mel_spectrogram(torch.from_numpy(wave)))
        correct += int((logits[0].argmax(-1).numpy() == labels[: logits.shape[1]]).sum())
        total += logits.shape[1]
    encoder.train()
    return correct / max(total, 1)


def load_encoder(folder: str | Path) -> MelEncoder:
    config, weights = read_checkpoint(folder, ENCODER_KIND)
    encoder = build_encoder(config["encoder"])
    load_weights(encoder, weights, folder)
    return encoder
