"""Loading an M2S checkpoint: a differentiable map from motion to speech (the diffusion training's M2S loss,
and the backend's scoring and listening).

    m2s = load_m2s("backend/models/m2s", head, trainable=False)   # frozen (the paper's default)
    units, mel = m2s.from_motion(expression, jaw)   # (B, T, E) and (B, T, 3): computes only mouth vertices
    units, mel = m2s(vertices)          # or full vertices (B, T, V, 3) from `head`, metres, head frame
    # units: (B, 2T, n_units) logits at 50 Hz; mel: (B, 4T, 80) log-mel at 100 Hz

Gradients flow to the vertices whether M2S is frozen or not; `trainable` only decides whether M2S's own
weights get gradients. Motion from another head, or a checkpoint whose weights do not fit its config, is
refused with one sentence. Details and the checkpoint layout: docs/m2s.md.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from backend.checkpoint import CheckpointError, load_weights, read_checkpoint
from backend.m2s.inputs import MotionFeatures
from backend.m2s.model import M2SConfig, MeshToSpeech

M2S_KIND = "thunder-m2s"


class M2S(nn.Module):
    """Motion features plus the mesh-to-speech network, for one head."""

    def __init__(self, features: MotionFeatures, network: MeshToSpeech, config: dict):
        super().__init__()
        self.features = features
        self.network = network
        self.config = config

    @property
    def unit_inventory(self) -> list[str]:
        return self.config["units"]["inventory"]

    def forward(self, vertices: torch.Tensor, lengths: torch.Tensor | None = None):
        return self.network(self.features.from_vertices(vertices), lengths)

    def from_motion(self, expression: torch.Tensor, jaw: torch.Tensor, lengths=None):
        """expression (B, T, E) and jaw (B, T, 3) in the head's frame: the cheap path (only the input
        vertices are computed), and the only one for Exp2Speech checkpoints."""
        return self.network(self.features.from_motion(expression, jaw), lengths)


def load_m2s(folder: str | Path, head, trainable: bool = False) -> M2S:
    """Load an M2S checkpoint for `head`; frozen (eval mode, no weight gradients) unless trainable."""
    config, weights = read_checkpoint(folder, M2S_KIND)
    if config["head"]["identity"] != head.identity:
        raise CheckpointError(f"{folder}: this M2S model was trained on the head {config['head']['identity']}, "
                              f"not on {head.identity}")
    model_config = M2SConfig(**config["model"])
    features = MotionFeatures(model_config.input, head)
    if features.dim != config["input_dim"]:
        raise CheckpointError(f"{folder}: the checkpoint expects {config['input_dim']} input values per frame, "
                              f"the head gives {features.dim}")
    network = MeshToSpeech(model_config, features.dim)
    load_weights(network, weights, folder)
    m2s = M2S(features, network, config)
    m2s.train(trainable)
    m2s.requires_grad_(trainable)
    return m2s
