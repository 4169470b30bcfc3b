"""Acoustics like real recordings: the clean synthetic speech degraded the way real recordings differ.

A clip's degradation is drawn from its own seed (`draw_acoustics`, a plain dict that goes into the clip's
metadata as extra["acoustics"]) and applied by `degrade`; both are deterministic. About 18% of clips stay
clean. The others pass, each stage with its own probability, through:

1. a room: pyroomacoustics' image-source model of a shoebox room, from a small booth (RT60 0.1-0.25 s) over an
   office to a living room (0.4-0.8 s), with the talker 0.3-2 m from the microphone; the impulse response is
   cut to start at its direct path, so the speech stays in time with the motion;
2. background noise at 5-30 dB SNR (the ratio of the whole clip's speech power to the noise's): coloured
   noise (audiomentations' AddColorNoise, from blue to brown), babble of 2-4 other synthetic talkers, or mains
   hum (50 or 60 Hz with harmonics and a little hiss);
3. a microphone: a phone's band (300-3400 Hz), a laptop's (150-250 Hz to 6-7.5 kHz with a resonance), a
   headset's or a cheap one's colouring (audiomentations' filters and parametric EQ);
4. a lossy codec: MP3 (audiomentations' Mp3Compression, 16-64 kbit/s) or Opus (ffmpeg's libopus, 8-32 kbit/s);
5. the recording level (peak -30 to -1 dBFS) and, sometimes, clipping (audiomentations' ClippingDistortion).

The motion is never made from the degraded audio: make.py aligns and animates the clean speech, then degrades.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from training.corpus.format import SAMPLE_RATE

CLEAN_FRACTION = 0.18
SNR_DB = (5.0, 30.0)
ROOMS = {  # size ranges (m) and RT60 range (s)
    "booth": ((1.5, 2.5), (1.5, 2.5), (2.1, 2.5), (0.10, 0.25)),
    "office": ((3.0, 4.5), (2.5, 4.0), (2.4, 2.8), (0.25, 0.50)),
    "living_room": ((4.0, 7.0), (3.5, 6.0), (2.4, 3.0), (0.40, 0.80)),
}
MAX_IMAGE_ORDER = 40  # caps the image-source model's cost; long rooms' tails fall a little short of RT60
MICROPHONES = ("phone", "laptop", "headset", "cheap")
STAGE_PROBABILITY = {"room": 0.6, "noise": 0.75, "microphone": 0.7, "codec": 0.35, "clipping": 0.08}


def _u(rng: np.random.Generator, lo: float, hi: float, digits: int = 3) -> float:
    return round(float(rng.uniform(lo, hi)), digits)


def draw_acoustics(rng: np.random.Generator, clean_fraction: float = CLEAN_FRACTION) -> dict:
    """A clip's degradation as a JSON-able dict; {"clean": True} for a clean clip."""
    if rng.random() < clean_fraction:
        return {"clean": True}
    out: dict = {"clean": False, "seed": int(rng.integers(2 ** 31))}
    if rng.random() < STAGE_PROBABILITY["room"]:
        kind = ("booth", "office", "living_room")[int(rng.integers(3))]
        (x0, x1), (y0, y1), (z0, z1), (r0, r1) = ROOMS[kind]
        out["room"] = {"kind": kind, "size": [_u(rng, x0, x1, 2), _u(rng, y0, y1, 2), _u(rng, z0, z1, 2)],
                       "rt60": _u(rng, r0, r1), "distance": _u(rng, 0.3, 2.0, 2)}
    if rng.random() < STAGE_PROBABILITY["noise"]:
        kind = ("colour", "babble", "hum")[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
        noise = {"kind": kind, "snr_db": _u(rng, *SNR_DB, 2)}
        if kind == "colour":
            noise["f_decay"] = _u(rng, -6.0, 6.0, 2)  # dB per octave: -6 brown ... 0 white ... +6 violet
        elif kind == "babble":
            noise["talkers"] = int(rng.integers(2, 5))
        else:
            noise["mains_hz"] = int(rng.choice([50, 60]))
        out["noise"] = noise
    if rng.random() < STAGE_PROBABILITY["microphone"]:
        kind = MICROPHONES[int(rng.integers(len(MICROPHONES)))]
        mic: dict = {"kind": kind}
        if kind == "phone":
            mic.update(low_hz=_u(rng, 250, 350, 0), high_hz=_u(rng, 3200, 3600, 0), peak_hz=_u(rng, 1000, 2500, 0),
                       peak_db=_u(rng, 2, 6, 1))
        elif kind == "laptop":
            mic.update(low_hz=_u(rng, 150, 250, 0), high_hz=_u(rng, 6000, 7500, 0), peak_hz=_u(rng, 2000, 5000, 0),
                       peak_db=_u(rng, 3, 8, 1))
        elif kind == "headset":
            mic.update(low_hz=_u(rng, 80, 120, 0), high_hz=_u(rng, 7000, 7800, 0), peak_hz=_u(rng, 3000, 6000, 0),
                       peak_db=_u(rng, -4, 4, 1))
        else:
            mic.update(low_hz=_u(rng, 200, 400, 0), high_hz=_u(rng, 4000, 6000, 0), peak_hz=_u(rng, 800, 3000, 0),
                       peak_db=_u(rng, 4, 9, 1))
        mic["eq_db"] = 4.0  # audiomentations' seven-band EQ, gains drawn within +-eq_db from the clip's seed
        out["microphone"] = mic
    if rng.random() < STAGE_PROBABILITY["codec"]:
        if rng.random() < 0.5:
            out["codec"] = {"kind": "mp3", "kbps": int(rng.choice([16, 24, 32, 48, 64]))}
        else:
            out["codec"] = {"kind": "opus", "kbps": int(rng.choice([8, 12, 16, 24, 32]))}
    out["peak_dbfs"] = _u(rng, -30.0, -1.0, 1)
    if rng.random() < STAGE_PROBABILITY["clipping"]:
        out["clipping_percentile"] = int(rng.integers(1, 5))
    return out


# ------------------------------------------------------------------------------------------------ stages
def _seed_libraries(seed: int) -> None:
    """audiomentations draws from Python's and numpy's global generators: seed them for each stage."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def room_impulse_response(room: dict, seed: int) -> np.ndarray:
    """The room's impulse response (pyroomacoustics image sources), starting at its direct path, unit peak."""
    import pyroomacoustics as pra

    size = np.asarray(room["size"], dtype=np.float64)
    absorption, order = pra.inverse_sabine(room["rt60"], size)
    shoebox = pra.ShoeBox(size, fs=SAMPLE_RATE, materials=pra.Material(min(absorption, 1.0)),
                          max_order=min(order, MAX_IMAGE_ORDER))
    rng = np.random.default_rng(seed)
    source = np.array([rng.uniform(0.3, size[0] - 0.3), rng.uniform(0.3, size[1] - 0.3), rng.uniform(1.1, 1.7)])
    angle = rng.uniform(0, 2 * np.pi)
    mic = source + room["distance"] * np.array([np.cos(angle), np.sin(angle), 0.0]) + [0.0, 0.0, -0.1]
    mic = np.clip(mic, 0.1, size - 0.1)
    shoebox.add_source(source)
    shoebox.add_microphone(mic)
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    rir = rir[int(np.argmax(np.abs(rir))):]
    return rir / max(float(np.abs(rir).max()), 1e-12)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled to `snr_db` (power of the whole speech clip over the noise's)."""
    from audiomentations.core.utils import calculate_desired_noise_rms, calculate_rms

    noise = np.resize(noise, speech.size).astype(np.float32)
    scale = calculate_desired_noise_rms(calculate_rms(speech), snr_db) / max(calculate_rms(noise), 1e-12)
    return speech + scale * noise


def hum(n: int, mains_hz: int, seed: int) -> np.ndarray:
    """Mains hum: the mains frequency and its harmonics (falling off), with a little hiss."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    out = sum(0.6 ** k * np.sin(2 * np.pi * mains_hz * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k in range(6))
    return (out + 0.05 * rng.standard_normal(n)).astype(np.float32)


def babble(n: int, talkers: int, seed: int, sentences) -> np.ndarray:
    """Other people talking: `talkers` espeak-ng voices reading random sentences, overlapped and looped."""
    from training.corpus.synth import synthesize
    from training.corpus.voices import VoiceConfig, installed_voices

    rng = np.random.default_rng(seed)
    _, variants = installed_voices("espeak-ng")
    out = np.zeros(n, dtype=np.float32)
    for _ in range(talkers):
        spoken = sentences[int(rng.integers(len(sentences)))]
        variant = variants[int(rng.integers(len(variants)))] if variants else ""
        voice = VoiceConfig("espeak-ng", "en-us", variant, float(rng.uniform(0.9, 1.2)), float(rng.uniform(-3, 3)))
        speech = synthesize(voice, spoken)
        speech = speech / max(float(np.sqrt(np.mean(speech ** 2))), 1e-6)
        out += np.roll(np.resize(speech, n), int(rng.integers(n)))
    return out


def _microphone(audio: np.ndarray, mic: dict, seed: int) -> np.ndarray:
    from audiomentations import HighPassFilter, LowPassFilter, PeakingFilter, SevenBandParametricEQ

    steps = [HighPassFilter(min_cutoff_freq=mic["low_hz"], max_cutoff_freq=mic["low_hz"], min_rolloff=24,
                            max_rolloff=24, p=1.0),
             LowPassFilter(min_cutoff_freq=mic["high_hz"], max_cutoff_freq=mic["high_hz"], min_rolloff=24,
                           max_rolloff=24, p=1.0),
             PeakingFilter(min_center_freq=mic["peak_hz"], max_center_freq=mic["peak_hz"], min_gain_db=mic["peak_db"],
                           max_gain_db=mic["peak_db"], min_q=1.0, max_q=1.0, p=1.0)]
    for step in steps:
        audio = step(audio, SAMPLE_RATE)
    _seed_libraries(seed)
    return SevenBandParametricEQ(min_gain_db=-mic["eq_db"], max_gain_db=mic["eq_db"], p=1.0)(audio, SAMPLE_RATE)


def _opus(audio: np.ndarray, kbps: int) -> np.ndarray:
    """Opus through ffmpeg's libopus and back; ffmpeg drops the encoder's pre-skip, so timing is kept."""
    from training.corpus.format import read_audio, to_mono_16k, write_wav

    from training.corpus.errors import EngineMissingError, ThunderError

    if not shutil.which("ffmpeg"):
        raise EngineMissingError("ffmpeg is not installed, and the Opus codec of the corpus's acoustics needs it "
                                 "(Debian: apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="thunder-opus-") as tmp:
        src, enc, dec = Path(tmp) / "in.wav", Path(tmp) / "x.ogg", Path(tmp) / "out.wav"
        write_wav(src, np.clip(audio, -1, 1))
        for args in (["-i", str(src), "-c:a", "libopus", "-b:a", f"{kbps}k", str(enc)],
                     ["-i", str(enc), "-ar", str(SAMPLE_RATE), "-ac", "1", str(dec)]):
            result = subprocess.run(["ffmpeg", "-v", "error", "-y", *args], capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["no message"])[-1]
                raise ThunderError(f"ffmpeg could not code the audio as Opus: {last}")
        out, rate = read_audio(dec)
    out = to_mono_16k(out, rate)
    return np.pad(out, (0, max(0, audio.size - out.size)))[:audio.size].astype(np.float32)


def degrade(audio: np.ndarray, acoustics: dict, babble_sentences=()) -> np.ndarray:
    """Apply a drawn degradation (draw_acoustics) to 16 kHz mono float32 audio; same length, in [-1, 1].
    Babble needs sentences (any list of texts) to speak; without them it is coloured noise at the same SNR."""
    from scipy.signal import fftconvolve

    x = np.asarray(audio, dtype=np.float32)
    if acoustics.get("clean", True):
        return x.copy()
    seed = acoustics["seed"]
    if "room" in acoustics:
        x = fftconvolve(x, room_impulse_response(acoustics["room"], seed))[:x.size].astype(np.float32)
    noise = acoustics.get("noise")
    if noise:
        if noise["kind"] == "hum":
            x = mix_at_snr(x, hum(x.size, noise["mains_hz"], seed + 1), noise["snr_db"])
        elif noise["kind"] == "babble" and len(babble_sentences):
            x = mix_at_snr(x, babble(x.size, noise["talkers"], seed + 1, babble_sentences), noise["snr_db"])
        else:
            from audiomentations import AddColorNoise

            _seed_libraries(seed + 1)
            f_decay = noise.get("f_decay", 0.0)
            x = AddColorNoise(min_snr_db=noise["snr_db"], max_snr_db=noise["snr_db"], min_f_decay=f_decay,
                              max_f_decay=f_decay, p=1.0)(x, SAMPLE_RATE)
    if "microphone" in acoustics:
        x = _microphone(x, acoustics["microphone"], seed + 2)
    codec = acoustics.get("codec")
    if codec:
        if codec["kind"] == "opus":
            x = _opus(x, codec["kbps"])
        else:
            from audiomentations import Mp3Compression

            _seed_libraries(seed + 3)
            x = Mp3Compression(min_bitrate=codec["kbps"], max_bitrate=codec["kbps"], p=1.0)(np.clip(x, -1, 1),
                                                                                           SAMPLE_RATE)
    x = x * (10 ** (acoustics["peak_dbfs"] / 20) / max(float(np.abs(x).max()), 1e-9))
    if "clipping_percentile" in acoustics:
        from audiomentations import ClippingDistortion

        p = acoustics["clipping_percentile"]
        _seed_libraries(seed + 4)
        x = ClippingDistortion(min_percentile_threshold=p, max_percentile_threshold=p, p=1.0)(x, SAMPLE_RATE)
        x = x * (10 ** (acoustics["peak_dbfs"] / 20) / max(float(np.abs(x).max()), 1e-9))
    return np.clip(x, -1.0, 1.0).astype(np.float32)

