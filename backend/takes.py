"""The take file: one sampled animation for one audio, as Thunder writes it and Blender reads it.

A take is an `.npz` holding four float32 arrays of per-frame head parameters and one JSON string:

    expression (T, E)   jaw (T, 3)   neck (T, 3)   eyes (T, 6)   meta: JSON text

`meta` says what the file is ("format": "thunder-take", "version": 1) and how the motion was made: fps,
seed, the sampling settings, the model and head identities, and the audio's hash, name, length and the time
range used. Plain arrays plus a string, so numpy alone reads it (`np.load(path, allow_pickle=False)`),
without torch and without pickles. docs/take_format.md is the specification; this module writes and checks
exactly that.

    save_take(path, take)                # atomic; refuses to replace an existing file unless overwrite=True
    take = load_take(path)               # TakeFileError, naming the file, for anything not a valid take
    vertices = take_vertices(take, head) # (T, V, 3); refuses a take made for another head
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from backend.errors import ThunderError
from backend.files import write_atomically

TAKE_FORMAT = "thunder-take"
TAKE_VERSION = 1
PART_WIDTHS = {"expression": None, "jaw": 3, "neck": 3, "eyes": 6}  # None: the head's expression count
META_KEYS = ("fps", "seed", "settings", "model", "head", "audio")


class TakeFileError(ThunderError):
    """A take file is missing, damaged, of another format or version, or inconsistent; or a take does not fit
    the head it is used with."""


@dataclasses.dataclass
class Take:
    """One sampled animation. Frame k shows the head k / fps seconds after `audio["start"]`.

    model: {"name": checkpoint folder name, "hash": short hash of its config and weights}
    head: {"name", "identity"} of the head the motion drives
    audio: {"sha256", "hashed" ("file" bytes or 16 kHz "samples"), "file" (name or null), "seconds" (all of
            it), "start", "end" (the seconds used)}
    settings: the SamplingSettings fields as a dict
    """

    expression: np.ndarray
    jaw: np.ndarray
    neck: np.ndarray
    eyes: np.ndarray
    fps: float
    seed: int
    settings: dict
    model: dict
    head: dict
    audio: dict

    @property
    def n_frames(self) -> int:
        return int(self.expression.shape[0])

    @property
    def seconds(self) -> float:
        """How long the take plays: its frame count over its frame rate."""
        return self.n_frames / self.fps

    def parts(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in PART_WIDTHS}

    def meta(self) -> dict:
        return {"format": TAKE_FORMAT, "version": TAKE_VERSION, "fps": float(self.fps), "seed": int(self.seed),
                "n_frames": self.n_frames, "settings": self.settings, "model": self.model, "head": self.head,
                "audio": self.audio}


def take_file_name(audio_stem: str, take_number: int, seed: int) -> str:
    """The name the command and the service give a take: `<audio stem>.take<k>.seed<s>.npz`, k from 1."""
    return f"{audio_stem}.take{take_number}.seed{seed}.npz"


def save_take(path: str | Path, take: Take, overwrite: bool = False) -> Path:
    """Write `take` to `path` (.npz) atomically: a killed process leaves no half-written take under its name.
    An existing file is an error unless `overwrite`; the take is checked as load_take would check it."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise TakeFileError(f"{path} already exists; Thunder does not overwrite take files")
    _check_take(take, path)
    arrays = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in take.parts().items()}
    meta = np.array(json.dumps(take.meta()))  # a 0-d unicode array: no pickle needed to read it back

    def write(tmp: Path):
        with open(tmp, "wb") as file:  # a file object, so numpy does not append ".npz" to the temporary name
            np.savez(file, meta=meta, **arrays)

    return write_atomically(path, write)


def load_take(path: str | Path) -> Take:
    """Read and check a take file; any problem is a TakeFileError whose sentence names the file."""
    path = Path(path)
    if not path.is_file():
        raise TakeFileError(f"the take file {path} does not exist" if not path.exists()
                            else f"{path} is not a file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
    except Exception as exc:  # zipfile, numpy and OS errors all mean "this is not a readable take"
        raise TakeFileError(f"{path} is not a readable take file ({type(exc).__name__}: {exc})") from None
    if "meta" not in contents:
        raise TakeFileError(f"{path} is not a Thunder take file (it has no 'meta' entry)")
    try:
        meta = json.loads(str(contents["meta"]))
    except ValueError:
        raise TakeFileError(f"{path}: the take's meta entry is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != TAKE_FORMAT:
        raise TakeFileError(f"{path} is not a Thunder take file (its format is "
                            f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != TAKE_VERSION:
        raise TakeFileError(f"{path}: take version {meta.get('version')} is not {TAKE_VERSION}; "
                            "this Thunder cannot read it")
    missing = [name for name in PART_WIDTHS if name not in contents] + [key for key in META_KEYS if key not in meta]
    if missing:
        raise TakeFileError(f"{path}: the take lacks {', '.join(missing)}")
    if not isinstance(meta["fps"], (int, float)) or not isinstance(meta["seed"], int):
        raise TakeFileError(f"{path}: the take's fps must be a number and its seed a whole number")
    take = Take(**{name: contents[name] for name in PART_WIDTHS}, **{key: meta[key] for key in META_KEYS})
    _check_take(take, path)
    if "n_frames" in meta and meta["n_frames"] != take.n_frames:
        raise TakeFileError(f"{path}: the take says it has {meta['n_frames']} frames but holds {take.n_frames}")
    return take


def _check_take(take: Take, path: Path) -> None:
    """Shapes agree, values are finite, fps is positive, and the identities are there."""
    if not math.isfinite(take.fps) or take.fps <= 0:
        raise TakeFileError(f"{path}: the take's frame rate {take.fps} is not a positive number")
    frames = set()
    for name, width in PART_WIDTHS.items():
        value = np.asarray(getattr(take, name))
        if value.ndim != 2 or (width is not None and value.shape[1] != width) or value.shape[1] == 0:
            want = "(frames, expressions)" if width is None else f"(frames, {width})"
            raise TakeFileError(f"{path}: the take's {name} has shape {value.shape}, not {want}")
        if not np.issubdtype(value.dtype, np.floating):
            raise TakeFileError(f"{path}: the take's {name} holds {value.dtype} values, not floats")
        if not np.isfinite(value).all():
            raise TakeFileError(f"{path}: the take's {name} has NaN or infinite values")
        frames.add(value.shape[0])
    if len(frames) > 1:
        raise TakeFileError(f"{path}: the take's parts disagree on the number of frames: {sorted(frames)}")
    for key in ("settings", "model", "head", "audio"):
        if not isinstance(getattr(take, key), dict):
            raise TakeFileError(f"{path}: the take's {key} must be a JSON object")
    if not isinstance(take.head.get("identity"), str):
        raise TakeFileError(f"{path}: the take does not say which head it was made for")


def take_vertices(take: Take, head, chunk_frames: int = 500) -> np.ndarray:
    """The take's mesh, (T, V, 3) float32 in metres, posed by `head` (a backend.head.Head), `chunk_frames`
    frames at a time so the intermediate tensors stay small. A take made for another head is refused: its
    expression coefficients would mean other shapes."""
    import torch  # here, so that reading takes needs numpy only

    if take.head.get("identity") != head.identity:
        raise TakeFileError(f"this take was made for the head {take.head.get('identity')}, not for "
                            f"{head.identity}")
    if take.expression.shape[1] != head.n_expression:
        raise TakeFileError(f"this take has {take.expression.shape[1]} expression coefficients; the head "
                            f"{head.identity} has {head.n_expression}")
    out = np.empty((take.n_frames, head.n_vertices, 3), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, take.n_frames, chunk_frames):
            frames = slice(start, start + chunk_frames)
            out[frames] = head(**{name: value[frames] for name, value in take.parts().items()}).cpu().numpy()
    return out
