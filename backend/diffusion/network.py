"""The denoiser network: a transformer over a window of motion frames that predicts the clean motion (x0).

Per frame it reads the noisy motion, the audio features of that frame, and the known motion (the end of the
previous window, for seamless long takes) with its mask. Per window it reads the diffusion timestep, an
emotion (label embedding scaled by intensity) and an optional style vector; these modulate every block
(adaptive layer norm, as in DiT), so conditioning reaches all layers. Audio, emotion and style each have a
learned "absent" value: training drops them at random, which is what classifier-free guidance needs.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn


@dataclasses.dataclass
class DenoiserConfig:
    motion_dim: int = 51
    audio_dim: int = 128
    style_dim: int = 102
    emotions: tuple = ("neutral", "angry", "happy", "sad", "surprised")
    width: int = 192
    layers: int = 4
    heads: int = 4
    ffn: int = 768
    dropout: float = 0.1
    max_frames: int = 512  # longest window (positions are learned up to here)

    @classmethod
    def paper(cls, **overrides) -> "DenoiserConfig":
        """DiffPoseTalk-sized: 8 layers, 512 wide."""
        return cls(**{"width": 512, "layers": 8, "heads": 8, "ffn": 2048, **overrides})


def timestep_embedding(t: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) fractional timesteps -> (B, width) sinusoids."""
    half = width // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angle = t.float()[:, None] * freq[None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class AdaptiveBlock(nn.Module):
    """Pre-norm transformer block whose norms are scaled and shifted by the window's condition vector."""

    def __init__(self, width: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, width))
        self.dropout = nn.Dropout(dropout)
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, condition, pad_mask):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(condition)[:, None].chunk(6, dim=-1)
        y = self.attn_norm(x) * (1 + scale1) + shift1
        y, _ = self.attn(y, y, y, key_padding_mask=pad_mask, need_weights=False)
        x = x + (1 + gate1) * self.dropout(y)
        y = self.ffn_norm(x) * (1 + scale2) + shift2
        return x + (1 + gate2) * self.dropout(self.ffn(y))


class MotionDenoiser(nn.Module):
    """x_t (B, T, D), t (B,), audio (B, T, A) -> x0 (B, T, D). See `forward` for the optional inputs."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.motion_in = nn.Linear(config.motion_dim, w)
        self.known_in = nn.Linear(config.motion_dim + 1, w)
        self.audio_in = nn.Sequential(nn.Linear(config.audio_dim, w), nn.GELU(), nn.Linear(w, w))
        self.no_audio = nn.Parameter(torch.zeros(w))
        self.positions = nn.Parameter(torch.randn(config.max_frames, w) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        # Emotion: one embedding per label, scaled by intensity; index len(emotions) is "absent".
        self.emotion = nn.Embedding(len(config.emotions) + 1, w)
        self.style_in = nn.Linear(config.style_dim, w)
        self.no_style = nn.Parameter(torch.zeros(w))
        self.blocks = nn.ModuleList(AdaptiveBlock(w, config.heads, config.ffn, config.dropout)
                                    for _ in range(config.layers))
        self.out_norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, config.motion_dim)

    @property
    def no_emotion(self) -> int:
        return len(self.config.emotions)

    def forward(self, x_t, t, audio, audio_present=None, emotion=None, intensity=None, style=None,
                known=None, known_mask=None, lengths=None):
        """
        x_t: (B, T, D) noisy normalized motion; t: (B,) DDPM timestep (fractional allowed)
        audio: (B, T, A) features; audio_present: (B,) bool, False -> the learned "no audio"
        emotion: (B,) long label index (no_emotion -> absent); intensity: (B,) in [0, 1]
        style: (B, S) or None; rows of NaN also mean "no style"
        known: (B, T, D) motion given as context, known_mask: (B, T) bool where it is given
        lengths: (B,) valid frames (padding is masked out of attention)
        Returns x0: (B, T, D).
        """
        batch, frames, _ = x_t.shape
        if frames > self.config.max_frames:
            raise ValueError(f"a window of {frames} frames is longer than the model's {self.config.max_frames}")
        h = self.motion_in(x_t) + self.positions[:frames]
        a = self.audio_in(audio)
        if audio_present is not None:
            a = torch.where(audio_present[:, None, None], a, self.no_audio.expand_as(a))
        h = h + a
        if known is not None and known_mask is not None:
            m = known_mask[..., None].to(x_t.dtype)
            h = h + self.known_in(torch.cat([known * m, m], dim=-1))

        condition = self.time_mlp(timestep_embedding(t, self.config.width))
        if emotion is None:
            emotion = torch.full((batch,), self.no_emotion, dtype=torch.long, device=x_t.device)
        scale = torch.ones(batch, device=x_t.device) if intensity is None else intensity.to(x_t.dtype)
        scale = torch.where(emotion == self.no_emotion, torch.ones_like(scale), scale)
        condition = condition + self.emotion(emotion) * scale[:, None]
        if style is None:
            condition = condition + self.no_style
        else:
            has_style = ~torch.isnan(style).any(-1, keepdim=True)
            condition = condition + torch.where(has_style, self.style_in(torch.nan_to_num(style)), self.no_style)

        pad_mask = None
        if lengths is not None:
            pad_mask = torch.arange(frames, device=x_t.device)[None] >= lengths[:, None]
        for block in self.blocks:
            h = block(h, condition, pad_mask)
        return self.out(self.out_norm(h))
