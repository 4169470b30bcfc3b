"""Reading take files in Blender's Python, with numpy alone.

The format (docs/take_format.md) is written and fully checked by the backend (backend/takes.py), which the
add-on cannot import: it needs torch, and Blender's Python has none. The take files the add-on reads come
from that backend, so this reader checks only what the add-on relies on, and names the file in one sentence
when something is off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TAKE_FORMAT, TAKE_VERSION = "thunder-take", 1
PART_WIDTHS = {"expression": None, "jaw": 3, "neck": 3, "eyes": 6}


class TakeReadError(Exception):
    """A take file the add-on cannot use; its text is one sentence naming the file."""


@dataclass
class TakeData:
    path: Path
    parts: dict       # expression (T, E), jaw (T, 3), neck (T, 3), eyes (T, 6), float64
    meta: dict        # fps, seed, settings, model, head, audio (docs/take_format.md)

    @property
    def n_frames(self) -> int:
        return len(self.parts["expression"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])


def read_take(path) -> TakeData:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
        meta = json.loads(str(contents["meta"]))
    except FileNotFoundError:
        raise TakeReadError(f"the take file {path} does not exist") from None
    except Exception as exc:  # zip, numpy, JSON and OS errors all mean "not a readable take"
        raise TakeReadError(f"{path} is not a readable take file ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != TAKE_FORMAT or meta.get("version") != TAKE_VERSION:
        raise TakeReadError(f"{path} is not a Thunder take file of version {TAKE_VERSION}")
    parts = {}
    for name, width in PART_WIDTHS.items():
        value = np.asarray(contents.get(name), dtype=np.float64)
        if value.ndim != 2 or (width and value.shape[1] != width) or not np.isfinite(value).all():
            raise TakeReadError(f"{path}: the take's {name} is missing, of the wrong shape, or not finite")
        parts[name] = value
    if len({len(value) for value in parts.values()}) != 1 or not isinstance(meta.get("head"), dict):
        raise TakeReadError(f"{path}: the take's parts disagree on the frame count, or it names no head")
    return TakeData(path, parts, meta)
