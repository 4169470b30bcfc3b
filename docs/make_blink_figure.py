"""The blink figure for docs/results.md: the eyelids (the mean of eyeBlinkLeft and eyeBlinkRight, as
`thunder eval` counts blinks) of four takes of one recording, as the model sampled them (`--blinks model`)
and as `thunder generate` gives them (natural blinks, backend/blinks.py), over the audio's loudness.

    python docs/make_blink_figure.py ../shared/real-speech/198-209-0000.ogg

Writes docs/natural_blinks.png (the recording itself stays out of the repository).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from backend.audio import MOTION_FPS, audio_envelope
from backend.audio_io import load_audio
from backend.blinks import blink_signal, count_blinks
from backend.generate import Generator

DOCS = Path(__file__).parent


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", type=Path)
    parser.add_argument("--takes", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DOCS / "natural_blinks.png")
    args = parser.parse_args(argv)

    generator = Generator(device="cpu")
    names = generator.takes_head.expression_names
    natural = generator.generate(args.audio, takes=args.takes, fps=MOTION_FPS)
    sampled = generator.generate(args.audio, takes=args.takes, fps=MOTION_FPS, settings={"blinks": "model"})
    t = np.arange(natural[0].n_frames) / MOTION_FPS
    fig, axes = plt.subplots(args.takes + 1, 1, figsize=(12, 1.6 * (args.takes + 1)), sharex=True)
    axes[0].plot(t, audio_envelope(load_audio(args.audio), len(t)), color="tab:blue")
    axes[0].set_ylabel("loudness (RMS)")
    axes[0].set_title(f"{args.audio.name}: eyelids of {args.takes} takes (1 = shut; a blink passes 0.5)")
    for k, (a, b) in enumerate(zip(sampled, natural)):
        model_lids, lids = blink_signal(a.expression, names), blink_signal(b.expression, names)
        minutes = len(t) / MOTION_FPS / 60
        axes[k + 1].plot(t, model_lids, "k--", lw=1,
                         label=f"as sampled: {count_blinks(model_lids) / minutes:.0f} a minute")
        axes[k + 1].plot(t, lids, color="tab:red", alpha=0.8,
                         label=f"natural blinks: {count_blinks(lids) / minutes:.0f} a minute")
        axes[k + 1].set_ylim(-0.05, 1.1)
        axes[k + 1].set_ylabel(f"seed {b.seed}")
        axes[k + 1].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
