"""A folder of real speech for evaluation: audio files with their transcripts, forced-aligned and cached.

A clip is an audio file (.wav, .flac, .ogg, .mp3) anywhere under the folder with its transcript: NAME.txt
beside it, or a line "NAME<TAB>text" of a transcripts.tsv in the same folder (a first line "id<TAB>text" is a
header). A clip's group is the folder it lies in, relative to the given one (files at the top take the
folder's own name), so recordings from different sources are scored apart as well as together.

Transcripts are normalised the way a reader says them: lower case, hyphens and dashes split words,
punctuation dropped, apostrophes inside words kept. Numbers must be written as words (a reader may say
"1850" several ways). Words missing from pocketsphinx's CMU dictionary get their phones from flite's
letter-to-sound rules (`t2p`, from the flite package the corpus already uses).

Alignment (training/corpus/align.py, the one aligner) is cached as one JSON file per clip, keyed by the
audio's samples, the words and the pocketsphinx version, in `default_cache_dir()` or a folder the caller
names; a rerun reads the alignment back instead of aligning again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from backend.audio import SAMPLE_RATE, frames_for_samples
from backend.errors import ThunderError
from training.corpus.format import Segment

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TRANSCRIPT_TABLE = "transcripts.tsv"
SILENCE_DBFS = -50.0  # a clip whose loudest 40 ms is quieter than this holds no speech
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")
# flite's phone set is CMU's plus two reduced vowels and the pause.
_FLITE_PHONES = {"ax": "AH", "axr": "ER"}


class RealSpeechError(ThunderError):
    """A folder of real speech that cannot be evaluated: no clips, a missing transcript, no speech..."""


@dataclasses.dataclass
class RealClip:
    id: str                 # the path under the folder, without suffix
    group: str
    path: Path
    audio: np.ndarray       # 16 kHz mono float32
    text: str               # normalised words
    words: list[Segment]
    phones: list[Segment]

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thunder" / "alignments"


def normalise_transcript(text: str, where: str) -> str:
    """The words a transcript says, as `align` takes them (module docstring)."""
    tokens = _TOKEN.findall(re.sub(r"[-\u2010-\u2015]", " ", text.lower().replace("\u2019", "'")))
    numbers = [t for t in tokens if any(c.isdigit() for c in t)]
    if numbers:
        raise RealSpeechError(f"the transcript of {where} holds the number '{numbers[0]}': write numbers as the "
                              "words the speaker says")
    if not tokens:
        raise RealSpeechError(f"the transcript of {where} holds no words")
    return " ".join(tokens)


def letter_to_sound(word: str) -> tuple[str, ...]:
    """CMU phones (no stress) for a word, from flite's t2p."""
    from training.corpus.text import PHONES

    if shutil.which("t2p") is None:
        raise RealSpeechError(f"the word '{word}' is not in pocketsphinx's dictionary, and flite's t2p, which "
                              "would spell it, is not installed (apt install flite)")
    out = subprocess.run(["t2p", word], capture_output=True, text=True, timeout=30).stdout.split()
    phones = tuple(_FLITE_PHONES.get(p, p).rstrip("012").upper() for p in out if p != "pau")
    if not phones or any(p not in PHONES for p in phones):
        raise RealSpeechError(f"flite could not spell the word '{word}' in CMU phones (it gave '{' '.join(out)}')")
    return phones


def pronunciations_for(text: str) -> dict[str, tuple[str, ...]]:
    """{word: phones} for the words of `text` that pocketsphinx's dictionary lacks."""
    from training.corpus.text import load_dictionary

    dictionary = load_dictionary()
    return {w: letter_to_sound(w) for w in dict.fromkeys(text.split()) if w not in dictionary}


def _aligner_version() -> str:
    from importlib.metadata import version

    from training.corpus.align import ALIGNER_SETTINGS

    return f"pocketsphinx {version('pocketsphinx')} {ALIGNER_SETTINGS}"


def cached_alignment(audio: np.ndarray, text: str, cache_dir: Path | None,
                     where: str) -> tuple[list[Segment], list[Segment]]:
    """(words, phones) of the audio speaking `text`, read from the cache when it was aligned before."""
    from training.corpus.align import align
    from training.corpus.errors import AlignmentError

    key = hashlib.sha256(np.ascontiguousarray(audio, dtype="<f4").tobytes())
    key.update(f"\n{text}\n{_aligner_version()}".encode())
    path = cache_dir / f"{key.hexdigest()[:32]}.json" if cache_dir else None
    if path is not None and path.exists():
        data = json.loads(path.read_text())
        return tuple([Segment(*s) for s in data[k]] for k in ("words", "phones"))
    try:
        words, phones = align(audio, text, pronunciations_for(text))
    except AlignmentError as exc:
        raise RealSpeechError(f"{where}: {exc}") from None
    if path is not None:
        from backend.files import write_atomically

        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"audio": where, "text": text, "aligner": _aligner_version(),
                "words": [[s.label, s.start, s.end] for s in words],
                "phones": [[s.label, s.start, s.end] for s in phones]}
        write_atomically(path, lambda p: p.write_text(json.dumps(data)))
    return words, phones


def _table_transcripts(folder: Path) -> dict[str, str]:
    table = folder / TRANSCRIPT_TABLE
    if not table.exists():
        return {}
    out = {}
    for n, line in enumerate(table.read_text(encoding="utf-8").splitlines()):
        name, tab, text = line.partition("\t")
        if tab and not (n == 0 and name.strip().lower() == "id"):
            out[name.strip()] = text
    return out


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def transcript_of(path: Path, tables: dict[Path, dict[str, str]]) -> str | None:
    beside = path.with_suffix(".txt")
    if beside.exists():
        return beside.read_text(encoding="utf-8", errors="replace")
    if path.parent not in tables:
        tables[path.parent] = _table_transcripts(path.parent)
    return tables[path.parent].get(path.stem)


def load_real_speech(folder, cache_dir: Path | None = None, max_seconds: float | None = 600.0,
                     progress=None) -> list[RealClip]:
    """Every clip of the folder, read, checked and aligned (module docstring). Raises RealSpeechError with one
    sentence for a missing folder, a folder without audio, a clip without transcript or without speech."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RealSpeechError(f"{folder} is not a folder of audio files with transcripts")
    files = audio_files(folder)
    if not files:
        raise RealSpeechError(f"{folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)}) to evaluate on")
    tables: dict[Path, dict[str, str]] = {}
    missing = [p for p in files if transcript_of(p, tables) is None]
    if missing:
        names = ", ".join(str(p.relative_to(folder)) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise RealSpeechError(f"{len(missing)} of the {len(files)} audio files in {folder} have no transcript "
                              f"({names}): put NAME.txt beside each or a line in {TRANSCRIPT_TABLE}")
    clips = []
    for i, path in enumerate(files):
        clips.append(read_real_clip(path, folder, transcript_of(path, tables), cache_dir, max_seconds))
        if progress:
            progress(i + 1, len(files))
    return clips


def read_real_clip(path: Path, folder: Path, transcript: str, cache_dir: Path | None = None,
                   max_seconds: float | None = 600.0) -> RealClip:
    """One clip of a folder (load_real_speech): read, checked for speech and aligned (through the cache)."""
    from backend.audio_io import load_audio
    from backend.audio import audio_envelope

    where = str(path.relative_to(folder))
    text = normalise_transcript(transcript, where)
    audio = load_audio(path, max_seconds=max_seconds)
    loudest = float(audio_envelope(audio, frames_for_samples(audio.size), sigma_frames=0).max())
    if 20 * np.log10(loudest + 1e-12) < SILENCE_DBFS:
        raise RealSpeechError(f"{where} holds no speech: its loudest 40 ms is at "
                              f"{20 * np.log10(loudest + 1e-12):.0f} dBFS")
    words, phones = cached_alignment(audio, text, cache_dir, where)
    parent = path.parent.relative_to(folder)
    group = folder.resolve().name if parent == Path(".") else parent.as_posix()
    return RealClip(Path(where).with_suffix("").as_posix(), group, path, audio, text, words, phones)


def speak_folder(folder, out, voices: list[str]) -> int:
    """The synthetic twin of a real-speech folder: every clip's transcript spoken by the given synthetic voices
    in turn (training/corpus/synth.py) and written to `out` as NAME.wav + NAME.txt in the same sub-folders, so
    `thunder eval --audio` scores the same sentences in a real and a synthetic voice. Returns the clip count."""
    from backend.audio import write_wav
    from training.corpus.synth import synthesize
    from training.corpus.voices import VoiceConfig

    folder, out = Path(folder), Path(out)
    tables: dict[Path, dict[str, str]] = {}
    files = audio_files(folder)
    for i, path in enumerate(files):
        text = transcript_of(path, tables)
        if text is None:
            continue
        target = (out / path.relative_to(folder)).with_suffix(".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_wav(target, synthesize(VoiceConfig.parse(voices[i % len(voices)]), text.strip()))
        target.with_suffix(".txt").write_text(text.strip() + "\n", encoding="utf-8")
    return len(files)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write the synthetic twin of a real-speech folder")
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--voice", action="append", help="engine:voice (default: four flite and espeak-ng voices)")
    args = parser.parse_args()
    n = speak_folder(args.folder, args.out, args.voice or ["flite:slt", "espeak-ng:en-us+m3", "flite:rms",
                                                           "espeak-ng:en+f2"])
    print(f"wrote {n} clips to {args.out}")
