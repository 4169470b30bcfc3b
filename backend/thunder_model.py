"""The THUNDER model as inference sees it: audio encoder + motion denoiser + the motion statistics + the
diffusion schedule, for one head. Saved and loaded as a checkpoint folder (backend.checkpoint):

    model = load_model("backend/models/thunder", head)     # refuses a checkpoint made for another head
    features = model.encode(wave)                    # (T, A), any length, bounded memory
    motion = sample_takes(model, features, seeds=[0, 1, 2, 3])   # backend.take_sampling

config.json holds everything needed to rebuild the modules without training code or a network: the head's
identity, the packed motion's statistics, the encoder's and denoiser's configs, the diffusion schedule and
the sampling defaults, plus the training config that made it (for the record).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from backend.audio_encoders import build_encoder, encode_long
from backend.checkpoint import (CONFIG, CheckpointError, check_config_keys, load_weights, read_checkpoint,
                                save_checkpoint)
from backend.diffusion.network import DenoiserConfig, MotionDenoiser
from backend.diffusion.schedules import cosine_alphas_cumprod, sigmas_from_alphas_cumprod
from backend.motion import MotionStats, motion_dim

MODEL_KIND = "thunder-model"
MODEL_VERSION = 1
# What load_model needs from config.json before it builds anything (the rest is checked by building).
REQUIRED_CONFIG = {"version": int, "head": {"identity": str}, "n_expression": int,
                   "motion_stats": {"mean": list, "std": list}, "encoder": {"kind": str},
                   "denoiser": {"emotions": list}, "diffusion": {"train_steps": int}}


class ThunderModel(nn.Module):
    def __init__(self, encoder: nn.Module, denoiser: MotionDenoiser, stats: MotionStats, config: dict):
        super().__init__()
        self.encoder = encoder
        self.denoiser = denoiser
        self.stats = stats
        self.config = config
        self.n_expression = int(config["n_expression"])
        alphas = cosine_alphas_cumprod(int(config["diffusion"]["train_steps"]))
        self.register_buffer("alphas_cumprod", alphas, persistent=False)
        self.register_buffer("train_sigmas", sigmas_from_alphas_cumprod(alphas), persistent=False)

    @property
    def head_identity(self) -> str:
        return self.config["head"]["identity"]

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(self.denoiser.config.emotions)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, wave) -> torch.Tensor:
        """Mono 16 kHz audio (N,) -> features (T, A) on the model's device."""
        was_training = self.encoder.training
        self.encoder.eval()
        features = encode_long(self.encoder, wave).to(self.device)
        self.encoder.train(was_training)
        return features


def model_config(head, stats: MotionStats, encoder: nn.Module, denoiser_config: DenoiserConfig,
                 train_steps: int, sampling: dict, train: dict | None = None) -> dict:
    """The checkpoint config of a new model."""
    return {"kind": MODEL_KIND, "version": MODEL_VERSION,
            "head": {"name": head.name, "identity": head.identity},
            "n_expression": head.n_expression, "motion_stats": stats.to_json(),
            "encoder": encoder.config, "denoiser": _denoiser_json(denoiser_config),
            "diffusion": {"schedule": "cosine", "train_steps": train_steps, "prediction": "x0"},
            "sampling": sampling, "train": train or {}}


def _denoiser_json(config: DenoiserConfig) -> dict:
    data = dataclasses.asdict(config)
    data["emotions"] = list(config.emotions)
    return data


def build_model(config: dict) -> ThunderModel:
    denoiser_config = DenoiserConfig(**{**config["denoiser"], "emotions": tuple(config["denoiser"]["emotions"])})
    if denoiser_config.motion_dim != motion_dim(config["n_expression"]):
        raise CheckpointError("the checkpoint's motion size does not match its expression count")
    encoder = build_encoder(config["encoder"])
    return ThunderModel(encoder, MotionDenoiser(denoiser_config), MotionStats.from_json(config["motion_stats"]),
                        config)


def save_model(folder: str | Path, model: ThunderModel) -> Path:
    return save_checkpoint(folder, model, model.config)


def check_model_head(config: dict, head, folder: str | Path) -> None:
    """CheckpointError unless the model (its config) makes takes for `head`: the head it was trained for, or a
    FLAME head retargeted to that head (backend.head.retarget_head), whose takes are that head's."""
    if config["head"]["identity"] != head.takes_identity:
        raise CheckpointError(f"{folder}: this model was trained for the head {config['head']['identity']}, "
                              f"not for {head.takes_identity}")


def load_model(folder: str | Path, head=None, device: str | torch.device = "cpu") -> ThunderModel:
    """Load a THUNDER checkpoint (in eval mode) on `device`; with `head`, refuse one made for another head."""
    config, weights = read_checkpoint(folder, MODEL_KIND)
    config_file = Path(folder).expanduser() / CONFIG
    check_config_keys(config, REQUIRED_CONFIG, config_file)
    if config["version"] != MODEL_VERSION:
        raise CheckpointError(f"{folder} is a THUNDER checkpoint of version {config['version']}; this Thunder "
                              f"reads only version {MODEL_VERSION}")
    if head is not None:
        check_model_head(config, head, folder)
    try:
        model = build_model(config)
    except (TypeError, ValueError, KeyError) as exc:  # a field missing, unknown or of the wrong kind
        raise CheckpointError(f"{config_file}: the checkpoint's config does not describe a model this Thunder "
                              f"can build ({type(exc).__name__}: {exc})") from None
    load_weights(model, weights, folder)
    return model.to(device).eval().requires_grad_(False)
