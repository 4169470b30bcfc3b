"""Running the speech engines: a voice configuration and a sentence to 16 kHz mono float32 audio.

Rate: espeak-ng's words per minute, flite's duration_stretch and festival's Duration_Stretch (sox `tempo` for
festival voices that ignore it). Pitch: espeak-ng's pitch setting; sox `pitch` for flite and festival.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from training.corpus.errors import EngineMissingError, ThunderError
from training.corpus.format import read_audio, to_mono_16k
from training.corpus.voices import VoiceConfig, festival_native_prosody, require_engine


class SynthesisError(ThunderError):
    """An engine ran but produced no usable audio for a sentence."""


def _call(args: list[str], what: str) -> None:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise EngineMissingError(f"{args[0]} is not installed, so {what} cannot be synthesized") from None
    except subprocess.TimeoutExpired:
        raise SynthesisError(f"{args[0]} took over two minutes for {what}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SynthesisError(f"{args[0]} failed for {what}: {last}")


def synthesize(config: VoiceConfig, text: str) -> np.ndarray:
    """Speak `text` with `config`; returns 16 kHz mono float32 audio."""
    require_engine(config.engine)
    what = f"'{text[:40]}' with {config.id}"
    with tempfile.TemporaryDirectory(prefix="thunder-synth-") as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        sox_effects: list[str] = []
        if config.engine == "espeak-ng":
            voice = config.voice + (f"+{config.variant}" if config.variant else "")
            pitch = int(np.clip(round(50 + 6 * config.pitch), 0, 99))
            _call(["espeak-ng", "-v", voice, "-s", str(int(round(165 * config.rate))), "-p", str(pitch),
                   "-w", str(raw), text], what)
        elif config.engine == "flite":
            _call(["flite", "-voice", config.voice, "--setf", f"duration_stretch={1.0 / config.rate:.4f}",
                   "-t", text, "-o", str(raw)], what)
            sox_effects = _sox_pitch(config.pitch)
        else:
            (Path(tmp) / "text.txt").write_text(text + "\n")
            evals = ["-eval", f"(voice_{config.voice})"]
            if festival_native_prosody(config.voice):
                evals += ["-eval", f"(Parameter.set 'Duration_Stretch {1.0 / config.rate:.4f})"]
            elif abs(config.rate - 1.0) > 1e-3:
                sox_effects += ["tempo", "-s", f"{config.rate:.4f}"]
            sox_effects += _sox_pitch(config.pitch)
            _call(["text2wave", *evals, str(Path(tmp) / "text.txt"), "-o", str(raw)], what)
        if sox_effects:
            if not shutil.which("sox"):
                raise EngineMissingError(f"sox is not installed, and {config.engine} needs it to change pitch")
            _call(["sox", "-D", "-R", str(raw), str(out), *sox_effects], what)  # -D: no dither, so it is deterministic
            raw = out
        if not raw.exists() or raw.stat().st_size < 100:
            raise SynthesisError(f"{config.engine} wrote no audio for {what}")
        audio, rate = read_audio(raw)
    audio = to_mono_16k(audio, rate)
    if audio.size < 1600 or not np.any(np.abs(audio) > 1e-3):
        raise SynthesisError(f"{config.engine} wrote silence for {what}")
    return audio


def _sox_pitch(semitones: float) -> list[str]:
    return ["pitch", f"{100 * semitones:.0f}"] if abs(semitones) >= 0.05 else []
