"""The directing figure: the lip opening (mm) of one take of the example clip over time, the same take with a
range resampled (identical outside it), and the take generated with constraints (the mouth held closed over
a stretch, a smile keyed at one frame, which the smile weight shows beneath).

    python docs/make_directing_figure.py        # writes docs/directing_lip_opening.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backend.generate import Generator
from backend.take_file import take_vertices
from training import metrics

DOCS = Path(__file__).parent
EXAMPLE = DOCS.parent / "backend" / "examples" / "thunder_example.wav"
FPS = 25.0
RANGE = (40, 90)              # take frames resampled
HOLD = (100, 125)             # mouth closed
KEY = ("mouthSmileLeft", 0.8, 60)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(2)
    generator = Generator(device="cpu")
    head = generator.head
    take = generator.generate(EXAMPLE, seeds=[3], fps=FPS)[0]
    resampled = generator.resample_range(take, EXAMPLE, *RANGE, seeds=[11])[0]
    constraints = [{"kind": "hold", "pose": "mouth_closed", "start": HOLD[0], "end": HOLD[1]},
                   {"kind": "key", "name": KEY[0], "value": KEY[1], "frame": KEY[2]}]
    constrained = generator.generate(EXAMPLE, seeds=[3], fps=FPS, constraints=constraints)[0]
    names = list(head.expression_names)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 5.6), sharex=True, height_ratios=[3, 1.2])
    seconds = np.arange(take.n_frames) / FPS
    for label, t, style in (("take (seed 3)", take, dict(color="black", lw=1.6)),
                            (f"frames {RANGE[0]}-{RANGE[1] - 1} resampled (seed 11)", resampled,
                             dict(color="tab:blue", lw=1.4, ls="--")),
                            ("seed 3 with constraints", constrained, dict(color="tab:orange", lw=1.4))):
        opening = metrics.lip_distance(take_vertices(t, head), head.landmarks) * 1000.0
        top.plot(seconds, opening, label=label, **style)
        bottom.plot(seconds, t.expression[:, names.index(KEY[0])], **style)
    top.axvspan(RANGE[0] / FPS, (RANGE[1] - 1) / FPS, color="tab:blue", alpha=0.10, label="resampled range")
    top.axvspan(HOLD[0] / FPS, (HOLD[1] - 1) / FPS, color="tab:orange", alpha=0.15, label="hold: mouth closed")
    bottom.plot([KEY[2] / FPS], [KEY[1]], "o", mfc="none", color="tab:orange", ms=9,
                label=f"key: {KEY[0]} = {KEY[1]} at frame {KEY[2]}")
    top.set_ylabel("lip opening (mm)")
    top.set_title("Directing a take: the example clip at 25 fps")
    top.legend(loc="upper right", fontsize=8, ncol=2)
    bottom.set_ylabel(KEY[0], fontsize=8)
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = DOCS / "directing_lip_opening.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(path)


if __name__ == "__main__":
    main()
