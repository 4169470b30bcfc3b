"""Synthesize Thunder's example clip: `python scripts/make_example_speech.py [--out backend/examples/thunder_example.wav]`.

One English sentence rich in /p b m/ (the lips must close) and open vowels (the jaw must drop), spoken by
Debian's festival with the CMU SLT Arctic HTS voice (apt-get install festival festvox-us-slt-hts sox) at a
slightly slow rate, with a quarter second of silence on each side so that a take starts and ends at rest.
Written as 16 kHz mono 16-bit PCM: what `thunder demo` and the docs' Blender figure animate. The synthesis
goes through the corpus's own engine wrapper (training.corpus.synth), so it is the project's own speech.
Beside it, NAME.txt holds the transcript as the aligner reads it (lowercase words of the CMU dictionary, the
convention of `thunder corpus convert` and `thunder eval` on a folder).

An existing file is never replaced (exit status 1) unless --overwrite is given. Prints the files, the clip's
length and its forced alignment (pocketsphinx), to check that every word was spoken.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.corpus.synth import synthesize  # noqa: E402
from training.corpus.voices import VoiceConfig  # noqa: E402

SENTENCE = "Bob bought a big map of Paris, and my mother made a warm apple pie for both of us."
VOICE = "festival:cmu_us_slt_arctic_hts@0.90,0"   # engine:voice@rate,pitch; rate 0.9 is 10% slower
SAMPLE_RATE = 16000
PAD_SECONDS = 0.25
DEFAULT_OUT = ROOT / "backend" / "examples" / "thunder_example.wav"


def transcript(sentence: str = SENTENCE) -> str:
    """The sentence as the aligner reads it: lowercase words, no punctuation."""
    return " ".join("".join(c for c in sentence.lower() if c.isalpha() or c in " '").split())


def make_example(voice: str = VOICE, sentence: str = SENTENCE) -> np.ndarray:
    """The clip as 16 kHz mono float32 samples: the sentence, padded with silence."""
    speech = synthesize(VoiceConfig.parse(voice), sentence)
    pad = np.zeros(int(PAD_SECONDS * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([pad, speech.astype(np.float32), pad])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--voice", default=VOICE, help=f"engine:voice@rate,pitch (default {VOICE})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    text_path = args.out.with_suffix(".txt")
    for path in (args.out, text_path):
        if path.exists() and not args.overwrite:
            print(f"{path} already exists; pass --overwrite to replace it", file=sys.stderr)
            return 1
    samples = make_example(args.voice)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(args.out), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    text_path.write_text(transcript() + "\n")
    print(f"wrote {args.out}: {len(samples) / SAMPLE_RATE:.2f} s, {args.voice}")
    print(f"wrote {text_path}")
    try:
        from training.corpus.align import align

        _, phones = align(samples, transcript())
        print(" ".join(f"{p.label}@{p.start:.2f}" for p in phones))
    except ImportError:
        print("(pocketsphinx is not installed: no alignment printed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
