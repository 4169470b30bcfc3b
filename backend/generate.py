"""Generating takes: speech in, takes out, with the head and the model loaded once for any number of audios.

    generator = Generator()                                  # backend/models/thunder and the built-in head
    takes = generator.generate("speech.wav", takes=4, seed=7, fps=24)
    for take in takes:
        save_take(f"speech.seed{take.seed}.npz", take)

Both the `thunder generate` command and the `thunder serve` service are thin layers over `Generator`, so a
file, a seed and settings give the same take whichever way they are asked for. One call samples all its takes
in one batch (`backend.take_sampling.sample_takes`), take k with seed `seed + k`; a take depends only on its own
seed, the audio and the settings, not on how many takes were asked for with it.

Everything a user can get wrong is checked before the audio is read: the sampling settings (an unknown
emotion, a step count out of range), the frame rate and the number of takes. The audio then goes through
`backend.audio_io` (missing, empty, not audio, too long, NaN samples: one sentence each) or, for samples
passed in memory, through the same checks here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Mapping, get_args, get_type_hints

import numpy as np
import torch

from backend.audio import MOTION_FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from backend.audio_io import AudioFileError, check_sample_rate, load_audio, to_mono_16k
from backend.checkpoint import checkpoint_fingerprint
from backend.diffusion.samplers import Callback
from backend.errors import ThunderError
from backend import directing
from backend.finishing import finish_takes
from backend.frame_rate import check_fps, frames_for_seconds, interpolate_motion, resample_motion
from backend.head import load_head, load_head_for_takes
from backend.models import SHIPPED_M2S, SHIPPED_THUNDER
from backend.motion import pack_motion, unpack_motion
from backend.take_sampling import KnownMotion, SamplingSettings, model_settings, sample_takes
from backend.take_file import Take
from backend.thunder_model import check_model_head, load_model

DEFAULT_CHECKPOINT = SHIPPED_THUNDER
DEFAULT_HEAD = "builtin"
DEFAULT_MAX_SECONDS = 600.0   # ten minutes; longer audio is refused from its header, before decoding
MAX_TAKES = 64
MAX_SEED = 2**63 - 1


class GenerateError(ThunderError):
    """A generate request that cannot be honoured: bad takes, seeds, time range, device or settings."""


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" (a CUDA GPU when torch sees one, else the CPU), "cpu" or "cuda"."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise GenerateError("the device 'cuda' was asked for, but this torch sees no CUDA GPU")
        return torch.device("cuda")
    raise GenerateError(f"unknown device '{name}'; choose auto, cpu or cuda")


@dataclasses.dataclass(frozen=True)
class SpeechAudio:
    """16 kHz mono speech and where it came from, for the take's record."""

    samples: np.ndarray   # (N,) float32 in [-1, 1]
    sha256: str           # of the file's bytes, or of `samples` when there was no file
    hashed: str           # "file" or "samples"
    file: str | None      # the file's name, without its folder

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_speech_file(path: str | Path, max_seconds: float | None = DEFAULT_MAX_SECONDS) -> SpeechAudio:
    """An audio file as SpeechAudio; AudioFileError (one sentence naming the file) when it cannot be used."""
    samples = load_audio(path, max_seconds)
    return SpeechAudio(samples, file_sha256(path), "file", Path(path).name)


def speech_from_samples(samples, sample_rate: int = SAMPLE_RATE, name: str | None = None,
                        max_seconds: float | None = DEFAULT_MAX_SECONDS) -> SpeechAudio:
    """Samples already in memory ((N,) or (N, channels) floats in [-1, 1] at `sample_rate`) as SpeechAudio,
    with the checks load_audio makes on files. `name` stands for the samples in error messages."""
    what = f"the samples {name}" if name else "the samples"
    samples = np.asarray(samples)
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioFileError(f"{what} are {samples.dtype}, not floating-point values in [-1, 1]")
    if samples.ndim not in (1, 2):
        raise AudioFileError(f"{what} have shape {samples.shape}, not (samples,) or (samples, channels)")
    if samples.shape[0] == 0 or samples.size == 0:
        raise AudioFileError(f"{what} are empty")
    if samples.ndim == 2 and samples.shape[1] > samples.shape[0]:
        raise AudioFileError(f"{what} have shape {samples.shape}: more channels than samples; give them as "
                             "(samples, channels)")
    check_sample_rate(sample_rate, what)
    seconds = samples.shape[0] / sample_rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioFileError(f"{what} last {seconds:.2f} s, longer than the limit of {max_seconds:g} s")
    finite = np.isfinite(samples) if samples.ndim == 1 else np.isfinite(samples).all(axis=1)
    if not finite.all():
        raise AudioFileError(f"{what} have NaN or infinite values (the first at "
                             f"{int(np.argmin(finite)) / sample_rate:.2f} s)")
    mono = np.clip(to_mono_16k(np.clip(samples, -1.0, 1.0), sample_rate), -1.0, 1.0)
    digest = hashlib.sha256(np.ascontiguousarray(mono, dtype="<f4").tobytes()).hexdigest()
    return SpeechAudio(mono, digest, "samples", name)


def settings_with(base: SamplingSettings, changes: Mapping) -> SamplingSettings:
    """`base` with `changes` (names of SamplingSettings fields) applied, each converted to the field's type;
    an unknown name or a value of the wrong kind is a GenerateError. An emotion other than neutral given
    without an intensity gets intensity 1, so that asking for an emotion shows it."""
    values = dataclasses.asdict(base)
    kinds = get_type_hints(SamplingSettings)   # float, or float | None for a setting that may be unset
    for name, value in changes.items():
        if name not in values:
            raise GenerateError(f"unknown sampling setting '{name}'; the settings are {', '.join(values)}")
        kind, *none = get_args(kinds[name]) or (kinds[name],)
        values[name] = None if value is None and none else _typed_setting(name, value, kind)
    if "emotion" in changes and "intensity" not in changes and values["emotion"] != "neutral":
        values["intensity"] = 1.0
    return SamplingSettings(**values)


def _typed_setting(name: str, value, kind: type):
    if kind is str and isinstance(value, str):
        return value
    if kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is float and math.isfinite(value):
            return float(value)
        if kind is int and float(value).is_integer():
            return int(value)
    want = {str: "text", int: "a whole number", float: "a finite number"}[kind]
    raise GenerateError(f"the sampling setting '{name}' must be {want}, not {value!r}")


def take_seeds(takes: int, seed: int, seeds=None) -> list[int]:
    """The seed of every take: `seeds` as given, or seed, seed + 1, ... for `takes` takes."""
    if seeds is None:
        if isinstance(takes, bool) or not isinstance(takes, int) or not 1 <= takes <= MAX_TAKES:
            raise GenerateError(f"the number of takes must be a whole number from 1 to {MAX_TAKES}, not {takes!r}")
        _check_seed(seed)
        seeds = [seed + k for k in range(takes)]
    if not isinstance(seeds, (list, tuple)) or not 1 <= len(seeds) <= MAX_TAKES:
        raise GenerateError(f"give from 1 to {MAX_TAKES} seeds, not {seeds!r}")
    for value in seeds:
        _check_seed(value)
    return list(seeds)


def _check_seed(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise GenerateError(f"a seed must be a whole number from 0 to 2^63 - 1, not {value!r}")


class Generator:
    """The head and a THUNDER model, loaded once; `generate` turns audio into takes.

    checkpoint: a THUNDER checkpoint folder (default: the shipped backend/models/thunder); head: "builtin" or a FLAME
    file; device: auto, cpu or cuda; max_seconds: the longest audio accepted (None: no limit)."""

    def __init__(self, checkpoint: str | Path | None = None, head: str | Path = DEFAULT_HEAD,
                 device: str = "auto", max_seconds: float | None = DEFAULT_MAX_SECONDS):
        self.device = resolve_device(device)
        if checkpoint is None:
            checkpoint = DEFAULT_CHECKPOINT
            if not (checkpoint / "config.json").exists():
                raise GenerateError(f"the shipped THUNDER model is missing from this installation ({checkpoint}); "
                                    "name a model folder (--checkpoint, or the service's load request)")
        self.checkpoint = Path(checkpoint).expanduser()
        # The model says which head its takes are for; a FLAME file's head is retargeted to it (the built-in head).
        self.model = load_model(self.checkpoint, device=self.device)
        self.head = load_head_for_takes(head, self.model.head_identity)
        # The head the takes are made in: the flicker filter finds closures on it, so that one take is the same
        # on every head it drives (a retargeted head's own lips only approximate it).
        self.takes_head = self.head if self.head.takes_identity == self.head.identity else load_head("builtin")
        check_model_head(self.model.config, self.head, self.checkpoint)
        self.max_seconds = max_seconds
        self.model_identity = {"name": self.checkpoint.resolve().name,
                               "hash": checkpoint_fingerprint(self.checkpoint)}
        self._m2s = None   # loaded on first use (m2s_model)
        self.default_settings = model_settings(self.model)

    def info(self) -> dict:
        """What a client shows and records: the model, its emotions and defaults, the head, the device."""
        return {"model": {**self.model_identity, "path": str(self.checkpoint), "emotions": list(self.model.emotions),
                          "fps": MOTION_FPS, "sampling": dataclasses.asdict(self.default_settings)},
                "head": {"name": self.head.name, "identity": self.head.takes_identity, "mesh_identity": self.head.identity,
                         "source": str(self.head.source),
                         "vertices": self.head.n_vertices, "expressions": self.head.n_expression},
                "device": str(self.device)}

    def settings(self, changes: Mapping | None = None) -> SamplingSettings:
        """The model's default settings with `changes`, checked against this model (its emotions...)."""
        settings = settings_with(self.default_settings, changes or {})
        settings.check(self.model.emotions, self.model.denoiser.config.max_frames)
        return settings

    def m2s_model(self):
        """The shipped M2S model for the head the takes are made in (the built-in head, also under a retargeted
        FLAME head), loaded once, or None when it does not fit that head or is missing: takes then go without a
        score."""
        if self._m2s is None:
            from backend.checkpoint import CheckpointError
            from backend.m2s import load_m2s

            try:
                self._m2s = load_m2s(SHIPPED_M2S, self.takes_head).to(self.device)
            except CheckpointError:
                self._m2s = False
        return self._m2s or None

    def score_takes(self, motion: np.ndarray, wave: np.ndarray) -> list[dict]:
        """The scores of 25 fps takes (N, T, D) of `wave`: [{"m2s_mel_l1": ...}] per take (backend/m2s/reading.py),
        or [{}] per take without an M2S for the head."""
        from backend.m2s.reading import lip_reading_score

        m2s = self.m2s_model()
        if m2s is None:
            return [{} for _ in motion]
        parts = [unpack_motion(take_motion, self.model.n_expression) for take_motion in motion]
        scores = lip_reading_score(m2s, np.stack([p["expression"] for p in parts]), np.stack([p["jaw"] for p in parts]),
                                   wave)   # all takes in one batch
        return [{"m2s_mel_l1": float(score)} for score in scores]

    def read_speech(self, audio, sample_rate: int = SAMPLE_RATE) -> SpeechAudio:
        """A path, or samples in memory (at `sample_rate`), as SpeechAudio, within this generator's limit."""
        if isinstance(audio, SpeechAudio):
            return audio
        if isinstance(audio, (str, Path)):
            return read_speech_file(audio, self.max_seconds)
        return speech_from_samples(audio, sample_rate, max_seconds=self.max_seconds)

    def generate(self, audio, takes: int = 1, seed: int = 0, settings: SamplingSettings | Mapping | None = None,
                 fps: float = MOTION_FPS, start: float = 0.0, end: float | None = None, seeds=None,
                 callback: Callback = None, sample_rate: int = SAMPLE_RATE, constraints=None,
                 best_of: int | None = None) -> list[Take]:
        """Sample takes for `audio` (a file path or samples): one per seed (`seeds`, or seed, seed + 1, ... for
        `takes`), all in one batch, at `fps`, over the seconds from `start` to `end` (default: the end).
        Every take is scored by how well its lips read (Take.scores, backend/m2s/reading.py) when the head has
        an M2S model.

        best_of N: sample N candidates (`seeds`, or seed, ..., seed + N - 1) and return the `takes` best of
        them, best first (the lowest m2s_mel_l1); without an M2S for the head it is refused.

        `callback(SamplerStep)` sees every sampler step (its index and total count the steps of all windows);
        raising backend.diffusion.samplers.Cancelled in it stops between steps. `constraints`: holds and keys
        the takes keep (backend/directing.py; Constraint objects or their JSON), saved in their settings."""
        # 1. Everything about the request, before the audio is touched.
        if not isinstance(settings, SamplingSettings):
            settings = self.settings(settings)
        else:
            settings.check(self.model.emotions, self.model.denoiser.config.max_frames)
        fps = check_fps(fps)
        keep = None
        if best_of is not None:
            keep = best_of_keep(best_of, takes, seeds)
            if self.m2s_model() is None:
                raise GenerateError(f"best of {best_of} needs the M2S model to score takes, and there is none for "
                                    f"the head {self.head.name}")
            takes = best_of
        seeds = take_seeds(takes, seed, seeds)
        constraints = _constraints(constraints)

        # 2. The audio, and the part of it asked for.
        speech = self.read_speech(audio, sample_rate)
        first, stop = _sample_range(speech, start, end)
        wave = speech.samples[first:stop]
        n_frames = frames_for_seconds(len(wave) / SAMPLE_RATE, fps)
        directing.check_constraints(constraints, n_frames, self.head.expression_names)

        # 3. Features, then every take in one batch, at 25 fps.
        features = self.model.encode(wave)
        imposed = None
        if constraints:
            imposed = KnownMotion(*(torch.from_numpy(a) for a in directing.constraint_targets(
                constraints, self.head.expression_names, fps, features.shape[0])))
        motion = self._sample(features, seeds, settings, callback, imposed, speech, wave)

        # 4. How well each take's lips read (at 25 fps, against the audio they animate); best of N keeps the best.
        scores = self.score_takes(motion, wave)
        order = list(range(len(seeds)))
        if keep is not None:
            order = sorted(order, key=lambda k: scores[k]["m2s_mel_l1"])[:keep]

        # 5. The scene's frame rate, and the record of how each take was made.
        audio_record = {"sha256": speech.sha256, "hashed": speech.hashed, "file": speech.file,
                        "seconds": speech.seconds, "start": first / SAMPLE_RATE, "end": stop / SAMPLE_RATE}
        head_record = {"name": self.head.name, "identity": self.head.takes_identity}
        result = []
        for i in order:
            parts = unpack_motion(motion[i], self.model.n_expression)
            parts = resample_motion({k: np.ascontiguousarray(v) for k, v in parts.items()}, MOTION_FPS, fps,
                                    n_frames)
            result.append(Take(**parts, fps=fps, seed=seeds[i], settings=_settings_record(settings, constraints),
                               model=dict(self.model_identity), head=dict(head_record), audio=dict(audio_record),
                               scores=scores[i]))
        return result

    def _sample(self, features, seeds, settings, callback, imposed, speech, wave) -> np.ndarray:
        """Takes (K, T, D) at 25 fps for the audio `wave` they animate: sampled, finished
        (backend/finishing.py: flicker filter, blinks), and with the imposed values (kept frames, holds, keys)
        put back exactly where the filter moved them."""
        motion = sample_takes(self.model, features, seeds, settings, callback=callback, imposed=imposed,
                              expression_names=self.head.expression_names).numpy()
        if not np.isfinite(motion).all():
            raise GenerateError(f"the model made NaN or infinite motion for {speech.file or 'the samples'}; "
                                f"its checkpoint {self.checkpoint} may be damaged")
        motion = finish_takes(motion, self.takes_head, settings, seeds, wave,
                              None if imposed is None else imposed.weight.numpy())
        if imposed is not None:
            weight, target = imposed.weight.numpy()[None], imposed.target.numpy()[None]
            motion = np.where(weight > 0, weight * target + (1.0 - weight) * motion, motion).astype(motion.dtype)
        return motion

    def resample_range(self, old: Take, audio, start: int, end: int, only: str | None = None, takes: int = 1,
                       seed: int = 0, seeds=None, settings: SamplingSettings | Mapping | None = None,
                       constraints=None, callback: Callback = None, sample_rate: int = SAMPLE_RATE) -> list[Take]:
        """New takes that are `old` outside its frames start .. end - 1 and newly sampled inside them (only the
        channels of `only`: "lips", "upper" or "head", when given), joining the kept frames at both edges.

        audio: the audio `old` was made from (its hash is checked). settings: changes to old's sampling
        settings. constraints: None keeps old's; a list (even empty) replaces them. Frames outside the range
        (and the channels not resampled inside it) are old's, bit for bit."""
        # 1. The request.
        if old.head.get("identity") != self.head.takes_identity:
            raise directing.DirectingError(f"the take was made for the head {old.head.get('identity')}, not for "
                                           f"{self.head.takes_identity}, the head this service has loaded")
        sampling, old_constraints = directing.split_take_settings(old.settings)
        if not isinstance(settings, SamplingSettings):
            known_fields = {k: v for k, v in sampling.items() if k in SamplingSettings.__dataclass_fields__}
            settings = self.settings({**known_fields, **(settings or {})})
        else:
            settings.check(self.model.emotions, self.model.denoiser.config.max_frames)
        seeds = take_seeds(takes, seed, seeds)
        constraints = old_constraints if constraints is None else _constraints(constraints)
        groups = directing.channel_groups(self.head.expression_names)
        if only is not None and only not in groups:
            raise directing.DirectingError(f"unknown part '{only}' to resample; choose {', '.join(groups)}")
        free_channels = groups[only] if only is not None else np.ones(self.model.denoiser.config.motion_dim, bool)
        directing.check_constraints(constraints, old.n_frames, self.head.expression_names)

        # 2. The audio: the very audio of the old take, and the model frames the range needs.
        speech = self.read_speech(audio, sample_rate)
        if speech.sha256 != old.audio.get("sha256"):
            raise directing.DirectingError(f"{speech.file or 'the samples'} is not the audio the take was made from "
                                           f"({old.audio.get('file') or 'samples'}, another sha256)")
        first, stop = _sample_range(speech, old.audio["start"], old.audio["end"])
        n_model = frames_for_seconds((stop - first) / SAMPLE_RATE, MOTION_FPS)
        plan = directing.plan_range(start, end, old.n_frames, old.fps, n_model)

        # 3. Features of the span (with audio either side, so its edges hear what a whole pass would), the
        # old take at 25 fps as the kept values, then every new take in one batch.
        pad = directing.RANGE_MARGIN
        lo, hi = max(0, plan.lo - pad), min(n_model, plan.hi + pad)
        wave = speech.samples[first + lo * SAMPLES_PER_FRAME: min(first + hi * SAMPLES_PER_FRAME, stop)]
        features = self.model.encode(wave)[plan.lo - lo: plan.hi - lo]
        old_parts = old.parts()
        # The old take at 25 fps over the sampled frames only (the whole take at 24 fps would be all Slerp).
        old_motion = np.zeros((n_model, self.model.denoiser.config.motion_dim), dtype=np.float32)
        old_motion[plan.lo:plan.hi] = pack_motion(**interpolate_motion(
            old_parts, np.arange(plan.lo, plan.hi) * old.fps / MOTION_FPS))
        constraint_values = None
        if constraints:
            constraint_values = directing.constraint_targets(constraints, self.head.expression_names, old.fps,
                                                             n_model)
        target, weight = directing.range_known(plan, old_motion, free_channels, constraint_values)
        imposed = KnownMotion(torch.from_numpy(target), torch.from_numpy(weight))
        span = speech.samples[first + plan.lo * SAMPLES_PER_FRAME: min(first + plan.hi * SAMPLES_PER_FRAME, stop)]
        motion = self._sample(features, seeds, settings, callback, imposed, speech, span)

        # 4. The range at the take's frame rate, spliced into the old take.
        positions = np.arange(start, end, dtype=np.float64) * MOTION_FPS / old.fps - plan.lo
        record = _settings_record(settings, constraints)
        record["resampled_from"] = {"seed": old.seed, "start": start, "end": end, "only": only}
        result = []
        for take_seed, take_motion in zip(seeds, motion):
            parts = unpack_motion(take_motion, self.model.n_expression)
            new = interpolate_motion({k: np.ascontiguousarray(v) for k, v in parts.items()}, positions)
            result.append(Take(**directing.splice_range(old_parts, new, plan, free_channels), fps=old.fps,
                               seed=take_seed, settings=dict(record), model=dict(self.model_identity),
                               head=dict(old.head), audio=dict(old.audio)))
        return result


def _constraints(items) -> list:
    """Constraint objects, or their JSON (backend/directing.py), as Constraint objects."""
    items = list(items or [])
    if all(isinstance(item, directing.Constraint) for item in items):
        return items
    return directing.constraints_from_json(items)


def _settings_record(settings: SamplingSettings, constraints) -> dict:
    """A take's settings: the sampling settings, and its constraints when it has any."""
    record = dataclasses.asdict(settings)
    if constraints:
        record["constraints"] = [c.to_json() for c in constraints]
    return record


def best_of_keep(best_of, takes, seeds) -> int:
    """How many takes best of `best_of` keeps (`takes`), checked: 1 <= takes <= best_of <= MAX_TAKES, and
    `seeds`, when given, one per candidate."""
    if isinstance(best_of, bool) or not isinstance(best_of, int) or not 1 <= best_of <= MAX_TAKES:
        raise GenerateError(f"best of must be a whole number of candidates from 1 to {MAX_TAKES}, not {best_of!r}")
    if isinstance(takes, bool) or not isinstance(takes, int) or not 1 <= takes <= best_of:
        raise GenerateError(f"best of {best_of} keeps from 1 to {best_of} takes, not {takes!r}")
    if seeds is not None and (not isinstance(seeds, (list, tuple)) or len(seeds) != best_of):
        raise GenerateError(f"best of {best_of} samples {best_of} candidates: give {best_of} seeds, not {seeds!r}")
    return takes


def _sample_range(speech: SpeechAudio, start, end) -> tuple[int, int]:
    """The first and one-past-last sample of the seconds from `start` to `end` (None: the end of the audio).
    Both must be finite numbers of seconds with 0 <= start < end <= the audio's length; checked in seconds,
    before any is turned into a sample index (1e308 s would overflow)."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise GenerateError(f"the time range's {name} must be a number of seconds, not {value!r}")
    start = float(start or 0.0)
    end = speech.seconds if end is None else float(end)
    what = speech.file or "the samples"
    if start < 0:
        raise GenerateError(f"the time range starts at {start:g} s, before the start of {what}")
    if end <= start:
        raise GenerateError(f"the time range from {start:g} s to {end:g} s is empty")
    if end > speech.seconds + 0.5 / SAMPLE_RATE:
        raise GenerateError(f"the time range from {start:g} s to {end:g} s goes past the end of {what} "
                            f"({speech.seconds:.2f} s)")
    first, stop = int(round(start * SAMPLE_RATE)), min(int(round(end * SAMPLE_RATE)), len(speech.samples))
    if stop <= first:
        raise GenerateError(f"the time range from {start:g} s to {end:g} s is shorter than one sample")
    return first, stop
