"""Noise schedules: functions that return noise levels, nothing else.

Sampling works in the variance-exploding view: x_sigma = x0 + sigma * noise, sigmas descending to 0. A model
trained as DDPM (variance preserving, x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise, a_t the cumulative alpha)
sees the same point scaled: x_t = x_sigma / sqrt(1 + sigma^2) with sigma = sqrt((1 - a_t) / a_t). So one
sampler serves either training view; `backend.diffusion.denoisers` does the conversion.
"""

from __future__ import annotations

import math

import torch


def cosine_alphas_cumprod(n_steps: int = 1000, offset: float = 0.008) -> torch.Tensor:
    """Nichol and Dhariwal's cosine schedule: (n_steps,) cumulative alphas for t = 1..n_steps, decreasing."""
    t = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    alphas_cumprod = f[1:] / f[0]
    return alphas_cumprod.clamp(1e-5, 1.0).float()


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The VE noise level of each DDPM timestep: sqrt((1 - a) / a), increasing with t."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def timestep_sigmas(train_sigmas: torch.Tensor, n_steps: int) -> torch.Tensor:
    """DDIM's choice: n_steps of the training noise levels, evenly spaced in t, from the largest down,
    then 0. Returns (n_steps + 1,) descending."""
    index = torch.linspace(len(train_sigmas) - 1, 0, n_steps).round().long()
    return torch.cat([train_sigmas[index], train_sigmas.new_zeros(1)])


def karras_sigmas(n_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al.'s spacing (more steps at low noise), then 0. Returns (n_steps + 1,) descending."""
    ramp = torch.linspace(0, 1, n_steps)
    inv_rho_min, inv_rho_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])
