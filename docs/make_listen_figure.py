"""The Listen figure for docs/m2s.md: what one take's lips say (M2S's log-mel of the take, through
Griffin-Lim, as the add-on's listen strip plays it) against the voice, and how the loudness of the two
correlates per frame, at lag 0 and 200 ms off.

    python docs/make_listen_figure.py          # the shipped models on backend/examples/thunder_example.wav

Writes docs/m2s/listen_lips_mels.png and prints the take's score and the correlations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import backend
from backend.audio import SAMPLES_PER_FRAME, log_mel_spectrogram
from backend.generate import Generator
from backend.m2s.reading import take_lips_audio
from training.m2s.listen import plot_mels

DOCS = Path(__file__).parent
LAG_FRAMES = 5   # 200 ms


def loudness(samples: np.ndarray, frames: int) -> np.ndarray:
    blocks = samples[: frames * SAMPLES_PER_FRAME].astype(np.float64).reshape(frames, SAMPLES_PER_FRAME)
    return 10 * np.log10((blocks ** 2).mean(axis=1) + 1e-8)


def main() -> None:
    torch.manual_seed(0)
    example = Path(backend.__file__).parent / "examples" / "thunder_example.wav"
    generator = Generator(device="cpu")
    take = generator.generate(example, seed=0, settings={"steps": 4})[0]
    lips = take_lips_audio(generator.m2s_model(), take)
    voice = generator.read_speech(example).samples[: len(lips)]
    lips = lips[: len(voice)]   # the take covers the audio's last frame whole; the plots end together
    frames = min(len(lips), len(voice)) // SAMPLES_PER_FRAME
    a, b = loudness(lips, frames), loudness(voice, frames)
    same = np.corrcoef(a, b)[0, 1]
    late = np.corrcoef(a[LAG_FRAMES:], b[:-LAG_FRAMES])[0, 1]
    early = np.corrcoef(a[:-LAG_FRAMES], b[LAG_FRAMES:])[0, 1]
    print(f"seed {take.seed}: m2s_mel_l1 {take.scores['m2s_mel_l1']:.3f}; loudness r = {same:.2f} at lag 0, "
          f"{late:.2f} and {early:.2f} at +-200 ms")
    mel = lambda x: log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))[0].numpy()
    path = plot_mels(DOCS / "m2s" / "listen_lips_mels.png",
                     [("the voice (backend/examples/thunder_example.wav)", mel(voice)),
                      ("what take 1's lips say: M2S's mel of the take, through Griffin-Lim (the listen strip)",
                       mel(lips))],
                     f"Listen: seed {take.seed}, M2S mel L1 {take.scores['m2s_mel_l1']:.2f}, loudness r = {same:.2f}")
    print(path)


if __name__ == "__main__":
    main()
