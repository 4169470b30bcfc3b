"""Making a predicted log-mel audible.

A vocoder is anything with `__call__(log_mel (frames, 80)) -> wave (samples,)` at 16 kHz. The default,
Griffin-Lim, needs no weights: it inverts the mel filterbank to a magnitude spectrogram and iterates phase
estimates. It sounds buzzy, but it is honest: what you hear is what the mel says. A learned vocoder (for
example HiFi-GAN fed mel plus unit embeddings, as in Choi et al.) plugs in as another callable.
"""

from __future__ import annotations

import torch

from backend.audio import MEL_HOP, MEL_WINDOW, mel_filterbank


class GriffinLim:
    """Log-mel (frames, 80) to a 16 kHz waveform, by filterbank pseudo-inverse and Griffin-Lim."""

    def __init__(self, iterations: int = 64, momentum: float = 0.99, seed: int = 0):
        self.iterations = iterations
        self.momentum = momentum
        self.seed = seed

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        log_mel = log_mel.detach().float().cpu()
        filters = torch.as_tensor(mel_filterbank())  # (80, 321)
        power_mel = log_mel.exp().T  # (80, frames)
        # Minimum-norm inverse of the filterbank, kept non-negative. (torch.linalg.lstsq's default CPU
        # driver returns zeros for this underdetermined system, so use the pseudo-inverse.)
        power = (torch.linalg.pinv(filters) @ power_mel).clamp_min(0.0)
        magnitude = power.sqrt()
        window = torch.hann_window(MEL_WINDOW)
        generator = torch.Generator().manual_seed(self.seed)
        angles = torch.exp(2j * torch.pi * torch.rand(magnitude.shape, generator=generator))
        previous = torch.zeros_like(angles)
        length = magnitude.shape[1] * MEL_HOP
        for _ in range(self.iterations):
            wave = torch.istft(magnitude * angles, MEL_WINDOW, MEL_HOP, MEL_WINDOW, window, length=length)
            rebuilt = torch.stft(wave, MEL_WINDOW, MEL_HOP, MEL_WINDOW, window, return_complex=True)
            rebuilt = rebuilt[:, : magnitude.shape[1]]
            # Fast Griffin-Lim (Perraudin et al. 2013): extrapolate the phase update.
            accelerated = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            previous = rebuilt
            angles = accelerated / accelerated.abs().clamp_min(1e-8)
        wave = torch.istft(magnitude * angles, MEL_WINDOW, MEL_HOP, MEL_WINDOW, window, length=length)
        return wave / wave.abs().max().clamp_min(1e-8) * 0.9
