"""The take file's one validation rule, and the add-on's take reader: numpy and the standard library only.

The format is docs/take_format.md. This module is the only place that decides whether a file is a valid
take: the add-on reads takes with `read_take` in Blender's Python (no torch, no backend), and the backend's
`backend.take_file` imports this module (one of the add-on's few modules without bpy that the backend shares:
tests/test_import_rules.py) for `load_take` and `save_take`. So a take one side accepts, the other accepts
too. Keep it free of bpy, of torch and of imports from the rest of the add-on but errors.py.

    parts, meta = read_take_file(path)   # the arrays as stored and the meta; TakeReadError names the file
    check_take_contents(path, parts, meta)
    take = read_take(path)               # the add-on's TakeData, float64 parts
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ThunderError

TAKE_FORMAT, TAKE_VERSION = "thunder-take", 1
PART_WIDTHS = {"expression": None, "jaw": 3, "neck": 3, "eyes": 6}  # None: the head's expression count
META_KEYS = ("fps", "seed", "n_frames", "settings", "model", "head", "audio")
MAX_SEED = 2**63 - 1


class TakeReadError(ThunderError):
    """A file that is not a valid take; its text is one sentence naming the file."""


@dataclass
class TakeData:
    path: Path
    parts: dict       # expression (T, E), jaw (T, 3), neck (T, 3), eyes (T, 6), float64
    meta: dict        # fps, seed, n_frames, settings, model, head, audio, optional scores (docs/take_format.md)

    @property
    def n_frames(self) -> int:
        return len(self.parts["expression"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    @property
    def scores(self) -> dict:
        """The take's optional scores ({} when it has none), e.g. {"m2s_mel_l1": 1.42}."""
        return dict(self.meta.get("scores", {}))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_take_contents(path, parts: dict, meta) -> None:
    """The rule: raise TakeReadError (naming `path`) unless `parts` ({name: array}) and `meta` (the decoded
    JSON) make a valid take of this version."""
    if not isinstance(meta, dict) or meta.get("format") != TAKE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise TakeReadError(f"{path} is not a Thunder take file (its format is {found!r}, not {TAKE_FORMAT!r})")
    if "version" not in meta:
        raise TakeReadError(f"{path}: the take does not say which version of the take format it is")
    if meta["version"] != TAKE_VERSION or isinstance(meta["version"], bool):
        raise TakeReadError(f"{path} is a take of format version {meta['version']!r}; this Thunder reads only "
                            f"version {TAKE_VERSION}")
    missing = [name for name in PART_WIDTHS if name not in parts] + [key for key in META_KEYS if key not in meta]
    if missing:
        raise TakeReadError(f"{path}: the take lacks {', '.join(missing)}")
    fps = meta["fps"]
    if not _is_number(fps) or not math.isfinite(fps) or fps <= 0:
        raise TakeReadError(f"{path}: the take's frame rate {fps!r} is not a positive number")
    seed = meta["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise TakeReadError(f"{path}: the take's seed {seed!r} is not a whole number from 0 to 2^63 - 1")
    frames = set()
    for name, width in PART_WIDTHS.items():
        value = parts[name]
        shape = getattr(value, "shape", None)
        if not isinstance(value, np.ndarray) or value.ndim != 2 or value.shape[1] == 0 \
                or (width is not None and value.shape[1] != width):
            want = "(frames, expressions)" if width is None else f"(frames, {width})"
            raise TakeReadError(f"{path}: the take's {name} has shape {shape}, not {want}")
        if not np.issubdtype(value.dtype, np.floating):
            raise TakeReadError(f"{path}: the take's {name} holds {value.dtype} values, not floats")
        if not np.isfinite(value).all():
            raise TakeReadError(f"{path}: the take's {name} has NaN or infinite values")
        frames.add(value.shape[0])
    if len(frames) > 1:
        raise TakeReadError(f"{path}: the take's parts disagree on the number of frames: {sorted(frames)}")
    n_frames = frames.pop()
    if n_frames == 0:
        raise TakeReadError(f"{path}: the take has no frames")
    if meta["n_frames"] != n_frames or not isinstance(meta["n_frames"], int) or isinstance(meta["n_frames"], bool):
        raise TakeReadError(f"{path}: the take says it has {meta['n_frames']!r} frames but holds {n_frames}")
    for key in ("settings", "model", "head", "audio"):
        if not isinstance(meta[key], dict):
            raise TakeReadError(f"{path}: the take's {key} must be a JSON object")
    if not isinstance(meta["head"].get("identity"), str) or not meta["head"]["identity"]:
        raise TakeReadError(f"{path}: the take does not say which head it was made for")
    scores = meta.get("scores", {})   # optional (docs/take_format.md): how well the take's lips read
    if not isinstance(scores, dict) or not all(_is_number(v) and math.isfinite(v) for v in scores.values()):
        raise TakeReadError(f"{path}: the take's scores must be a JSON object of finite numbers")


def read_take_file(path) -> tuple[dict, dict]:
    """The parts of a take file as stored ({name: array}) and its meta, checked by check_take_contents."""
    path = Path(path)
    if not path.is_file():
        raise TakeReadError(f"the take file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        if not zipfile.is_zipfile(path):
            raise TakeReadError(f"{path} is not a take file: it is not a .npz (zip) file")
        with np.load(path, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
    except TakeReadError:
        raise
    except Exception as exc:  # zip, numpy and OS errors all mean "not a readable take"
        raise TakeReadError(f"{path} is not a readable take file ({type(exc).__name__}: {exc})") from None
    if "meta" not in contents:
        raise TakeReadError(f"{path} is not a Thunder take file (it has no 'meta' entry)")
    meta_entry = contents.pop("meta")
    if meta_entry.ndim != 0 or meta_entry.dtype.kind != "U":
        raise TakeReadError(f"{path}: the take's meta entry is not a JSON string")
    try:
        meta = json.loads(str(meta_entry))
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack
        raise TakeReadError(f"{path}: the take's meta entry is not valid JSON") from None
    check_take_contents(path, contents, meta)
    return {name: contents[name] for name in PART_WIDTHS}, meta


def read_take(path) -> TakeData:
    """A take file for the add-on: its parts as float64 and its meta."""
    parts, meta = read_take_file(path)
    return TakeData(Path(path), {name: value.astype(np.float64) for name, value in parts.items()}, meta)
