"""Reading audio files: the one place Thunder turns a user's WAV, FLAC, OGG Vorbis or MP3 file into speech.

Every model wants 16 kHz mono float32 (`backend.audio.SAMPLE_RATE`). Having one loader means one set of checks
and one set of error messages (a missing file, a text file named .wav, NaN samples), and one resampler, so the
corpus, the converter and inference all hear the same signal.

Memory stays bounded for long recordings: the file is decoded in blocks (20 s by default) as float32, each block
is mixed to mono at once, and the resampler carries just enough input from block to block (the reach of its
low-pass filter) that the output equals resampling the whole file in one piece. The file never exists at its
original rate in one array: an hour of 48 kHz stereo costs its 230 MB 16 kHz result (twice that for a moment
while load_audio joins the blocks) and one block, not the 2.8 GB of its samples decoded as float64. Durations
are read from the header, so a limit refuses a long file before any of it is decoded.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile
from scipy.signal import firwin, resample_poly

from backend.audio import SAMPLE_RATE
from backend.errors import ThunderError

SUPPORTED_FORMATS = "WAV, FLAC, OGG Vorbis and MP3"
DEFAULT_BLOCK_SECONDS = 20.0
# The sample rates Thunder reads: telephone speech (8 kHz) and below down to 4 kHz, studio audio up to
# 384 kHz. The bound matters: resampling to 16 kHz builds a low-pass filter of 20 x max(up, down) taps, and a
# header claiming 2,147,483,647 Hz asked for 320 GiB of them.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000
# Formats whose header gives the exact number of samples, so fewer decoded means a truncated file.
EXACT_LENGTH_FORMATS = ("WAV", "WAVEX", "FLAC", "AIFF")


class AudioFileError(ThunderError, ValueError):
    """An audio file is missing, unreadable, empty, too long or holds NaN samples; the message names the file.

    It is also a ValueError, so code that wraps bad-data errors while reading (the corpus converter) keeps
    catching it."""


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says, read without decoding the samples."""

    path: Path
    seconds: float
    sample_rate: int
    channels: int
    format: str    # the container as libsndfile names it: WAV, FLAC, OGG, MP3, ...
    subtype: str   # the sample encoding: PCM_16, PCM_24, FLOAT, VORBIS, MPEG_LAYER_III, ...
    frames: int    # samples per channel


def check_sample_rate(rate, what: str) -> int:
    """`rate` as an int, or AudioFileError unless it is a whole number of Hz from MIN_SAMPLE_RATE to
    MAX_SAMPLE_RATE. `what` names the audio in the sentence ("the audio file x.wav", "the samples")."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) \
            or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioFileError(f"{what} has the sample rate {rate!r}; Thunder reads whole numbers of Hz from "
                             f"{MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,}")
    return int(rate)


def _wav_data_shortfall(path: Path) -> tuple[int, int] | None:
    """(bytes the WAV header's data chunk declares, bytes the file holds after it) when it declares more than
    the file holds, else None. libsndfile quietly plays what is there, so a truncated WAV (or one whose size
    fields were never filled in) would become a take of a fraction of a second without a word."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        if file.read(12)[:4] != b"RIFF":
            return None  # RF64, W64...: other headers, other rules
        offset = 12
        for _ in range(1000):  # a real WAV has a handful of chunks before its samples
            if offset + 8 > size:
                break
            file.seek(offset)
            header = file.read(8)
            chunk, length = header[:4], int.from_bytes(header[4:8], "little")
            if chunk == b"data":
                available = size - offset - 8
                return (length, available) if length > available else None
            offset += 8 + length + (length & 1)
    return None


# ---------------------------------------------------------------------------------------------- opening
def _open(path: Path) -> soundfile.SoundFile:
    """Open `path` for reading (the header only), or raise AudioFileError saying what is wrong with it."""
    if not path.exists():
        raise AudioFileError(f"the audio file {path} does not exist")
    if path.is_dir():
        raise AudioFileError(f"{path} is a folder, not an audio file")
    try:
        size = path.stat().st_size
        with open(path, "rb"):  # tells "permission denied" apart from "not audio"
            pass
    except OSError as exc:
        raise AudioFileError(f"the audio file {path} cannot be opened ({exc.strerror or exc})") from None
    if size == 0:
        raise AudioFileError(f"the audio file {path} is empty (0 bytes)")
    try:
        sound = soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, RuntimeError):
        raise AudioFileError(f"{path} is not a readable audio file (Thunder reads {SUPPORTED_FORMATS})") from None
    try:
        check_sample_rate(sound.samplerate, f"the audio file {path}")
        shortfall = _wav_data_shortfall(path) if sound.format in ("WAV", "WAVEX") else None
        if shortfall:
            declared, available = shortfall
            raise AudioFileError(f"the audio file {path} is truncated or damaged: its header promises {declared:,} "
                                 f"bytes of samples and the file holds {available:,}")
    except BaseException:
        sound.close()
        raise
    return sound


def _info(path: Path, sound: soundfile.SoundFile) -> AudioInfo:
    return AudioInfo(path=path, seconds=sound.frames / sound.samplerate, sample_rate=int(sound.samplerate),
                     channels=int(sound.channels), format=sound.format, subtype=sound.subtype,
                     frames=int(sound.frames))


def _check_length(info: AudioInfo, max_seconds: float | None) -> None:
    if info.frames == 0:
        raise AudioFileError(f"the audio file {info.path} has no samples")
    if max_seconds is not None and info.seconds > max_seconds:
        raise AudioFileError(f"the audio file {info.path} lasts {info.seconds:.2f} s, longer than the limit of "
                             f"{max_seconds:g} s")


def _native_blocks(path: Path, block_seconds: float, max_seconds: float | None
                   ) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (block (n, channels) float32 in [-1, 1], sample rate) at the file's own rate, after the header
    checks; raise AudioFileError on NaN or infinite samples or a decoding failure."""
    with _open(path) as sound:
        info = _info(path, sound)
        _check_length(info, max_seconds)
        block_frames = max(1, int(round(block_seconds * info.sample_rate)))
        frames_read = 0
        while True:
            try:
                block = sound.read(block_frames, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                raise AudioFileError(f"the audio file {path} cannot be decoded after "
                                     f"{frames_read / info.sample_rate:.2f} s ({exc})") from None
            if block.shape[0] == 0:
                if info.format in EXACT_LENGTH_FORMATS and frames_read < info.frames:
                    raise AudioFileError(f"the audio file {path} is truncated or damaged: its header promises "
                                         f"{info.seconds:.2f} s, and it ends after {frames_read / info.sample_rate:.2f} s")
                return
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                first = frames_read + int(np.argmin(finite))
                raise AudioFileError(f"the audio file {path} has NaN or infinite samples (the first at "
                                     f"{first / info.sample_rate:.2f} s)")
            # Float files may go past full scale; integer ones cannot. Clipping before mixing keeps one loud
            # channel from dominating and the resampler from ringing on values it was never meant to see.
            np.clip(block, -1.0, 1.0, out=block)
            frames_read += block.shape[0]
            yield block, info.sample_rate


def read_samples(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """The samples at the file's own rate: ((n,) for mono or (n, channels), float32 in [-1, 1], sample rate).

    For short files where the original rate matters (the corpus reader insists its clips are 16 kHz); holds the
    whole file at that rate, so prefer load_audio for anything else. Same checks as load_audio."""
    path = Path(path)
    blocks, rate = [], None
    for block, rate in _native_blocks(path, DEFAULT_BLOCK_SECONDS, max_seconds):
        blocks.append(block)
    if not blocks:
        raise AudioFileError(f"the audio file {path} has no samples")
    samples = np.concatenate(blocks)
    return (samples[:, 0] if samples.shape[1] == 1 else samples), rate


# ---------------------------------------------------------------------------------------------- converting
def _mix_to_mono(samples: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) -> (n,) float32, the channels' mean."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    return samples


def _resampling_factors(rate: int) -> tuple[int, int]:
    """(up, down) with rate * up / down = 16 kHz, in lowest terms."""
    common = math.gcd(int(rate), SAMPLE_RATE)
    return SAMPLE_RATE // common, int(rate) // common


@functools.lru_cache(maxsize=8)
def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter resample_poly designs by default (Kaiser, beta 5, 10 zero crossings either
    side), made once per rate pair instead of once per block: for coprime rates it has ~10^6 taps."""
    max_rate = max(up, down)
    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)
    taps.flags.writeable = False  # shared by every caller; resample_poly copies it before scaling
    return taps


def to_mono_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mix channels down ((n,) or (n, channels)) and resample (polyphase) to 16 kHz: float32 (m,).

    For audio already in memory; files go through load_audio, which does the same in bounded memory."""
    audio = _mix_to_mono(audio)
    if int(rate) != SAMPLE_RATE:
        up, down = _resampling_factors(rate)
        audio = resample_poly(audio, up, down, window=_lowpass(up, down))
    return audio.astype(np.float32, copy=False)


class _StreamResampler:
    """Resamples a signal that arrives in pieces so that the pieces of output join into exactly what
    resample_poly gives for the whole signal.

    Output sample j lies at input position j * down / up and depends only on the inputs within the filter's
    reach of it (half the filter's length, over `up`). Each push emits the outputs whose inputs have all
    arrived and keeps the inputs the next outputs still need. The kept part always starts at a multiple of
    `down`, where the polyphase grid of a fresh resample_poly call lines up with the whole signal's.
    """

    def __init__(self, rate: int):
        self.up, self.down = _resampling_factors(rate)
        self.taps = _lowpass(self.up, self.down)
        self.reach = (self.taps.size - 1) // 2 // self.up + 2  # input samples each side (+2 for rounding)
        self.pending = np.zeros(0, dtype=np.float32)  # the input from `pending_start` on
        self.pending_start = 0
        self.next_output = 0
        self.n_input = 0

    def _emit(self, stop: int) -> np.ndarray:
        """Outputs next_output..stop-1 from the pending input; then drop the input no later output needs."""
        if stop <= self.next_output:
            return np.zeros(0, dtype=np.float32)
        resampled = resample_poly(self.pending, self.up, self.down, window=self.taps)
        offset = self.pending_start * self.up // self.down  # exact: pending_start is a multiple of down
        out = resampled[self.next_output - offset:stop - offset].astype(np.float32, copy=False)
        self.next_output = stop
        first_needed = max(0, stop * self.down // self.up - self.reach)
        keep_from = max(self.pending_start, first_needed // self.down * self.down)
        self.pending = self.pending[keep_from - self.pending_start:]
        self.pending_start = keep_from
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        self.pending = np.concatenate([self.pending, samples])
        self.n_input += samples.size
        last_complete_input = self.n_input - 1 - self.reach  # outputs at or before it have all their inputs
        stop = last_complete_input * self.up // self.down + 1 if last_complete_input >= 0 else 0
        return self._emit(stop)

    def finish(self) -> np.ndarray:
        """The remaining outputs, treating the signal as zero past its end (as resample_poly does)."""
        return self._emit(-(-self.n_input * self.up // self.down))


# ---------------------------------------------------------------------------------------------- loading
def iter_audio_blocks(path: str | Path, block_seconds: float = DEFAULT_BLOCK_SECONDS,
                      max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Yield an audio file as 16 kHz mono float32 blocks in [-1, 1] (about `block_seconds` each), decoding one
    block at a time. Joined, the blocks equal load_audio(path). Raises AudioFileError (see load_audio)."""
    path = Path(path)
    resampler = None
    n_out = 0
    for block, rate in _native_blocks(path, block_seconds, max_seconds):
        mono = _mix_to_mono(block)
        if rate != SAMPLE_RATE:
            resampler = resampler or _StreamResampler(rate)
            mono = resampler.push(mono)
        if mono.size:
            # the low-pass can overshoot full scale a little next to clipped input
            n_out += mono.size
            yield np.clip(mono, -1.0, 1.0, out=mono)
    tail = resampler.finish() if resampler is not None else np.zeros(0, dtype=np.float32)
    if tail.size:
        n_out += tail.size
        yield np.clip(tail, -1.0, 1.0, out=tail)
    if n_out == 0:  # the header promised samples the decoder did not deliver
        raise AudioFileError(f"the audio file {path} has no samples")


def load_audio(path: str | Path, max_seconds: float | None = None) -> np.ndarray:
    """Any WAV (8/16/24/32-bit PCM, float), FLAC, OGG Vorbis or MP3 file, at any rate and with any number of
    channels, to 16 kHz mono float32 in [-1, 1].

    Raises AudioFileError when the file is missing, a folder, empty, not audio, without samples, longer than
    `max_seconds` (checked from the header, before decoding) or holds NaN or infinite samples. Silence and
    clipped audio load as they are."""
    return np.concatenate(list(iter_audio_blocks(path, max_seconds=max_seconds)))
