"""The real-speech figure for docs/results.md: the lip opening of one real recording against time, take 1 of a
THUNDER model and the phones-to-visemes baseline, with the clip's /p b m/ and open vowels shaded and the
audio envelope beneath (every signal as `thunder eval --audio` measures it, training/metrics.py).

    python docs/make_real_speech_figures.py ../shared/real-speech/read-aloud/LJ001-0001.flac \
        --model backend/models/thunder --align-cache runs/align_cache

The transcript is NAME.txt beside the audio or its line in transcripts.tsv. Writes
docs/real_speech_lip_opening.png (the recording itself stays out of the repository).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from backend.audio import audio_envelope
from backend.errors import ThunderError
from backend.generate import settings_with
from backend.head import load_head
from backend.models import SHIPPED_THUNDER
from backend.motion import pack_motion
from backend.take_sampling import model_settings
from backend.thunder_model import load_model
from training import metrics
from training.baseline import baseline_motion
from training.real_speech import default_cache_dir, read_real_clip, transcript_of
from training.thunder.evaluate import clip_takes, face_vertices

DOCS = Path(__file__).parent
FPS = 25.0


def lip_opening_figure(clip, openings: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(next(iter(openings.values())))
    t = np.arange(n) / FPS
    envelope = audio_envelope(clip.audio, n)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 5.6), sharex=True, height_ratios=[3, 1])
    for start, end in metrics.segments_of(clip.phones, metrics.BILABIALS):
        top.axvspan(start, end, color="tab:red", alpha=0.22, lw=0)
    for start, end in metrics.segments_of(clip.phones, metrics.OPEN_VOWELS):
        top.axvspan(start, end, color="tab:green", alpha=0.16, lw=0)
    styles = {0: dict(color="black", lw=1.6), 1: dict(color="tab:blue", lw=1.3, ls="--"),
              2: dict(color="tab:purple", lw=1.3)}
    for i, (name, opening) in enumerate(openings.items()):
        top.plot(t, opening, label=name, **styles.get(i, {}))
        spikes = metrics.lip_spikes(opening)
        if spikes.size:
            top.plot(t[spikes], opening[spikes], "o", mfc="none", color=styles.get(i, {}).get("color"), ms=7)
    top.axhline(metrics.NEVER_OPEN_MM, color="grey", lw=0.8, ls=":")
    top.text(t[-1], metrics.NEVER_OPEN_MM, " 2 mm", va="center", fontsize=8, color="grey")
    for word in clip.words:
        if word.label != "<sil>":
            top.text(0.5 * (word.start + word.end), -1.2, word.label,
                     ha="center", va="top", fontsize=7, rotation=90)
    top.set_ylabel("lip opening (mm)")
    top.set_ylim(-5.5, max(float(np.max([o.max() for o in openings.values()])), 10.0) * 1.3)  # room for the legend
    handles, labels = top.get_legend_handles_labels()
    handles += [plt.Rectangle((0, 0), 1, 1, color="tab:red", alpha=0.22),
                plt.Rectangle((0, 0), 1, 1, color="tab:green", alpha=0.16),
                plt.Line2D([], [], marker="o", mfc="none", color="black", ls="")]
    labels += ["/p b m/ (aligned)", "open vowel (AA AE AH AO AW AY)", "single-frame spike (> 4 mm)"]
    top.legend(handles, labels, loc="upper right", fontsize=8, ncol=2)
    top.set_title(f"{clip.id}: lip opening (inner-lip midline) on real read speech")
    bottom.plot(t, envelope, color="tab:orange")
    bottom.set_ylabel("RMS envelope")
    bottom.set_xlabel("time (s)")
    r = {name: metrics.envelope_correlation(o, envelope) for name, o in openings.items()}
    bottom.set_title("audio envelope (40 ms RMS, Gaussian sigma 40 ms); r with the opening: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", help="one real recording with its transcript beside it")
    parser.add_argument("--model", default=str(SHIPPED_THUNDER))
    parser.add_argument("--align-cache", default=str(default_cache_dir()))
    parser.add_argument("--seed", type=int, default=0, help="take 1's seed, as thunder eval draws it")
    parser.add_argument("--guidance", type=float, help="also plot take 1 sampled with this audio guidance (the "
                        "model's own interval and channels, as `thunder generate --guidance`)")
    parser.add_argument("--also", metavar="JSON", help="also plot take 1 sampled with these changes to the model's "
                        "settings, a JSON object (e.g. '{\"steps\": 10, \"lowest_noise\": null}')")
    parser.add_argument("--also-label", default="take 1, other settings", help="the legend of --also's take")
    parser.add_argument("--out", default=str(DOCS / "real_speech_lip_opening.png"))
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    audio = Path(args.audio)
    transcript = transcript_of(audio, {})
    clip = read_real_clip(audio, audio.parent, transcript, Path(args.align_cache) if args.align_cache else None)
    head = load_head("builtin")
    model = load_model(args.model, head)
    settings = model_settings(model)
    others = {}   # legend: changes to the model's settings, each plotted as another take 1
    if args.guidance is not None:
        others[f"take 1, guidance {args.guidance:g}"] = {"guidance": args.guidance}
    if args.also:
        try:
            others[args.also_label] = json.loads(args.also)
            settings_with(settings, others[args.also_label])
        except (ValueError, AttributeError, ThunderError) as error:
            parser.error(f"--also {args.also}: give a JSON object of sampling settings ({error})")

    def opening(motion):
        return metrics.lip_distance(face_vertices(head, motion), head.landmarks) * metrics.MM

    take = clip_takes(model, head, clip.audio, [args.seed], settings)[0]
    base = pack_motion(**baseline_motion(clip.phones, take.shape[0], head))
    openings = {"THUNDER take 1": opening(take), "phoneme baseline": opening(base)}
    for label, changes in others.items():
        openings[label] = opening(clip_takes(model, head, clip.audio, [args.seed], settings_with(settings, changes))[0])
    lip_opening_figure(clip, openings, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
