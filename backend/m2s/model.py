"""Mesh-to-speech (M2S): a model that hears the lips.

Per-frame motion features (mouth vertices by default) go through an MLP, are upsampled from 25 fps to the
50 Hz unit rate, run through a conformer, and feed two heads: a speech-unit classifier (50 Hz) and a
log-mel regressor (2 mel frames per unit step, so 100 Hz, 4 per motion frame). After Choi et al. (2023),
"Intelligible lip-to-speech synthesis with speech units"; THUNDER (Daněček et al. 2025) feeds it 3D mouth
vertices.

The input is chosen by `M2SConfig.input`:
- "mouth": the head's mouth_region vertices (Mouth2Speech, the default and the paper's choice);
- "face": the head's face vertices (Face2Speech, an ablation);
- "expression": expression coefficients plus jaw pose (Exp2Speech, an ablation).
Vertex inputs are offsets from the head's rest positions, in centimetres, so the numbers are O(1).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from backend.audio import MELS_PER_UNIT, UNITS_PER_FRAME


@dataclasses.dataclass
class M2SConfig:
    """Sizes of the model. The default trains on a 2-core CPU within an hour; `paper()` is GPU scale."""

    input: str = "mouth"         # mouth | face | expression
    width: int = 128
    layers: int = 4
    heads: int = 4
    ffn: int = 512
    conv_kernel: int = 15
    dropout: float = 0.1
    n_units: int = 40
    n_mels: int = 80

    @classmethod
    def paper(cls, **overrides) -> "M2SConfig":
        """Choi et al.'s conformer: 12 layers, 512 wide, 8 heads, FFN 2048, kernel 31."""
        return cls(**{"width": 512, "layers": 12, "heads": 8, "ffn": 2048, "conv_kernel": 31, **overrides})


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv over time, norm, SiLU, pointwise conv."""

    def __init__(self, width: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.pointwise_in = nn.Conv1d(width, 2 * width, 1)
        self.depthwise = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        # LayerNorm over channels rather than BatchNorm: padded batches would pollute batch statistics.
        self.depthwise_norm = nn.LayerNorm(width)
        self.pointwise_out = nn.Conv1d(width, width, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        y = self.norm(x).masked_fill(pad_mask[..., None], 0.0).transpose(1, 2)
        y = nn.functional.glu(self.pointwise_in(y), dim=1)
        y = self.depthwise(y).transpose(1, 2)
        y = nn.functional.silu(self.depthwise_norm(y)).transpose(1, 2)
        return self.dropout(self.pointwise_out(y).transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int, kernel: int, dropout: float):
        super().__init__()
        self.ffn_in = FeedForward(width, ffn, dropout)
        self.attn_norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(width, kernel, dropout)
        self.ffn_out = FeedForward(width, ffn, dropout)
        self.out_norm = nn.LayerNorm(width)

    def forward(self, x, pad_mask):
        x = x + 0.5 * self.ffn_in(x)
        y = self.attn_norm(x)
        y, _ = self.attn(y, y, y, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.attn_dropout(y)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ffn_out(x)
        return self.out_norm(x)


def sinusoidal_positions(length: int, width: int, device=None) -> torch.Tensor:
    """(length, width) sinusoidal position codes."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    codes = torch.zeros(length, width, device=device)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq)
    return codes


class MeshToSpeech(nn.Module):
    """Motion features (B, T, D) at 25 fps -> unit logits (B, 2T, n_units) and log-mel (B, 4T, n_mels)."""

    def __init__(self, config: M2SConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        w = config.width
        self.encoder = nn.Sequential(nn.Linear(input_dim, w), nn.GELU(), nn.Linear(w, w), nn.GELU(),
                                     nn.Linear(w, w))
        self.unit_phase = nn.Parameter(torch.zeros(UNITS_PER_FRAME, w))  # tells the two 50 Hz steps apart
        self.blocks = nn.ModuleList(ConformerBlock(w, config.heads, config.ffn, config.conv_kernel, config.dropout)
                                    for _ in range(config.layers))
        self.unit_head = nn.Linear(w, config.n_units)
        self.mel_convs = nn.ModuleList(nn.Conv1d(w, w, 3, padding=1) for _ in range(3))
        self.mel_out = nn.Linear(w, MELS_PER_UNIT * config.n_mels)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None):
        """features: (B, T, D); lengths: (B,) valid frames per item, or None for all.

        Returns unit logits (B, 2T, n_units) and log-mel (B, 4T, n_mels).
        """
        batch, frames, _ = features.shape
        x = self.encoder(features)
        # 1. Upsample 25 fps -> 50 Hz: repeat each frame, and mark which half of the frame each step is.
        x = x.repeat_interleave(UNITS_PER_FRAME, dim=1) + self.unit_phase.repeat(frames, 1)
        steps = frames * UNITS_PER_FRAME
        x = x + sinusoidal_positions(steps, x.shape[-1], x.device)
        if lengths is None:
            pad_mask = torch.zeros(batch, steps, dtype=torch.bool, device=x.device)
        else:
            pad_mask = torch.arange(steps, device=x.device)[None] >= (lengths[:, None] * UNITS_PER_FRAME)
        # 2. Conformer over time.
        for block in self.blocks:
            x = block(x, pad_mask)
        # 3. Heads.
        units = self.unit_head(x)
        y = x.transpose(1, 2)
        for conv in self.mel_convs:
            y = nn.functional.gelu(conv(y))
        mel = self.mel_out(y.transpose(1, 2)).reshape(batch, steps * MELS_PER_UNIT, self.config.n_mels)
        return units, mel
