"""Samplers on an analytic denoiser whose right answer is known: Gaussian data N(mu, s^2), for which the
best x0 estimate from x = x0 + sigma * noise is mu + s^2 / (s^2 + sigma^2) (x - mu)."""

import pytest
import torch

from backend.diffusion.denoisers import VPDenoiser
from backend.diffusion.samplers import SAMPLERS, Cancelled
from backend.diffusion.schedules import (cosine_alphas_cumprod, karras_sigmas, sigmas_from_alphas_cumprod,
                                         timestep_sigmas)

MU, S = 1.5, 1.0  # motion is normalized to unit variance


def gaussian_denoiser(x, sigma):
    s2 = S * S
    return MU + (s2 / (s2 + sigma[:, None] ** 2)) * (x - MU)


def start_noise(sigma_max, n=40000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, generator=g, dtype=torch.float64) * sigma_max


@pytest.mark.parametrize("name, steps, tolerance", [("ddim", 50, 0.06), ("heun", 25, 0.03),
                                                    ("dpmpp_2m", 25, 0.03)])
def test_samplers_recover_the_data_distribution(name, steps, tolerance):
    sigmas = karras_sigmas(steps, 0.002, 80.0).double()
    x = SAMPLERS[name](gaussian_denoiser, start_noise(80.0), sigmas)
    assert abs(x.mean().item() - MU) < tolerance
    assert abs(x.std().item() / S - 1) < tolerance


def test_more_steps_are_closer():
    errors = []
    for steps in (2, 4, 10, 25, 50):
        x = SAMPLERS["ddim"](gaussian_denoiser, start_noise(80.0), karras_sigmas(steps, 0.002, 80.0).double())
        errors.append(abs(x.std().item() / S - 1))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.06


def test_callback_sees_every_step_and_can_cancel_between_steps():
    seen = []

    def stop_after_three(step):
        seen.append((step.index, step.total))
        if step.index == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        SAMPLERS["dpmpp_2m"](gaussian_denoiser, start_noise(80.0, n=10), karras_sigmas(8, 0.002, 80.0).double(),
                             callback=stop_after_three)
    assert seen == [(0, 8), (1, 8), (2, 8)]


def test_a_vp_trained_x0_network_samples_like_the_ve_denoiser():
    """A DDPM-trained x0 predictor, wrapped, gives the same samples as the VE denoiser it is equivalent to."""
    alphas = cosine_alphas_cumprod(1000).double()
    train_sigmas = sigmas_from_alphas_cumprod(alphas)

    def vp_network(x_t, t):
        # The exact x0 predictor in the VP view: undo the scaling with the sigma of the (fractional) timestep.
        log_sigmas = train_sigmas.log()
        lo = t.floor().long().clamp(0, len(log_sigmas) - 2)
        log_sigma = log_sigmas[lo] + (t - lo) * (log_sigmas[lo + 1] - log_sigmas[lo])
        sigma = log_sigma.exp()
        return gaussian_denoiser(x_t * (1 + sigma[:, None] ** 2).sqrt(), sigma)

    denoiser = VPDenoiser(vp_network, train_sigmas)
    sigmas = timestep_sigmas(train_sigmas, 10)
    assert sigmas[0] == train_sigmas[-1] and sigmas[-1] == 0 and (sigmas[:-1] > sigmas[1:]).all()
    noise = start_noise(float(sigmas[0]), n=2000)
    a = SAMPLERS["ddim"](denoiser, noise, sigmas)
    b = SAMPLERS["ddim"](gaussian_denoiser, noise, sigmas)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
