"""What the generate and serve tests feed Thunder: a tiny THUNDER model trained in seconds, speech-like audio,
and the bad audio files a user may hand over (missing, empty, text, an hour long, NaN samples) next to one
unusual file that must work (8 kHz stereo MP3)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile

from backend.diffusion.network import DenoiserConfig
from corpus_fixtures import write_tiny_corpus
from training.thunder.train import named_config, train

TINY_DENOISER = DenoiserConfig(width=32, layers=1, heads=2, ffn=64, dropout=0.0)


def train_tiny_model(folder: Path, head) -> Path:
    """A few steps of the no-M2S recipe on a six-clip corpus: a real, loadable THUNDER checkpoint whose
    emotions are neutral, happy and sad. Its default sampling window is 24 frames, so a few seconds of audio
    already runs several windows."""
    corpus = write_tiny_corpus(folder / "corpus", head, n_clips=6)
    cfg = named_config("no-m2s", corpus=str(corpus), out=str(folder / "tiny-thunder"), m2s="", encoder_init="",
                       encoder_width=16, denoiser=TINY_DENOISER, batch_size=4, window=24, context=4,
                       diffusion_steps=50, steps=4, eval_every=4, eval_clips=1, log_every=2, warmup=2, threads=1)
    return train(cfg, progress=False)


def write_speech(path: Path, seconds: float, rate: int = 16000, channels: int = 1, pitch: float = 180.0,
                 **soundfile_options) -> Path:
    """Tone bursts with pauses, like syllables: audio the tiny model can follow."""
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.3 * np.sin(2 * np.pi * pitch * t) * (np.sin(2 * np.pi * 3.0 * t) > 0)
    samples = np.stack([wave * (1.0 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)
    soundfile.write(str(path), samples if channels > 1 else samples[:, 0], rate, **soundfile_options)
    return path


def write_silent_hour_wav(path: Path, rate: int = 8000) -> Path:
    """A one-hour 8 kHz 16-bit mono WAV of silence (57.6 MB): the header, then zeros written as a sparse file,
    so making it costs no time and no disk."""
    data_bytes = 3600 * rate * 2
    header = (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
              + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
              + b"data" + struct.pack("<I", data_bytes))
    with open(path, "wb") as file:
        file.write(header)
        file.truncate(len(header) + data_bytes)
    return path


def write_bad_audio(folder: Path) -> dict[str, Path]:
    """The inputs every front end must answer clearly, by what is wrong with them. All but "mp3" must fail."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    text = folder / "notes.wav"
    text.write_text("these are my notes, not a recording\n")
    nan = folder / "nan.wav"
    samples = np.full(16000, 0.1, dtype=np.float32)
    samples[8000] = np.nan
    soundfile.write(str(nan), samples, 16000, subtype="FLOAT")
    return {"missing": folder / "missing.wav", "empty": empty, "text": text,
            "mp3": write_speech(folder / "stereo8k.mp3", 2.0, rate=8000, channels=2, format="MP3"),
            "hour": write_silent_hour_wav(folder / "hour.wav"), "nan": nan}


# What the one-line error for each bad file says (besides the file's name).
BAD_AUDIO_WORDS = {"missing": "does not exist", "empty": "is empty", "text": "is not a readable audio file",
                   "hour": "longer than the limit of 600 s", "nan": "NaN"}
