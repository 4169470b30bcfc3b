"""What resuming a training run needs beyond the weights: optimizer moments, step, log and RNG states.

Saved as `train_state.pt` beside the checkpoint (torch.save of plain tensors, numbers and dicts, so it
loads with weights_only=True), atomically, after the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backend.files import write_atomically

STATE = "train_state.pt"


def save_training_state(folder: Path, model, optimizer, step: int, log: list, rng: np.random.Generator) -> None:
    state = {"step": step, "log": log, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state}
    write_atomically(Path(folder) / STATE, lambda tmp: torch.save(state, tmp))


def load_training_state(folder: Path, model, optimizer) -> tuple[int, list, np.random.Generator]:
    """Restore model, optimizer and RNG in place; returns (step, log, numpy generator)."""
    state = torch.load(Path(folder) / STATE, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    rng = np.random.default_rng()
    rng.bit_generator.state = state["numpy_rng"]
    return state["step"], state["log"], rng
