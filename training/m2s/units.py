"""Speech units: the discrete targets of M2S's classifier, at 50 Hz (2 per motion frame).

Two sources, one interface (`labels(clip) -> (2T,) int64`, `n_units`, `name`):
- PhoneUnits (the offline default): phones from the corpus's forced alignment, CMU's 39 plus silence.
- KMeansUnits: k-means clusters over a self-supervised speech model's features (HuBERT or wav2vec 2.0
  through transformers, from a local folder or a hub id), as Choi et al. (2023) use (HuBERT layer 6, 200
  clusters). Fit it with `KMeansUnits.fit(...)` on training audio.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.errors import ThunderError
from training.corpus.text import PHONES
from backend.audio import UNITS_PER_FRAME

UNIT_RATE = 50
SILENCE = "SIL"


class UnitError(ThunderError):
    """A unit source cannot label a clip (no phone timing, unknown phone, missing model)."""


class PhoneUnits:
    """Frame-level phone labels from the corpus's aligned phone segments."""

    name = "phones"

    def __init__(self):
        self.inventory = (SILENCE,) + tuple(PHONES)
        self.index = {p: i for i, p in enumerate(self.inventory)}
        self.n_units = len(self.inventory)

    def labels(self, clip) -> np.ndarray:
        """The phone at the centre of each 20 ms step of the clip: (n_frames * 2,) int64."""
        phones = clip.meta.phones
        if phones is None:
            raise UnitError(f"clip {clip.id} has no phone timing; phone units need aligned phones")
        steps = clip.meta.n_frames * UNITS_PER_FRAME
        centres = (np.arange(steps) + 0.5) / UNIT_RATE
        out = np.full(steps, self.index[SILENCE], dtype=np.int64)
        for seg in phones:
            label = seg.label.upper().rstrip("012")
            if label not in self.index:
                label = SILENCE if label in ("SP", "SIL", "+NSN+", "+SPN+", "") else label
            if label not in self.index:
                raise UnitError(f"clip {clip.id} has the phone '{seg.label}', which is not in CMU's set")
            out[(centres >= seg.start) & (centres < seg.end)] = self.index[label]
        return out


def kmeans(points: torch.Tensor, k: int, iterations: int = 30, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding. points: (N, H). Returns centroids (k, H)."""
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(len(points), (1,), generator=generator))
    centroids = [points[first]]
    nearest = (points - centroids[0]).square().sum(-1)
    for _ in range(1, k):
        index = int(torch.multinomial(nearest.clamp_min(1e-12), 1, generator=generator))
        centroids.append(points[index])
        nearest = torch.minimum(nearest, (points - points[index]).square().sum(-1))
    centroids = torch.stack(centroids)
    for _ in range(iterations):
        assignment = torch.cdist(points, centroids).argmin(-1)
        for c in range(k):
            members = points[assignment == c]
            if len(members):
                centroids[c] = members.mean(0)
    return centroids


class KMeansUnits:
    """Units as the nearest k-means centroid of a self-supervised model's hidden states (50 Hz).

    Build with `KMeansUnits.fit(model_path, layer, clips, n_units)`; the centroids are kept with the M2S
    checkpoint (`state()` / `from_state()`), the speech model is named by path or hub id.
    """

    name = "kmeans"

    def __init__(self, model_path: str, layer: int, centroids: torch.Tensor):
        self.model_path, self.layer, self.centroids = str(model_path), layer, centroids
        self.n_units = len(centroids)
        self.inventory = tuple(f"k{i:03d}" for i in range(self.n_units))
        self._model = None

    def _speech_model(self):
        if self._model is None:
            from backend.ssl_speech import load_speech_model

            self._model = load_speech_model(self.model_path).eval()
        return self._model

    @torch.no_grad()
    def _states(self, clip) -> torch.Tensor:
        from backend.ssl_speech import speech_hidden_states

        wave = torch.from_numpy(np.ascontiguousarray(clip.audio, dtype=np.float32))[None]
        steps = clip.meta.n_frames * UNITS_PER_FRAME
        return speech_hidden_states(self._speech_model(), wave, self.layer, steps)[0]

    @classmethod
    def fit(cls, model_path: str, layer: int, clips, n_units: int = 200, seed: int = 0) -> "KMeansUnits":
        units = cls(model_path, layer, torch.zeros(n_units, 1))
        states = torch.cat([units._states(clip) for clip in clips])
        if len(states) < n_units:
            raise UnitError(f"{len(states)} feature frames are too few for {n_units} k-means units")
        units.centroids = kmeans(states, n_units, seed=seed)
        return units

    def labels(self, clip) -> np.ndarray:
        return torch.cdist(self._states(clip), self.centroids).argmin(-1).numpy().astype(np.int64)

    def state(self) -> dict:
        return {"model_path": self.model_path, "layer": self.layer, "centroids": self.centroids.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "KMeansUnits":
        return cls(state["model_path"], state["layer"], torch.tensor(state["centroids"]))


def unit_source_from_config(units_config: dict):
    """The unit source a checkpoint was trained with (its config's "units" entry)."""
    if units_config["source"] == PhoneUnits.name:
        return PhoneUnits()
    if units_config["source"] == KMeansUnits.name:
        return KMeansUnits.from_state(units_config["kmeans"])
    raise UnitError(f"unknown unit source '{units_config['source']}'")


def unit_config(units) -> dict:
    """What a checkpoint stores about its unit source."""
    config = {"source": units.name, "inventory": list(units.inventory)}
    if isinstance(units, KMeansUnits):
        config["kmeans"] = units.state()
    return config
