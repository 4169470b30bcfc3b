"""Model checkpoints: weights as safetensors plus a JSON config, written atomically.

A checkpoint is a folder with `model.safetensors` and `config.json`. Both are written to temporary names
and renamed, config last, so a killed process never leaves a half-written checkpoint that looks whole.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from backend.errors import ThunderError
from backend.files import write_atomically

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ThunderError):
    """A checkpoint is missing, damaged, or does not match its config or its head."""


def save_checkpoint(folder: str | Path, model: torch.nn.Module, config: dict) -> Path:
    """Write the model's weights and its config into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_atomically(folder / WEIGHTS, lambda p: save_file(state, str(p)))
    write_atomically(folder / CONFIG, lambda p: p.write_text(json.dumps(config, indent=1)))
    return folder


def read_checkpoint(folder: str | Path, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config and weights of a checkpoint of `kind` (e.g. "thunder-m2s"), checked to exist."""
    folder = Path(folder).expanduser()
    if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
        raise CheckpointError(f"{folder}: not a checkpoint (it needs {CONFIG} and {WEIGHTS})")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"{folder / CONFIG}: damaged ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{folder / CONFIG}: damaged (it holds a JSON {type(config).__name__}, not an object)")
    if config.get("kind") != kind:
        raise CheckpointError(f"{folder}: a {config.get('kind', 'unknown')} checkpoint, not a {kind} one")
    try:
        weights = load_file(str(folder / WEIGHTS))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{folder / WEIGHTS}: damaged ({exc})") from None
    return config, weights


def check_config_keys(config: dict, required: dict, file: str | Path, where: str = "") -> None:
    """Refuse, in one sentence naming `file` and the key, a config that lacks a key of `required` or holds it
    with the wrong kind. `required` maps each key to a type (or a tuple of types), or to a dict of the keys
    required inside it."""
    for key, kind in required.items():
        name = f"{where}{key}"
        if key not in config:
            raise CheckpointError(f"{file}: the checkpoint's config lacks '{name}'")
        value = config[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise CheckpointError(f"{file}: the checkpoint's config has '{name}' as "
                                      f"{json.dumps(value)[:40]}, not an object")
            check_config_keys(value, kind, file, f"{name}.")
        elif isinstance(value, bool) or not isinstance(value, kind):
            want = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise CheckpointError(f"{file}: the checkpoint's config has '{name}' as {json.dumps(value)[:40]}, "
                                  f"not a {want}")


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], folder: str | Path) -> None:
    """Load weights into a model built from the checkpoint's config; a mismatch is a clear error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"{wrong[0]} is {tuple(weights[wrong[0]].shape)}, the config wants "
                       f"{tuple(expected[wrong[0]].shape)}")
        raise CheckpointError(f"{folder}: the weights do not match the checkpoint's config ({detail})")
    model.load_state_dict(weights)


def checkpoint_fingerprint(folder: str | Path) -> str:
    """A short hash of a checkpoint's config and weights (12 hex digits), recorded in every take so that a take
    names the exact model that made it, even when two model folders share a name."""
    folder = Path(folder).expanduser()
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        with open(folder / name, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]
