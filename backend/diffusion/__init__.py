"""Diffusion sampling, kept apart from the denoiser: schedules (noise levels), samplers (loops over them),
and denoiser wrappers (parameterization). In the spirit of k-diffusion."""
