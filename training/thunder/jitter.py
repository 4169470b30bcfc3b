"""How jerky the lips are: mean |second difference| per frame of the lip-closing expressions, generated against
the corpus's ground truth.

    python -m training.thunder.jitter [--checkpoint DIR] [--corpus data/corpus] [--clips 20] [AUDIO ...]

For the first --clips test clips of the corpus it prints the generated takes' figure beside the ground truth's
(same audio), then the figure for each extra AUDIO file (the example clip, real speech), which has no ground
truth. A single-frame spike of a closing expression (0 -> 0.5 -> 0) reads as a flicker of the lips in the
video, which the per-frame metrics (LVE, closure) do not see.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.metrics import mean_abs_second_difference

CLOSING = ("mouthClose", "mouthRollLower", "mouthPressLeft", "mouthPressRight")


def second_difference(expression: np.ndarray, columns) -> float:
    """Mean |x[t+1] - 2 x[t] + x[t-1]| over frames and the given expression columns."""
    return mean_abs_second_difference(np.asarray(expression, dtype=np.float64)[:, columns])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="*", help="extra audio files (no ground truth)")
    parser.add_argument("--checkpoint", help="a THUNDER model folder (default: the shipped one)")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--clips", type=int, default=20, help="test clips of the corpus (0: none)")
    parser.add_argument("--takes", type=int, default=2)
    args = parser.parse_args(argv)

    from backend.generate import Generator
    from training.corpus.format import clip_paths, read_clip

    generator = Generator(args.checkpoint)
    names = generator.head.expression_names
    columns = [names.index(n) for n in CLOSING if n in names]
    seeds = list(range(args.takes))

    def generated(audio) -> float:
        return float(np.mean([second_difference(t.expression, columns)
                              for t in generator.generate(str(audio), seeds=seeds)]))

    if args.clips:
        index = json.loads((Path(args.corpus) / "index.json").read_text())
        test = [c["id"] for c in index["clips"] if c["split"] == "test"][:args.clips]
        made, truth = [], []
        for clip_id in test:
            clip = read_clip(args.corpus, clip_id)
            made.append(generated(clip_paths(args.corpus, clip_id)["wav"]))
            truth.append(second_difference(clip.expression, columns))
        print(f"{len(test)} test clips: generated {np.mean(made):.3f}, ground truth {np.mean(truth):.3f} "
              f"(ratio {np.mean(made) / np.mean(truth):.2f})")
    for audio in args.audio:
        print(f"{audio}: generated {generated(audio):.3f}")
    print(f"(mean |second difference| per frame of {', '.join(n for n in CLOSING if n in names)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
