"""Audio features shared by the models: log-mel spectrograms at the motion frame rate's multiples.

Speech is 16 kHz mono. Motion runs at 25 fps, so one motion frame is 640 samples: 4 mel frames (hop 160,
100 Hz) or 2 speech-unit frames (50 Hz). These constants are the contract between the corpus, the
mesh-to-speech model and the audio encoders; Choi et al. (2023) use the same mel settings.
"""

from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16_000
MOTION_FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // MOTION_FPS  # 640
MEL_HOP = 160
MEL_WINDOW = 640
MEL_BINS = 80
MEL_FMAX = 8_000.0
MELS_PER_FRAME = SAMPLES_PER_FRAME // MEL_HOP  # 4
UNIT_HOP = 320                                   # speech units (the M2S model's targets) at 50 Hz
UNITS_PER_FRAME = SAMPLES_PER_FRAME // UNIT_HOP  # 2
MELS_PER_UNIT = UNIT_HOP // MEL_HOP              # 2
LOG_MEL_FLOOR = 1e-5
ENVELOPE_SIGMA_FRAMES = 1.0                      # the loudness envelope follows syllables, not pitch periods


def frames_for_samples(n_samples: int) -> int:
    """The number of 25 fps motion frames for n samples of 16 kHz audio: ceil(n / 640)."""
    return -(-int(n_samples) // SAMPLES_PER_FRAME)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@functools.lru_cache(maxsize=4)
def mel_filterbank(n_fft: int = MEL_WINDOW, n_mels: int = MEL_BINS, sample_rate: int = SAMPLE_RATE,
                   fmax: float = MEL_FMAX) -> np.ndarray:
    """Triangular, area-normalised mel filters (Slaney). Returns (n_mels, n_fft // 2 + 1) float32."""
    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz - lower) / (centre - lower)
    falling = (upper - fft_hz) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (upper - lower))  # equal area, so loud and quiet bands are comparable
    return filters.astype(np.float32)


def log_mel_spectrogram(wave: torch.Tensor) -> torch.Tensor:
    """Log-mel spectrogram, 4 frames per motion frame.

    wave: (N,) or (B, N) float at 16 kHz. Returns (B, N // 160, 80): frame i covers samples from
    160 i - 240 to 160 i + 400 (a centred 640-sample Hann window), so 4 T frames for T motion frames.
    """
    if wave.ndim == 1:
        wave = wave[None]
    n_frames = wave.shape[-1] // MEL_HOP
    window = torch.hann_window(MEL_WINDOW, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft=MEL_WINDOW, hop_length=MEL_HOP, win_length=MEL_WINDOW, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    power = spec.real.square() + spec.imag.square()
    filters = torch.as_tensor(mel_filterbank(), device=wave.device, dtype=wave.dtype)
    mel = torch.einsum("mf,bft->btm", filters, power)[:, :n_frames]
    return torch.log(mel.clamp_min(LOG_MEL_FLOOR))


def clip_log_mel(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Log-mel of 16 kHz audio for `n_frames` motion frames, padded with silence or cut to exactly 4 mel
    frames per motion frame: (4T, 80) float32. What M2S is trained to predict, and scored against."""
    wave = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    wave[: min(len(audio), len(wave))] = audio[: len(wave)]
    return log_mel_spectrogram(torch.from_numpy(wave))[0].numpy()


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Mono float audio in [-1, 1] to a 16-bit PCM WAV file."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return Path(path)


def audio_envelope(audio, n_frames: int, sample_rate: int = SAMPLE_RATE, fps: float = MOTION_FPS,
                   sigma_frames: float = ENVELOPE_SIGMA_FRAMES) -> np.ndarray:
    """(n_frames,) RMS amplitude of a one-frame (40 ms at 25 fps) window centred on each frame's time
    (zeros beyond the audio), smoothed with a Gaussian of `sigma_frames`."""
    from scipy.ndimage import gaussian_filter1d

    x = np.asarray(audio, dtype=np.float32).ravel()
    hop = sample_rate / fps
    half = int(round(hop / 2))
    starts = np.round(np.arange(n_frames) * hop).astype(int)
    # The audio once, with zeros for the half window before it and for any frames after its end.
    padded = np.zeros(max(x.size + half, int(starts[-1]) if n_frames else 0) + 2 * half, dtype=np.float32)
    padded[half:half + x.size] = x
    offsets = np.arange(2 * half)
    rms = np.empty(n_frames)
    for lo in range(0, n_frames, 1024):   # frames a chunk at a time: 10 min of audio is never copied 640-fold
        windows = padded[starts[lo:lo + 1024, None] + offsets].astype(np.float64)
        rms[lo:lo + 1024] = np.sqrt(np.mean(windows ** 2, axis=1))
    return gaussian_filter1d(rms, sigma_frames, mode="nearest") if sigma_frames > 0 else rms
