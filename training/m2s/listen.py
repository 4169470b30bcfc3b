"""Hear and see what M2S makes of a clip's motion: vocoded WAVs and a mel-spectrogram comparison PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backend.audio import write_wav


def plot_mels(path: Path, panels: list[tuple[str, np.ndarray]], title: str) -> Path:
    """Stack log-mel spectrograms (frames, 80) vertically, same colour scale, time in seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmin = min(p.min() for _, p in panels)
    vmax = max(p.max() for _, p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True)
    for ax, (name, mel) in zip(np.atleast_1d(axes), panels):
        seconds = len(mel) / 100.0
        ax.imshow(mel.T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
                  extent=(0, seconds, 0, mel.shape[1]))
        ax.set_ylabel("mel bin")
        ax.set_title(name, fontsize=9, loc="left")
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def listen(checkpoint, corpus_dir, clip_id: str | None, out_dir, head_spec: str = "builtin") -> list[Path]:
    from backend.head import load_head
    from training.corpus.format import open_corpus
    from backend.m2s import load_m2s
    from training.m2s.data import make_examples, split_motion
    from training.m2s.evaluate import SHIFT_FRAMES
    from training.m2s.units import unit_source_from_config
    from backend.m2s.reading import predict_mel
    from backend.m2s.vocoder import GriffinLim

    head = load_head(head_spec)
    m2s = load_m2s(checkpoint, head)
    corpus = open_corpus(corpus_dir, full_check=False)
    clip_id = clip_id or corpus.split("test")[0].id
    clip = corpus.clip(clip_id)
    example = make_examples([clip], unit_source_from_config(m2s.config["units"]))[0]
    motion = torch.from_numpy(example.motion)[None]
    shifted = torch.cat([motion[:, :1].expand(-1, SHIFT_FRAMES, -1), motion], dim=1)[:, : motion.shape[1]]

    def heard(m):   # (4T, n_mels): read as inference reads a take (backend/m2s/reading.py: the edges held)
        expression, jaw = split_motion(m[0], head.n_expression)
        return predict_mel(m2s, expression.numpy(), jaw.numpy())

    predicted, predicted_shifted = heard(motion), heard(shifted)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocoder = GriffinLim()
    paths = [
        write_wav(out / f"{clip_id}_m2s.wav", vocoder(torch.from_numpy(predicted)).numpy()),
        write_wav(out / f"{clip_id}_true_mel_griffinlim.wav", vocoder(torch.from_numpy(example.mel)).numpy()),
        plot_mels(out / f"{clip_id}_mels.png",
                  [("true log-mel of the speech", example.mel),
                   ("M2S from the true motion", predicted),
                   ("M2S from the motion 200 ms late", predicted_shifted)],
                  f"{clip_id}: \"{clip.meta.text}\""),
    ]
    return paths
