"""Figures for docs/results.md: training curves, lip distance over time, and rendered frames at /p b m/.

    python docs/make_thunder_figures.py --base runs/thunder/base --no-m2s runs/thunder/w0 \
        --thunder backend/models/thunder --clip c00029

Writes docs/thunder_training_curves.png, docs/thunder_lip_distance.png and docs/thunder_bilabial_frames.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from backend.blender.preview import CameraView, render_pose_sheet
from backend.head import load_head
from backend.thunder_model import load_model
from training import metrics
from training.corpus.format import open_corpus
from training.thunder.data import clip_motion
from training.thunder.evaluate import clip_takes, face_vertices, with_clip_emotion

DOCS = Path(__file__).parent


def rolling_mean(values, n: int = 4) -> np.ndarray:
    """Mean of each logged value with the n - 1 before it (logs of single batches are noisy)."""
    values = np.asarray(values, dtype=np.float64)
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), n)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def training_curves(base: Path, branches: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_log = json.loads((base / "log.json").read_text())
    offset = base_log[-1]["step"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot([r["step"] for r in base_log], rolling_mean([r["x0"] for r in base_log]), color="0.4", lw=1, label="base (no M2S)")
    for k, (name, folder) in enumerate(branches.items()):
        log = json.loads((folder / "log.json").read_text())
        steps = [offset + r["step"] for r in log]
        axes[0].plot(steps, rolling_mean([r["x0"] for r in log]), lw=1, color=f"C{k}", label=name)
        if "m2s_unit_ce" in log[0]:
            axes[1].plot(steps, rolling_mean([r["m2s_unit_ce"] for r in log]), lw=1, color=f"C{k}", label=name)
            axes[2].plot(steps, rolling_mean([r["m2s_mel_l1"] for r in log]), lw=1, color=f"C{k}", label=name)
    titles = ("x0 MSE (normalized motion)", "M2S unit cross-entropy", "M2S mel L1")
    for ax, title in zip(axes, (t + ", rolling mean of 4 logs" for t in titles)):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, default=Path("runs/thunder/base"))
    parser.add_argument("--no-m2s", type=Path, default=Path("runs/thunder/w0"))
    parser.add_argument("--branches", nargs="*", default=["w_m2s=0.1=runs/thunder/w0.1", "w_m2s=0.5=runs/thunder/w0.5",
                                                          "w_m2s=1=runs/thunder/w1",
                                                          "w_m2s=5=runs/thunder/w5",
                                                          "thunder-t w_m2s=0.1=runs/thunder/t_w0.1"])
    parser.add_argument("--thunder", type=Path, default=Path("backend/models/thunder"))
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--clip", default=None, help="a test clip id (default: the first with 3 bilabials)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    branches = {"no-m2s": args.no_m2s}
    branches.update({spec.rpartition("=")[0]: Path(spec.rpartition("=")[2]) for spec in args.branches})
    training_curves(args.base, {k: v for k, v in branches.items() if (v / "log.json").exists()},
                    DOCS / "thunder_training_curves.png")

    head = load_head("builtin")
    corpus = open_corpus(args.corpus, full_check=False)
    metas = corpus.split("test")
    meta = next(m for m in metas if (args.clip and m.id == args.clip) or
                (not args.clip and sum(p.label in metrics.BILABIALS for p in m.phones) >= 3))
    clip = corpus.clip(meta.id)
    rows = {"reference": face_vertices(head, clip_motion(clip))}
    for name, folder in (("no-m2s", args.no_m2s), ("THUNDER", args.thunder)):
        model = load_model(folder, head)
        takes = clip_takes(model, head, clip.audio, [0, 1], with_clip_emotion(None, model, clip))
        for k, take in enumerate(takes):
            rows[f"{name} take {k + 1}"] = face_vertices(head, take)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.2))
    t = np.arange(meta.n_frames) / 25.0
    for name, v in rows.items():
        style = {"color": "k", "lw": 2} if name == "reference" else {"lw": 1, "ls": "--" if "no-m2s" in name else "-"}
        ax.plot(t, metrics.lip_distance(v, head.landmarks) * 1000, label=name, **style)
    for seg in meta.phones:
        if seg.label in metrics.BILABIALS:
            ax.axvspan(seg.start, seg.end, color="C3", alpha=0.15)
            ax.text(0.5 * (seg.start + seg.end), ax.get_ylim()[1] * 0.92, seg.label, ha="center", fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("lip distance (mm)")
    ax.set_title(f"test clip {meta.id}: \"{meta.text}\" ({meta.speaker}); shaded: /p b m/", fontsize=9)
    ax.legend(fontsize=7, ncol=5, loc="upper right")
    fig.tight_layout()
    fig.savefig(DOCS / "thunder_lip_distance.png", dpi=110)
    plt.close(fig)

    # Frames at the middle of each bilabial (up to 3), one row per motion.
    frames = [int(round(0.5 * (s.start + s.end) * 25)) for s in meta.phones if s.label in metrics.BILABIALS][:3]
    poses, captions = [], []
    for name, v in rows.items():
        for f in frames:
            poses.append((f"{name.replace(' ', '_')}_{f}", v[f].numpy()))
            captions.append(f"{name}, {f / 25:.2f} s")
    out = Path("runs/thunder/frames")
    out.mkdir(parents=True, exist_ok=True)
    mouth = head.data.v_template[[head.landmarks["upper_lip_center"], head.landmarks["lower_lip_center"]]].mean(0)
    view = CameraView(target=tuple(float(x) for x in mouth), distance=0.32, azimuth=20.0, elevation=4.0)
    render_pose_sheet(head.faces, head.face_region, head.face_region_names, poses, out,
                      DOCS / "thunder_bilabial_frames.png", resolution=256, columns=len(frames), view=view,
                      captions=captions)
    print(f"clip {meta.id}; wrote docs/thunder_training_curves.png, docs/thunder_lip_distance.png, "
          "docs/thunder_bilabial_frames.png")


if __name__ == "__main__":
    main()
