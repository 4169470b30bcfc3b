"""The take file: one sampled animation for one audio, as Thunder writes it and Blender reads it.

A take is an `.npz` holding four float32 arrays of per-frame head parameters and one JSON string:

    expression (T, E)   jaw (T, 3)   neck (T, 3)   eyes (T, 6)   meta: JSON text

`meta` says what the file is ("format": "thunder-take", "version": 1) and how the motion was made: fps,
seed, the sampling settings, the model and head identities, and the audio's hash, name, length and the time
range used. Plain arrays plus a string, so numpy alone reads it (`np.load(path, allow_pickle=False)`),
without torch and without pickles. docs/take_format.md is the specification; this module writes it, and
checks it with the one rule the add-on checks it with too (thunder_blender/take_file.py).

    save_take(path, take)                # atomic; refuses to replace an existing file unless overwrite=True
    take = load_take(path)               # TakeFileError, naming the file, for anything not a valid take
    vertices = take_vertices(take, head) # (T, V, 3); refuses a take made for another head
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from backend.errors import ThunderError
from backend.files import refuse_existing, write_atomically

# The take format's one validation rule is the add-on's (numpy and the standard library only), so both sides
# accept the same takes; tests/test_import_rules.py names it among the add-on modules the backend shares.
from thunder_blender import take_file as take_rule

TAKE_FORMAT, TAKE_VERSION, PART_WIDTHS = take_rule.TAKE_FORMAT, take_rule.TAKE_VERSION, take_rule.PART_WIDTHS
META_KEYS = ("fps", "seed", "settings", "model", "head", "audio")  # the Take's fields besides its parts


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
    scores: optional, how well the take's lips read, e.g. {"m2s_mel_l1": 1.42} (backend/m2s/reading.py);
            written to the meta only when there are any
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
    scores: dict = dataclasses.field(default_factory=dict)

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
        meta = {"format": TAKE_FORMAT, "version": TAKE_VERSION, "fps": float(self.fps), "seed": int(self.seed),
                "n_frames": self.n_frames, "settings": self.settings, "model": self.model, "head": self.head,
                "audio": self.audio}
        if self.scores:
            meta["scores"] = {name: float(value) for name, value in self.scores.items()}
        return meta


def take_file_name(audio_stem: str, take_number: int, seed: int) -> str:
    """The name the command and the service give a take: `<audio stem>.take<k>.seed<s>.npz`, k from 1."""
    return f"{audio_stem}.take{take_number}.seed{seed}.npz"


def save_take(path: str | Path, take: Take, overwrite: bool = False) -> Path:
    """Write `take` to `path` (.npz) atomically: a killed process leaves no half-written take under its name.
    An existing file is an error unless `overwrite`; the take is checked as load_take would check it."""
    path = Path(path)
    if not overwrite:
        refuse_existing([path], "take files", error=TakeFileError)
    _check_take(take, path)
    arrays = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in take.parts().items()}
    meta = np.array(json.dumps(take.meta()))  # a 0-d unicode array: no pickle needed to read it back

    def write(tmp: Path):
        with open(tmp, "wb") as file:  # a file object, so numpy does not append ".npz" to the temporary name
            np.savez(file, meta=meta, **arrays)

    return write_atomically(path, write)


def load_take(path: str | Path) -> Take:
    """Read and check a take file; any problem is a TakeFileError whose sentence names the file."""
    try:
        parts, meta = take_rule.read_take_file(path)
    except take_rule.TakeReadError as exc:
        raise TakeFileError(str(exc)) from None
    return Take(**parts, **{key: meta[key] for key in META_KEYS}, scores=dict(meta.get("scores", {})))


def _check_take(take: Take, path: Path) -> None:
    """The take as the one rule (take_rule.check_take_contents) would find it once written."""
    parts = {name: np.asarray(value) for name, value in take.parts().items()}
    try:
        take_rule.check_take_contents(path, parts, json.loads(json.dumps(take.meta())))
    except take_rule.TakeReadError as exc:
        raise TakeFileError(str(exc)) from None


def take_vertices(take: Take, head, chunk_frames: int = 500) -> np.ndarray:
    """The take's mesh, (T, V, 3) float32 in metres, posed by `head` (a backend.head.Head), `chunk_frames`
    frames at a time so the intermediate tensors stay small. A take made for another head is refused: its
    expression coefficients would mean other shapes."""
    import torch  # here, so that reading takes needs numpy only

    if take.head.get("identity") != head.takes_identity:   # a retargeted FLAME head takes the built-in head's
        raise TakeFileError(f"this take was made for the head {take.head.get('identity')}, not for "
                            f"{head.takes_identity}")
    if take.expression.shape[1] != head.n_expression:
        raise TakeFileError(f"this take has {take.expression.shape[1]} expression coefficients; the head "
                            f"{head.identity} has {head.n_expression}")
    out = np.empty((take.n_frames, head.n_vertices, 3), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, take.n_frames, chunk_frames):
            frames = slice(start, start + chunk_frames)
            out[frames] = head(**{name: value[frames] for name, value in take.parts().items()}).cpu().numpy()
    return out
