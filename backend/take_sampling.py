"""Sampling takes from a THUNDER model: windows over long audio, guidance, seeds. Pure orchestration: the
noise levels come from `backend.diffusion.schedules`, the solvers from `backend.diffusion.samplers`, the
network from `backend.diffusion.network`.

Long audio is cut into windows of `window` frames that overlap by `context` frames. Every window after the
first is given the last `context` frames of the motion already made as known motion (the network was
trained to continue it); over those frames the motion fades from the old window's to the new one's, and
after them the new window's is kept, so minutes come out without seams (`training/thunder/seams.py`
measures them).

Seeds: each take has its own generator, seeded with its seed, and draws its noise window by window on the
CPU; so the same seed, audio and settings give the same take whatever else is in the batch, and another
seed gives another take.
"""

from __future__ import annotations

import dataclasses

import torch

from backend.diffusion.denoisers import KnownValueDenoiser, NoiseIntervalDenoiser, VPDenoiser
from backend.diffusion.samplers import SAMPLERS, Callback, SamplerStep
from backend.diffusion.schedules import karras_sigmas, timestep_sigmas
from backend.directing import channel_groups
from backend.errors import ThunderError
from backend.motion import motion_dim


class SamplingError(ThunderError):
    """Sampling settings the model cannot honour (unknown emotion, bad step count...)."""


MAX_STEPS = 1000
# Guidance extrapolates between network outputs; past ~10 the motion leaves anything the model was trained on,
# and at 1e30 it overflows to NaN (which used to be blamed on a damaged checkpoint).
MAX_GUIDANCE = 10.0
# The highest last noise level allowed: the motion is normalized to unit variance, so past ~10 the last step's
# x0 is close to the mean motion for the words (their conditional mean), with little of a take's own.
MAX_LOWEST_NOISE = 10.0
MAX_SMOOTHING = 3.0  # frames; backend.flicker_filter.MAX_SIGMA (past it the filter blurs the syllables)
BLINK_MODES = ("natural", "model")
GUIDANCE_CHANNELS = ("all", "lips")
MAX_WINDOW = 1000  # frames; a model's network may take fewer (its max_frames), which check() is told


@dataclasses.dataclass
class SamplingSettings:
    steps: int = 10
    sampler: str = "dpmpp_2m"        # ddim | heun | dpmpp_2m
    spacing: str = "karras"          # karras | timesteps (DDIM's even spacing in t)
    lowest_noise: float | None = None  # the noise level (sigma) of the last step, whose x0 is the take; None:
                                     # the training schedule's lowest. The steps below ~0.5 add frame-to-frame
                                     # detail, not motion: lip flicker, which the flicker filter then smooths
                                     # away with some closures (docs/results.md, "seventh round")
    guidance: float = 1.0            # classifier-free guidance on audio; 1 = none (one network call)
    emotion_guidance: float = 1.0    # the same on emotion
    guidance_max_noise: float | None = None  # audio guidance only at noise levels (sigma) at or below this;
                                     # None: at every step (backend.diffusion.denoisers.NoiseIntervalDenoiser)
    guidance_channels: str = "all"   # all | lips: audio guidance on every channel, or on the lips' only (the
                                     # mouth and jaw, backend.directing.channel_groups), the rest left free
    emotion: str = "neutral"
    intensity: float = 0.0
    window: int = 100                # frames per window (4 s)
    context: int = 10                # frames each window continues from the previous one
    smoothing: float = 1.5           # frames (at 25 fps) of backend.flicker_filter, which the callers that
                                     # know the head apply to the sampled takes; 0: the raw samples
    blinks: str = "natural"          # natural: blinks topped up to a human rate per take (backend/blinks.py);
                                     # model: the model's blinks as sampled

    def check(self, emotions, max_window: int | None = None) -> None:
        """Refuse, in one sentence, settings outside their ranges (MAX_STEPS, MAX_GUIDANCE, `max_window`: the
        longest window the model's network takes) or that this model cannot honour (`emotions`)."""
        if self.emotion not in emotions:
            raise SamplingError(f"unknown emotion '{self.emotion}'; this model knows {', '.join(emotions)}")
        if not 0.0 <= self.intensity <= 1.0:
            raise SamplingError(f"emotion intensity {self.intensity} is outside 0..1")
        if self.sampler not in SAMPLERS:
            raise SamplingError(f"unknown sampler '{self.sampler}'; choose {', '.join(SAMPLERS)}")
        if self.spacing not in ("karras", "timesteps"):
            raise SamplingError(f"unknown step spacing '{self.spacing}'; choose karras or timesteps")
        if not 1 <= self.steps <= MAX_STEPS:
            raise SamplingError(f"{self.steps} sampler steps: choose between 1 and {MAX_STEPS}")
        for name in ("guidance", "emotion_guidance"):
            if not 0.0 <= getattr(self, name) <= MAX_GUIDANCE:
                raise SamplingError(f"the {name.replace('_', ' ')} scale {getattr(self, name):g} is outside 0.."
                                    f"{MAX_GUIDANCE:g} (1: no guidance)")
        longest = max_window or MAX_WINDOW
        if not 2 <= self.window <= longest:
            raise SamplingError(f"a window of {self.window} frames: choose between 2 and {longest}")
        if self.lowest_noise is not None and not 0.0 < self.lowest_noise <= MAX_LOWEST_NOISE:
            raise SamplingError(f"the lowest noise level {self.lowest_noise:g} is outside 0..{MAX_LOWEST_NOISE:g} "
                                "(none: the model's lowest)")
        if self.guidance_max_noise is not None and not self.guidance_max_noise >= 0.0:
            raise SamplingError(f"the guidance noise limit {self.guidance_max_noise:g} must be 0 or more "
                                "(none: guidance at every step)")
        if self.guidance_channels not in GUIDANCE_CHANNELS:
            raise SamplingError(f"unknown guidance channels '{self.guidance_channels}'; choose "
                                f"{' or '.join(GUIDANCE_CHANNELS)}")
        if not 0.0 <= self.smoothing <= MAX_SMOOTHING:
            raise SamplingError(f"smoothing {self.smoothing:g} frames is outside 0..{MAX_SMOOTHING:g} (0: none)")
        if self.blinks not in BLINK_MODES:
            raise SamplingError(f"unknown blinks '{self.blinks}'; choose {' or '.join(BLINK_MODES)}")
        if not 0 <= self.context < self.window:
            raise SamplingError(f"context {self.context} must be shorter than the window {self.window}")


def sampling_sigmas(train_sigmas: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """The sampler's noise levels, descending to 0: `steps` of them from the schedule's highest down to
    `lowest_noise`, held within the levels the model was trained on (`train_sigmas`, ascending; None: their
    lowest)."""
    lowest = float(train_sigmas[0]) if settings.lowest_noise is None else settings.lowest_noise
    lowest = min(max(lowest, float(train_sigmas[0])), float(train_sigmas[-1]))
    if settings.spacing == "karras" and settings.steps > 1:
        return karras_sigmas(settings.steps, lowest, float(train_sigmas[-1]))
    return timestep_sigmas(train_sigmas[train_sigmas >= lowest], settings.steps)   # never empty: lowest <= the top


class GuidedNetwork:
    """The denoiser network with classifier-free guidance folded in: `(x_t, t, **cond) -> x0`.

    x0 = x0(no audio) + g_a (x0(audio) - x0(no audio)) + (g_e - 1) (x0(audio) - x0(audio, no emotion));
    only the calls a guidance scale other than 1 needs are made, batched into one network call.
    `audio_channels` ((D,) bool, optional): the channels the audio guidance acts on; the others keep
    x0(audio), as unguided sampling has them."""

    def __init__(self, network, guidance: float, emotion_guidance: float, audio_channels=None):
        self.network, self.guidance, self.emotion_guidance = network, guidance, emotion_guidance
        self.audio_channels = audio_channels

    def __call__(self, x_t, t, audio, emotion, intensity, style, known, known_mask):
        batch = x_t.shape[0]
        present = torch.ones(batch, dtype=torch.bool, device=x_t.device)
        variants = [(present, emotion)]
        if self.guidance != 1.0:
            variants.append((~present, emotion))
        if self.emotion_guidance != 1.0:
            variants.append((present, torch.full_like(emotion, self.network.no_emotion)))
        n = len(variants)
        out = self.network(x_t.repeat(n, 1, 1), t.repeat(n), audio.repeat(n, 1, 1),
                           audio_present=torch.cat([v[0] for v in variants]),
                           emotion=torch.cat([v[1] for v in variants]), intensity=intensity.repeat(n),
                           style=None if style is None else style.repeat(n, 1),
                           known=known.repeat(n, 1, 1), known_mask=known_mask.repeat(n, 1)).split(batch)
        x0, k = out[0], 1
        if self.guidance != 1.0:
            x0 = out[k] + self.guidance * (out[0] - out[k])
            if self.audio_channels is not None:
                x0 = torch.where(self.audio_channels.to(x0.device), x0, out[0])
            k += 1
        if self.emotion_guidance != 1.0:
            x0 = x0 + (self.emotion_guidance - 1.0) * (out[0] - out[k])
        return x0


@dataclasses.dataclass
class KnownMotion:
    """Values the sampler keeps (inpainting: a range resample's kept frames, a held pose, a keyed
    expression): per frame and channel a target in the head's own units (denormalized packed motion) and a
    weight in [0, 1], 1 imposing the target and 0 leaving the model free (backend/directing.py makes them)."""

    target: torch.Tensor   # (T, D)
    weight: torch.Tensor   # (T, D)


def window_starts(n_frames: int, window: int, context: int) -> list[int]:
    """Start frames of the windows covering n_frames: each overlaps the previous one by `context` frames."""
    starts = [0]
    while starts[-1] + window < n_frames:
        starts.append(starts[-1] + window - context)
    return starts


def model_settings(model) -> SamplingSettings:
    """The model's own sampling defaults: its config's "sampling" (what it was tuned to sample with) over
    SamplingSettings' defaults. What `thunder generate`, the service and `thunder eval` start from."""
    fields = SamplingSettings.__dataclass_fields__
    return SamplingSettings(**{k: v for k, v in model.config.get("sampling", {}).items() if k in fields})


@torch.no_grad()
def sample_takes(model, features: torch.Tensor, seeds: list[int], settings: SamplingSettings | None = None,
                 style: torch.Tensor | None = None, callback: Callback = None,
                 imposed: KnownMotion | None = None, expression_names=None) -> torch.Tensor:
    """Sample one take per seed for audio features (T, A). Returns denormalized packed motion (K, T, D) on
    the CPU. `callback(SamplerStep)` sees every step; raising `Cancelled` in it stops between steps.
    `expression_names`: the head's, which guidance on the lips only (settings.guidance_channels) needs.

    `imposed` (T frames): values kept at every step (`KnownValueDenoiser`); frames known in every channel
    are also handed to the network as known motion, as the previous window's context is."""
    settings = settings or model_settings(model)
    settings.check(model.emotions, model.denoiser.config.max_frames)
    device, dim = model.device, model.denoiser.config.motion_dim
    n_frames, n_takes = features.shape[0], len(seeds)
    if n_frames == 0:
        return torch.zeros(n_takes, 0, dim)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    audio_channels = None
    if settings.guidance_channels == "lips" and settings.guidance != 1.0:
        if expression_names is None or motion_dim(len(expression_names)) != dim:
            raise SamplingError("guidance on the lips only needs the head's expression names, one per "
                                "expression of the model")
        audio_channels = torch.from_numpy(channel_groups(expression_names)["lips"])
    denoiser = VPDenoiser(GuidedNetwork(model.denoiser, settings.guidance, settings.emotion_guidance,
                                        audio_channels), model.train_sigmas)
    if settings.guidance_max_noise is not None and settings.guidance != 1.0:
        unguided = VPDenoiser(GuidedNetwork(model.denoiser, 1.0, settings.emotion_guidance), model.train_sigmas)
        denoiser = NoiseIntervalDenoiser(denoiser, unguided, settings.guidance_max_noise)
    sigmas = sampling_sigmas(model.train_sigmas, settings).to(device)
    emotion = torch.full((n_takes,), model.emotions.index(settings.emotion), dtype=torch.long, device=device)
    intensity = torch.full((n_takes,), float(settings.intensity), device=device)
    style = None if style is None else style.to(device).expand(n_takes, -1)
    out = torch.zeros(n_takes, n_frames, dim, device=device)
    if imposed is not None:
        if imposed.target.shape != (n_frames, dim) or imposed.weight.shape != (n_frames, dim):
            raise ValueError(f"imposed values of shape {tuple(imposed.target.shape)} for {n_frames} frames of {dim}")
        known_target = model.stats.normalize(imposed.target.to(device, torch.float32))
        known_weight = imposed.weight.to(device, torch.float32).clamp(0, 1)
        whole_frames = (known_weight == 1).all(-1)
    starts = window_starts(n_frames, settings.window, settings.context)
    for w, start in enumerate(starts):
        stop = min(start + settings.window, n_frames)
        length = stop - start
        keep_from = settings.context if w > 0 else 0
        known = torch.zeros(n_takes, length, dim, device=device)
        known_mask = torch.zeros(n_takes, length, dtype=torch.bool, device=device)
        if keep_from:
            known[:, :keep_from] = out[:, start:start + keep_from]
            known_mask[:, :keep_from] = True
        window_denoiser = denoiser
        if imposed is not None:
            whole = whole_frames[start:stop]
            known[:, whole] = known_target[start:stop][whole]
            known_mask[:, whole] = True
            window_denoiser = KnownValueDenoiser(denoiser, known_target[None, start:stop],
                                                 known_weight[None, start:stop])
        noise = torch.stack([torch.randn(length, dim, generator=g) for g in generators]).to(device)
        audio = features[start:stop][None].expand(n_takes, -1, -1)
        extra = {"audio": audio, "emotion": emotion, "intensity": intensity, "style": style,
                 "known": known, "known_mask": known_mask}

        def report(step: SamplerStep, w=w):
            if callback is not None:
                callback(dataclasses.replace(step, index=w * step.total + step.index,
                                             total=len(starts) * step.total))

        x0 = SAMPLERS[settings.sampler](window_denoiser, noise * sigmas[0], sigmas, extra, report)
        if keep_from:
            # Cross-fade the overlap: the new window re-makes the context frames it was given, close to but
            # not exactly the old ones; fading from old to new over them leaves no jump at either end.
            ramp = (torch.arange(keep_from, device=device, dtype=x0.dtype) + 1) / (keep_from + 1)
            overlap = out[:, start:start + keep_from]
            out[:, start:start + keep_from] = overlap + ramp[None, :, None] * (x0[:, :keep_from] - overlap)
        out[:, start + keep_from:stop] = x0[:, keep_from:]
    return model.stats.denormalize(out).cpu()


def style_vector(normalized_motion: torch.Tensor) -> torch.Tensor:
    """The style of a motion: the mean and std over time of its normalized values, (T, D) -> (2D,).
    Training computes it from each clip, so a take can be asked to move like a reference take."""
    return torch.cat([normalized_motion.mean(0), normalized_motion.std(0, unbiased=False)])
