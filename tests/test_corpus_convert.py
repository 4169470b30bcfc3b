"""Real data in: FLAME parameter sequences (.npz at 30 fps) with 22.05 kHz stereo audio, converted to the format."""

import numpy as np
import pytest
from scipy.io import wavfile

from training.corpus.convert import convert_folder
from training.corpus.format import open_corpus


def write_source(folder, name, seconds=2.0, fps=30.0, rate=22050, layout="pose6", frames=None):
    n = frames or int(round(seconds * (fps or 30.0)))
    t = np.arange(n) / (fps or 30.0)
    expression = np.stack([np.sin(2 * np.pi * (k + 1) * 0.5 * t) for k in range(20)], axis=1) * 0.3
    jaw = np.stack([0.1 + 0.1 * np.sin(2 * np.pi * 3 * t), np.zeros(n), np.zeros(n)], axis=1)
    glob = np.stack([np.zeros(n), 0.05 * np.sin(2 * np.pi * 0.5 * t), np.zeros(n)], axis=1)
    arrays = {"fps": np.array(fps)} if fps else {}
    if layout == "pose6":  # DECA / EMOCA: exp + pose = global, jaw
        arrays.update(exp=expression, pose=np.concatenate([glob, jaw], axis=1))
    else:  # FLAME's full pose: global, neck, jaw, eyes
        arrays.update(expression=expression,
                      pose=np.concatenate([np.zeros((n, 3)), glob, jaw, np.zeros((n, 6))], axis=1))
    np.savez(folder / f"{name}.npz", **arrays)
    samples = int(seconds * rate)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(samples) / rate)
    wavfile.write(folder / f"{name}.wav", rate, (np.stack([tone, 0.5 * tone], 1) * 32767).astype(np.int16))
    return expression, jaw


def test_convert_resamples_to_25fps_16k(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    expression, jaw = write_source(src, "alice_001", layout="pose6")
    write_source(src, "bob_001", layout="pose15", seconds=1.5)
    write_source(src, "carol_001", seconds=2.0)
    (src / "alice_001.txt").write_text("Bin blue at F two now.")
    summary = convert_folder(src, tmp_path / "out", head="builtin")
    assert summary == {"converted": 3, "failed": 0, "hours": pytest.approx(5.5 / 3600, rel=1e-3)}
    corpus = open_corpus(tmp_path / "out")
    assert sorted(m.speaker for m in corpus.metas) == ["alice", "bob", "carol"]
    assert {m.split for m in corpus.metas} == {"train", "val", "test"}  # split by speaker
    clip = corpus.clip("alice_001")
    assert clip.audio.shape == (32000,) and clip.expression.shape == (50, 20) and clip.meta.fps == 25
    # frame i at i / 25 s: compare with the source signal sampled at those times
    t = np.arange(50) / 25
    np.testing.assert_allclose(clip.expression[:, 0], 0.3 * np.sin(2 * np.pi * 0.5 * np.minimum(t, 59 / 30)), atol=0.01)
    np.testing.assert_allclose(clip.jaw[:, 0], 0.1 + 0.1 * np.sin(2 * np.pi * 3 * np.minimum(t, 59 / 30)), atol=0.02)
    assert np.abs(clip.neck[:, 1]).max() > 0.04  # the global head rotation became the neck's
    assert clip.meta.text == "bin blue at f two now"
    assert corpus.clip("bob_001").jaw.shape == (38, 3)


def test_convert_reports_and_skips_bad_clips(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_source(src, "good_1")
    write_source(src, "short_1", frames=30)  # 1 s of motion, 2 s of audio
    expression, _ = write_source(src, "nan_1")
    z = dict(np.load(src / "nan_1.npz"))
    z["exp"][5, 3] = np.nan
    np.savez(src / "nan_1.npz", **z)
    write_source(src, "nofps_1", fps=None)
    reported = []
    summary = convert_folder(src, tmp_path / "out", report=reported.append)
    assert summary["converted"] == 1 and summary["failed"] == 3
    messages = sorted(str(e) for e in reported)
    assert messages[0].startswith("clip nan_1:") and "NaN" in messages[0]
    assert messages[1].startswith("clip nofps_1:") and "--fps" in messages[1]
    assert messages[2].startswith("clip short_1:") and "1.00 s" in messages[2]
    assert [m.id for m in open_corpus(tmp_path / "out").metas] == ["good_1"]
