"""The corpus format: reading, writing and validating clips and the index. Documented in docs/corpus_format.md.

A corpus is a folder::

    index.json            the corpus header and one row per clip (written last; see write_index)
    clips/<id>.wav        16 kHz mono 16-bit PCM speech
    clips/<id>.npz        motion at 25 fps: expression (T, E), jaw (T, 3), neck (T, 3), eyes (T, 6), float32
    clips/<id>.json       the clip's metadata (written last: a clip without it is unfinished)

Frame i of the motion stands for time i / 25 s, so a clip of n audio samples has ceil(n / 640) frames;
on read, motion and audio may differ by at most one frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.audio import MOTION_FPS as FPS
from backend.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, frames_for_samples, write_wav  # noqa: F401
# Audio is read in one place, backend.audio_io; read_audio and to_mono_16k stay importable from here for the
# synthesizer and the converter.
from backend.audio_io import AudioFileError
from backend.audio_io import read_samples as read_audio  # noqa: F401
from backend.audio_io import to_mono_16k  # noqa: F401
from backend.files import write_atomically
from training.corpus.errors import ClipError, CorpusError, OutputFolderError

FORMAT_NAME = "thunder-corpus"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")
MOTION_WIDTHS = {"expression": None, "jaw": 3, "neck": 3, "eyes": 6}
REQUIRED_FIELDS = ("id", "head", "speaker", "voice", "text", "words", "phones", "emotion", "split", "fps",
                   "sample_rate", "n_frames", "n_samples", "source")
LENGTH_TOLERANCE_FRAMES = 1.0


@dataclass
class Segment:
    """A labelled time span in seconds (a phone or a word)."""

    label: str
    start: float
    end: float


@dataclass
class ClipMeta:
    """A clip's metadata (the JSON file). `phones` and `words` are None where the timing is unknown."""

    id: str
    head: dict                        # {"name": ..., "identity": ...}: the head the motion drives
    speaker: str                      # the speaker or voice configuration id; splits never share one
    split: str                        # train | val | test
    n_frames: int
    n_samples: int
    emotion: dict = field(default_factory=lambda: {"label": "neutral", "intensity": 0.0})
    voice: dict | None = None         # synthetic voices: engine, voice, variant, rate, pitch
    text: str | None = None
    words: list[Segment] | None = None
    phones: list[Segment] | None = None
    source: str = "synthetic"         # synthetic | converted
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE
    extra: dict = field(default_factory=dict)  # anything else (generator settings, original file)

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def clean_audio(self) -> bool:
        """Whether the clip's audio is the clean speech (no room, noise, microphone or codec; older corpora
        recorded no acoustics and are clean)."""
        return bool((self.extra.get("acoustics") or {}).get("clean", True))

    def to_json(self) -> dict:
        def segs(s):
            return None if s is None else [[x.label, round(x.start, 4), round(x.end, 4)] for x in s]

        return {"id": self.id, "head": self.head, "speaker": self.speaker, "voice": self.voice,
                "text": self.text, "words": segs(self.words), "phones": segs(self.phones),
                "emotion": self.emotion, "split": self.split, "fps": self.fps, "sample_rate": self.sample_rate,
                "n_frames": self.n_frames, "n_samples": self.n_samples, "source": self.source,
                "extra": self.extra}


@dataclass
class Clip:
    """One clip: audio (n,) float32 in [-1, 1] at 16 kHz, motion arrays at 25 fps, and metadata."""

    meta: ClipMeta
    audio: np.ndarray
    expression: np.ndarray
    jaw: np.ndarray
    neck: np.ndarray
    eyes: np.ndarray

    @property
    def id(self) -> str:
        return self.meta.id

    def motion(self) -> dict[str, np.ndarray]:
        return {"expression": self.expression, "jaw": self.jaw, "neck": self.neck, "eyes": self.eyes}


def clip_paths(root: str | Path, clip_id: str) -> dict[str, Path]:
    clips = Path(root) / "clips"
    return {"wav": clips / f"{clip_id}.wav", "npz": clips / f"{clip_id}.npz", "json": clips / f"{clip_id}.json"}


def clip_is_written(root: str | Path, clip_id: str) -> bool:
    """True when all three files of a clip exist (the metadata is written last)."""
    return all(p.exists() for p in clip_paths(root, clip_id).values())


def assign_splits(groups: list[str], seed: int, val: float = 0.1, test: float = 0.1) -> dict[str, str]:
    """Speaker (or voice group) -> split. A speaker's clips all go to one split, so val and test speakers
    are unseen in training; val and test get at least one speaker each when there are three or more."""
    groups = sorted(set(groups))
    order = [groups[i] for i in np.random.default_rng([seed, 0x5B17]).permutation(len(groups))]
    n_val = n_test = 0
    if len(groups) >= 3:
        n_val = max(1, int(round(val * len(groups))))
        n_test = max(1, int(round(test * len(groups))))
    return {g: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, g in enumerate(order)}


# ---------------------------------------------------------------------------------------------- writing
def prepare_output(root: str | Path) -> Path:
    """Create the corpus folder (and clips/) and check it is writable, or raise OutputFolderError."""
    root = Path(root)
    try:
        (root / "clips").mkdir(parents=True, exist_ok=True)
        probe = root / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputFolderError(f"cannot write the corpus folder {root}: {exc.strerror or exc}") from None
    return root


def write_clip(root: str | Path, clip: Clip) -> None:
    """Write a clip's three files, each atomically; the metadata last, so a half-written clip is not finished."""
    check_clip(clip)
    paths = clip_paths(root, clip.id)
    try:
        paths["wav"].parent.mkdir(parents=True, exist_ok=True)
        write_atomically(paths["wav"], lambda p: write_wav(p, clip.audio))

        def save_npz(p):
            with open(p, "wb") as f:
                np.savez(f, **{k: np.asarray(v, dtype=np.float32) for k, v in clip.motion().items()})

        write_atomically(paths["npz"], save_npz)
        text = json.dumps(clip.meta.to_json(), indent=1)
        write_atomically(paths["json"], lambda p: p.write_text(text))
    except OSError as exc:
        raise OutputFolderError(f"cannot write clip {clip.id} to {root}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------- reading
def _segments(clip_id: str, name: str, value, seconds: float) -> list[Segment] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ClipError(clip_id, f"'{name}' must be a list of [label, start, end] or null")
    out, last = [], -1.0
    for row in value:
        ok = isinstance(row, (list, tuple)) and len(row) == 3 and isinstance(row[0], str)
        ok = ok and all(isinstance(t, (int, float)) and math.isfinite(t) for t in row[1:])
        if not ok:
            raise ClipError(clip_id, f"'{name}' has an entry {row!r} that is not [label, start, end]")
        start, end = float(row[1]), float(row[2])
        if end < start or start < last - 1e-6 or start < -1e-6 or end > seconds + 0.05:
            raise ClipError(clip_id, f"'{name}' has a segment {row!r} out of order or outside the "
                                     f"{seconds:.2f} s of audio")
        last = end
        out.append(Segment(row[0], start, end))
    return out


def meta_from_json(data: dict, clip_id: str) -> ClipMeta:
    """Validate a metadata dict (the JSON file) and make a ClipMeta, or raise ClipError naming the clip."""
    if not isinstance(data, dict):
        raise ClipError(clip_id, "the metadata is not a JSON object")
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise ClipError(clip_id, f"the metadata lacks the fields {', '.join(missing)}")
    if data["id"] != clip_id:
        raise ClipError(clip_id, f"the metadata names another clip, {data['id']!r}")
    if data["split"] not in SPLITS:
        raise ClipError(clip_id, f"split {data['split']!r} is not one of {', '.join(SPLITS)}")
    if data["fps"] != FPS or data["sample_rate"] != SAMPLE_RATE:
        raise ClipError(clip_id, f"fps {data['fps']} and sample rate {data['sample_rate']} must be "
                                 f"{FPS} and {SAMPLE_RATE}")
    head = data["head"]
    if not (isinstance(head, dict) and isinstance(head.get("name"), str) and isinstance(head.get("identity"), str)):
        raise ClipError(clip_id, "'head' must be an object with a name and an identity")
    emotion = data["emotion"]
    if not (isinstance(emotion, dict) and isinstance(emotion.get("label"), str)
            and isinstance(emotion.get("intensity"), (int, float)) and 0.0 <= emotion["intensity"] <= 1.0):
        raise ClipError(clip_id, "'emotion' must be an object with a label and an intensity in [0, 1]")
    if not isinstance(data["speaker"], str) or not data["speaker"]:
        raise ClipError(clip_id, "'speaker' must be a non-empty string")
    for key in ("n_frames", "n_samples"):
        if not isinstance(data[key], int) or data[key] <= 0:
            raise ClipError(clip_id, f"'{key}' must be a positive integer")
    seconds = data["n_samples"] / SAMPLE_RATE
    return ClipMeta(id=clip_id, head=head, speaker=data["speaker"], split=data["split"],
                    n_frames=data["n_frames"], n_samples=data["n_samples"], emotion=emotion,
                    voice=data["voice"], text=data["text"],
                    words=_segments(clip_id, "words", data["words"], seconds),
                    phones=_segments(clip_id, "phones", data["phones"], seconds),
                    source=data["source"], fps=data["fps"], sample_rate=data["sample_rate"],
                    extra=data.get("extra") or {})


def check_clip(clip: Clip) -> None:
    """Raise ClipError unless the motion arrays and audio are well formed and agree with each other."""
    cid = clip.id
    audio = np.asarray(clip.audio)
    if audio.ndim != 1 or audio.size == 0:
        raise ClipError(cid, f"audio must be mono and non-empty; got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ClipError(cid, "the audio has NaN or infinite samples")
    n_frames = None
    for name, width in MOTION_WIDTHS.items():
        value = getattr(clip, name)
        if value is None:
            raise ClipError(cid, f"the motion lacks '{name}'")
        value = np.asarray(value)
        if value.ndim != 2 or (width is not None and value.shape[1] != width):
            want = f"(frames, {width})" if width else "(frames, n_expression)"
            raise ClipError(cid, f"motion '{name}' must have shape {want}; got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ClipError(cid, f"motion '{name}' has NaN or infinite values")
        if n_frames is not None and value.shape[0] != n_frames:
            raise ClipError(cid, f"motion '{name}' has {value.shape[0]} frames, the others {n_frames}")
        n_frames = value.shape[0]
    audio_frames = audio.size / SAMPLES_PER_FRAME
    if abs(n_frames - audio_frames) > LENGTH_TOLERANCE_FRAMES:
        raise ClipError(cid, f"the motion has {n_frames} frames but the audio lasts {audio_frames:.1f} frames "
                             f"({audio.size / SAMPLE_RATE:.2f} s at {FPS} fps)")
    if clip.meta.n_frames != n_frames or clip.meta.n_samples != audio.size:
        raise ClipError(cid, f"the metadata says {clip.meta.n_frames} frames and {clip.meta.n_samples} samples "
                             f"but the files hold {n_frames} and {audio.size}")


def read_meta(root: str | Path, clip_id: str) -> ClipMeta:
    path = clip_paths(root, clip_id)["json"]
    if not path.exists():
        raise ClipError(clip_id, f"the metadata file {path.name} is missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClipError(clip_id, f"the metadata file cannot be read ({exc})") from None
    return meta_from_json(data, clip_id)


def read_clip(root: str | Path, clip_id: str) -> Clip:
    """Read and validate one clip, or raise ClipError naming it."""
    meta = read_meta(root, clip_id)
    paths = clip_paths(root, clip_id)
    for kind in ("wav", "npz"):
        if not paths[kind].exists():
            raise ClipError(clip_id, f"the file {paths[kind].name} is missing")
    try:
        audio, rate = read_audio(paths["wav"])
    except (OSError, AudioFileError) as exc:
        raise ClipError(clip_id, f"the audio cannot be read ({exc})") from None
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise ClipError(clip_id, f"the audio must be {SAMPLE_RATE} Hz mono; got {rate} Hz with shape {audio.shape}")
    try:
        with np.load(paths["npz"], allow_pickle=False) as z:
            arrays = {k: (z[k] if k in z.files else None) for k in MOTION_WIDTHS}
    except (OSError, ValueError) as exc:
        raise ClipError(clip_id, f"the motion file cannot be read ({exc})") from None
    clip = Clip(meta=meta, audio=audio, **arrays)
    check_clip(clip)
    return clip


# ---------------------------------------------------------------------------------------------- the corpus
def write_index(root: str | Path, header: dict, metas: list[ClipMeta]) -> Path:
    """Write index.json: the header (head, expression names, generator settings) and one row per clip."""
    rows = [{"id": m.id, "split": m.split, "speaker": m.speaker, "seconds": round(m.seconds, 4),
             "n_frames": m.n_frames, "emotion": m.emotion["label"]} for m in sorted(metas, key=lambda m: m.id)]
    data = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "fps": FPS, "sample_rate": SAMPLE_RATE,
            **header, "clips": rows}
    path = Path(root) / "index.json"
    try:
        write_atomically(path, lambda p: p.write_text(json.dumps(data, indent=1)))
    except OSError as exc:
        raise OutputFolderError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def read_index(root: str | Path) -> dict:
    path = Path(root) / "index.json"
    if not path.exists():
        raise CorpusError(f"{root} is not a corpus: it has no index.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME or not isinstance(data.get("clips"), list):
        raise CorpusError(f"{path} is not a {FORMAT_NAME} index")
    if data.get("version") != FORMAT_VERSION:
        raise CorpusError(f"{path} has format version {data.get('version')}; this Thunder reads {FORMAT_VERSION}")
    return data


@dataclass
class Corpus:
    """An opened corpus: its index header, the metadata of the good clips, and the bad clips it skipped."""

    root: Path
    header: dict
    metas: list[ClipMeta]
    skipped: list[ClipError]

    def clip(self, clip_id: str) -> Clip:
        return read_clip(self.root, clip_id)

    def split(self, name: str) -> list[ClipMeta]:
        return [m for m in self.metas if m.split == name]

    def clips(self, split: str | None = None):
        """Yield the good clips (read and validated one at a time)."""
        for m in self.metas:
            if split is None or m.split == split:
                yield read_clip(self.root, m.id)


def open_corpus(root: str | Path, full_check: bool = True, report=None) -> Corpus:
    """Open a corpus. Every clip is validated (with full_check, its audio and motion too); bad clips are
    reported through `report(ClipError)` (default: print one line each to stderr) and skipped."""
    import sys

    root = Path(root)
    header = read_index(root)
    report = report or (lambda err: print(f"thunder: skipping {err}", file=sys.stderr))
    metas, skipped = [], []
    for row in header.pop("clips"):
        clip_id = row.get("id") if isinstance(row, dict) else None
        if not isinstance(clip_id, str):
            err = ClipError(str(row)[:40], "the index row has no clip id")
        else:
            try:
                meta = read_clip(root, clip_id).meta if full_check else read_meta(root, clip_id)
                if meta.split != row.get("split") or meta.speaker != row.get("speaker"):
                    raise ClipError(clip_id, "the index and the clip's metadata disagree on split or speaker")
                metas.append(meta)
                continue
            except ClipError as exc:
                err = exc
        skipped.append(err)
        report(err)
    return Corpus(root=root, header=header, metas=metas, skipped=skipped)
