"""Self-supervised speech models (wav2vec 2.0, HuBERT) through transformers, from a local folder or a hub id.

They give 50 Hz hidden states (one per 320 samples at 16 kHz). Thunder uses them two ways: as the paper's
audio encoder (wav2vec 2.0, frozen or fine-tuned) and, in training, as the source of k-means speech units.
Nothing is downloaded unless the user names a hub id and has a network; tests use tiny random configs saved
to a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from backend.errors import ThunderError

SSL_RATE = 50
SSL_HOP = 320  # samples per hidden state at 16 kHz


class SpeechModelError(ThunderError):
    """A self-supervised speech model cannot be loaded."""


def load_speech_model(name_or_path: str | Path) -> torch.nn.Module:
    """A wav2vec 2.0 or HuBERT model (transformers' AutoModel) from a folder or a hub id."""
    try:
        from transformers import AutoModel
    except ImportError:
        raise SpeechModelError("self-supervised speech models need transformers: pip install "
                               "'thunder-talking-heads[train]'") from None
    local = Path(str(name_or_path)).expanduser()
    try:
        model = AutoModel.from_pretrained(str(local) if local.exists() else str(name_or_path))
    except (OSError, ValueError) as exc:
        raise SpeechModelError(f"cannot load the speech model '{name_or_path}': it is neither a folder with a "
                               f"transformers model nor a reachable hub id ({str(exc).splitlines()[0]})") from None
    if not hasattr(model, "feature_extractor") or not hasattr(model.config, "conv_stride"):
        raise SpeechModelError(f"'{name_or_path}' is a {type(model).__name__}, not a wav2vec 2.0 or HuBERT model")
    return model


def speech_hidden_states(model: torch.nn.Module, wave: torch.Tensor, layer: int, n_steps: int) -> torch.Tensor:
    """Hidden states of `layer` (0 = the CNN features after projection) at 50 Hz.

    wave: (B, N) at 16 kHz. Returns (B, n_steps, H), cut or edge-padded to exactly n_steps.
    """
    # Zero mean, unit variance per utterance, as wav2vec 2.0's feature extractor does.
    wave = (wave - wave.mean(-1, keepdim=True)) / (wave.std(-1, keepdim=True) + 1e-7)
    out = model(wave, output_hidden_states=True)
    states = out.hidden_states[layer]
    if states.shape[1] < n_steps:
        states = torch.cat([states, states[:, -1:].expand(-1, n_steps - states.shape[1], -1)], dim=1)
    return states[:, :n_steps]
