"""What M2S reads from a take's lips: its score against the audio, and the speech it hears, made audible.

    mel = predict_mel(m2s, expression, jaw)        # (4T, 80) log-mel from 25 fps motion
    score = lip_reading_score(m2s, expression, jaw, wave)   # mean |M2S mel - audio mel|: lower reads better
    wave = lips_audio(m2s, expression, jaw)        # 16 kHz samples, Griffin-Lim

The score. The shipped M2S was trained on phone units from a forced alignment of the corpus's transcripts;
a user's audio has no transcript and no aligner ships with the backend, so its phones are unknown at
inference. Its log-mel is known exactly, and M2S's second head predicts exactly that from the lips. So a
take's score is M2S's mel agreement with the audio: the mean absolute difference, over the take's mel frames
and bins, between the log-mel M2S hears in the take's lips and the log-mel of the audio itself (M2S's own
training loss, `mel_l1`). It measures timing and shape together: on the corpus's test voices the true motion
scores 1.31, the same motion 200 ms late 2.38 and another sentence's motion 2.77 (docs/m2s.md). Lower is
better; takes of one audio compare directly (a louder recording shifts every take's score alike).

Long takes are read in overlapping windows (M2S trained on 2.6 s windows; attention over minutes would need
gigabytes), keeping each window's centre, so a take of any length costs memory in proportion to its length.
The take's own first and last poses are held for 160 ms before and after it (and the audio is silence
there): M2S learnt on windows cut from the middle of speech, so at a bare edge it heard speech that
was not there (the last frame of every take read 5 log-mel units too loud, a click at the end of Listen).
"""

from __future__ import annotations

import numpy as np
import torch

from backend.audio import MELS_PER_FRAME, SAMPLES_PER_FRAME, clip_log_mel
from backend.m2s.vocoder import GriffinLim

WINDOW_FRAMES = 250    # 10 s read at once
CONTEXT_FRAMES = 25    # 1 s on each side, so no kept frame is near a window's edge
HELD_FRAMES = 4        # the take's first and last poses held this long beyond its ends: past the mel head's
                       # reach (3 convolutions of 3 steps at 50 Hz) and cheap (a 10 s take reads 8 frames more)


def _windows(frames: int, window: int, context: int):
    """(start, stop, first, last) per window: the take's frames start .. stop - 1 are kept, read with the
    frames first .. last - 1 of the held-edge motion (`_motion_tensors`: the take's frame k is its frame
    k + HELD_FRAMES there), up to `context` frames on each side."""
    for start in range(0, frames, window):
        stop = min(frames, start + window)
        first = max(0, start + HELD_FRAMES - context)
        yield start, stop, first, min(frames + 2 * HELD_FRAMES, stop + HELD_FRAMES + context)


def _motion_tensors(m2s, expression, jaw):
    """(expression, jaw, single): batched tensors on M2S's device, the first and last frames held for
    HELD_FRAMES before and after the take."""
    device = next(m2s.parameters()).device   # the generator's (a GPU when it samples there)
    expression = torch.as_tensor(np.asarray(expression, dtype=np.float32), device=device)
    jaw = torch.as_tensor(np.asarray(jaw, dtype=np.float32), device=device)
    single = expression.ndim == 2
    if single:
        expression, jaw = expression[None], jaw[None]

    def held(x):
        return torch.cat([x[:, :1].expand(-1, HELD_FRAMES, -1), x, x[:, -1:].expand(-1, HELD_FRAMES, -1)], dim=1)

    return held(expression), held(jaw), single


@torch.no_grad()
def predict_mel(m2s, expression: np.ndarray, jaw: np.ndarray, window: int = WINDOW_FRAMES,
                context: int = CONTEXT_FRAMES) -> np.ndarray:
    """The log-mel M2S hears in 25 fps motion: expression (T, E), jaw (T, 3) -> (4T, n_mels) float32; or a
    batch of takes, (N, T, E) and (N, T, 3) -> (N, 4T, n_mels), read together."""
    expression, jaw, single = _motion_tensors(m2s, expression, jaw)
    takes, frames = expression.shape[0], expression.shape[1] - 2 * HELD_FRAMES
    out = np.empty((takes, frames * MELS_PER_FRAME, m2s.network.config.n_mels), dtype=np.float32)
    for start, stop, first, last in _windows(frames, window, context):
        _, mel = m2s.from_motion(expression[:, first:last], jaw[:, first:last])
        offset = HELD_FRAMES - first   # the take's frame k is frame k + offset of this window
        keep = slice((start + offset) * MELS_PER_FRAME, (stop + offset) * MELS_PER_FRAME)
        out[:, start * MELS_PER_FRAME: stop * MELS_PER_FRAME] = mel[:, keep].cpu().numpy()
    return out[0] if single else out


@torch.no_grad()
def lip_reading_score(m2s, expression: np.ndarray, jaw: np.ndarray, wave: np.ndarray, window: int = WINDOW_FRAMES,
                      context: int = CONTEXT_FRAMES):
    """Mean |M2S's log-mel from the lips - the audio's log-mel| over the take (lower: the lips read better).
    expression (T, E) and jaw (T, 3) at 25 fps, or a batch (N, T, E) and (N, T, 3) of takes of the same audio
    (then an (N,) array); wave: the 16 kHz samples those frames animate. Window by window, the audio's log-mel
    too, so ten minutes cost what ten seconds do (a whole-take spectrogram of 10 min held 360 MiB)."""
    expression, jaw, single = _motion_tensors(m2s, expression, jaw)
    takes, frames = expression.shape[0], expression.shape[1] - 2 * HELD_FRAMES
    silence = np.zeros(HELD_FRAMES * SAMPLES_PER_FRAME, dtype=np.float32)
    wave = np.concatenate([silence, np.asarray(wave, dtype=np.float32), silence])
    total = np.zeros(takes)
    for start, stop, first, last in _windows(frames, window, context):
        _, mel = m2s.from_motion(expression[:, first:last], jaw[:, first:last])
        heard = clip_log_mel(wave[first * SAMPLES_PER_FRAME: last * SAMPLES_PER_FRAME], last - first)
        offset = HELD_FRAMES - first   # the take's frame k is frame k + offset of this window
        keep = slice((start + offset) * MELS_PER_FRAME, (stop + offset) * MELS_PER_FRAME)
        total += np.abs(mel[:, keep].cpu().numpy() - heard[keep]).sum(axis=(-2, -1))
    scores = total / max(frames * MELS_PER_FRAME * m2s.network.config.n_mels, 1)
    return float(scores[0]) if single else scores


def lips_audio(m2s, expression: np.ndarray, jaw: np.ndarray, vocoder=None) -> np.ndarray:
    """What the lips say: M2S's log-mel of 25 fps motion through a vocoder (default Griffin-Lim, no weights),
    as 16 kHz samples in [-0.9, 0.9], one motion frame per 640 samples."""
    vocoder = vocoder or GriffinLim()
    return vocoder(torch.from_numpy(predict_mel(m2s, expression, jaw))).numpy()


def take_lips_audio(m2s, take, vocoder=None) -> np.ndarray:
    """What a take's lips say (a backend.take_file.Take at any frame rate, made for M2S's head), as 16 kHz
    samples covering the take's seconds of its audio: the take is brought back to M2S's 25 fps first."""
    from backend.audio import MOTION_FPS
    from backend.frame_rate import frames_for_seconds, resample_motion
    from backend.take_file import TakeFileError

    if take.head.get("identity") != m2s.features.head_identity:
        raise TakeFileError(f"this take was made for the head {take.head.get('identity')}; the M2S model hears "
                            f"the head {m2s.features.head_identity} only")
    n_frames = max(1, frames_for_seconds(take.seconds, MOTION_FPS))
    parts = resample_motion({"expression": take.expression, "jaw": take.jaw}, take.fps, MOTION_FPS, n_frames)
    return lips_audio(m2s, parts["expression"], parts["jaw"], vocoder)
