"""Denoiser wrappers: they hide how a network was trained, so every sampler sees `denoiser(x, sigma) -> x0`."""

from __future__ import annotations

import torch


class VPDenoiser(torch.nn.Module):
    """A network trained as DDPM to predict x0: `network(x_t, t, **extra) -> x0` with x_t = sqrt(a_t) x0 +
    sqrt(1 - a_t) noise and t an integer timestep. Seen from a VE sampler, x_t = x / sqrt(1 + sigma^2) and t is
    the (fractional) timestep whose noise level is sigma, found by interpolating log-sigma."""

    def __init__(self, network, train_sigmas: torch.Tensor):
        super().__init__()
        self.network = network
        self.register_buffer("log_sigmas", train_sigmas.log())

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional DDPM timestep (0-based) of each noise level, clamped to the trained range."""
        log_sigma = sigma.log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        upper = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.log_sigmas) - 1)
        lo, hi = self.log_sigmas[upper - 1], self.log_sigmas[upper]
        return (upper - 1) + (log_sigma - lo) / (hi - lo)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        scale = (1 + sigma**2).rsqrt().reshape(-1, *([1] * (x.ndim - 1)))
        return self.network(x * scale, self.timestep(sigma), **extra)


class KnownValueDenoiser(torch.nn.Module):
    """Inpainting: a denoiser whose x0 keeps known values. `weight` (same shape as x, in [0, 1]) mixes the
    `target` into the wrapped denoiser's prediction: x0 = weight * target + (1 - weight) * denoiser(x, sigma).

    Why the estimate and not x: every sampler here steps x towards its x0 (x' = x0 + (sigma'/sigma)(x - x0)
    for DDIM, the same with a mixed x0 for DPM-Solver++ and Heun), so where weight is 1, x - target shrinks
    by sigma'/sigma each step: the known values ride the very noise the sampler started from, at the level of
    the current sigma (RePaint's re-noising, with no fresh noise to fight), and come out exact at sigma 0. The
    network thus sees, at every step, known frames as noisy as the free ones beside them, and predicts the
    free ones to join them: no seam at the edges, where pasting clean values would show it frames unlike
    any it was trained on."""

    def __init__(self, denoiser, target: torch.Tensor, weight: torch.Tensor):
        super().__init__()
        self.denoiser, self.target, self.weight = denoiser, target, weight

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        return torch.lerp(self.denoiser(x, sigma, **extra), self.target, self.weight)


class NoiseIntervalDenoiser(torch.nn.Module):
    """One denoiser at noise levels at or below `sigma_max`, another above it: what lets audio guidance act
    only in a limited interval of noise (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval
    improves sample and distribution quality"). At high noise guidance decides the take's large motions and
    makes the takes alike (head spread 2.9 degrees against 7.3 with guidance 2 everywhere, docs/results.md); at
    low noise it sharpens the short lip closures. Every element of a batch shares one sigma here."""

    def __init__(self, below, above, sigma_max: float):
        super().__init__()
        self.below, self.above, self.sigma_max = below, above, float(sigma_max)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        chosen = self.below if float(sigma.max()) <= self.sigma_max else self.above
        return chosen(x, sigma, **extra)
