"""Samplers: small loops over a schedule that call a denoiser. None of them knows what the denoiser is.

A denoiser is `denoiser(x, sigma, **extra) -> x0`: the clean sample it predicts from x = x0 + sigma * noise,
with sigma a (B,) tensor. A sampler takes the starting noise x (already scaled by sigmas[0]), the descending
sigmas ending at 0, and returns the sample. After each step it calls `callback(SamplerStep)`; a callback that
raises (for example `Cancelled`) stops the sampler between steps, which is how cancel works.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch


class Cancelled(Exception):
    """Raised by a callback to stop sampling between steps."""


@dataclasses.dataclass(frozen=True)
class SamplerStep:
    index: int              # step just finished, 0-based
    total: int              # number of steps
    sigma: float            # noise level the step started from
    x: torch.Tensor         # current sample
    denoised: torch.Tensor  # the denoiser's x0 at this step


Callback = Callable[[SamplerStep], None] | None


def _report(callback: Callback, i: int, sigmas: torch.Tensor, x: torch.Tensor, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback(SamplerStep(i, len(sigmas) - 1, float(sigmas[i]), x, denoised))


@torch.no_grad()
def sample_ddim(denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra: dict | None = None,
                callback: Callback = None) -> torch.Tensor:
    """Deterministic DDIM (eta = 0), which is Euler's method on the probability-flow ODE in sigma."""
    extra = extra or {}
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * ones, **extra)
        x = denoised + (sigmas[i + 1] / sigmas[i]) * (x - denoised)
        _report(callback, i, sigmas, x, denoised)
    return x


@torch.no_grad()
def sample_heun(denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra: dict | None = None,
                callback: Callback = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022): two denoiser calls per step but the last."""
    extra = extra or {}
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * ones, **extra)
        slope = (x - denoised) / sigmas[i]
        step = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + slope * step
        else:
            x_euler = x + slope * step
            slope_next = (x_euler - denoiser(x_euler, sigmas[i + 1] * ones, **extra)) / sigmas[i + 1]
            x = x + 0.5 * (slope + slope_next) * step
        _report(callback, i, sigmas, x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra: dict | None = None,
                    callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second order from the previous step's x0, one call per step."""
    extra = extra or {}
    ones = x.new_ones(x.shape[0])
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * ones, **extra)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
            h = t_next - t
            if previous is None:
                estimate = denoised
            else:
                h_last = t - (-sigmas[i - 1].log())
                r = h_last / h
                estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * estimate
        previous = denoised
        _report(callback, i, sigmas, x, denoised)
    return x


SAMPLERS = {"ddim": sample_ddim, "heun": sample_heun, "dpmpp_2m": sample_dpmpp_2m}
