"""M2S at inference (backend/m2s/reading.py): every take scored by how well its lips read, best of N from the
Generator, `thunder generate --best-of` and the service, and Listen (what the lips say, vocoded) from the
service. The shipped M2S model hears the built-in head; the takes come from the tiny THUNDER model."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import backend

from backend.audio import SAMPLES_PER_FRAME
from backend.cli import main as thunder
from backend.generate import GenerateError, Generator
from backend.m2s import load_m2s
from backend.m2s.reading import HELD_FRAMES, lip_reading_score, predict_mel, take_lips_audio
from backend.models import SHIPPED_M2S
from backend.take_file import TakeFileError, load_take, save_take
from test_generate import FEW_STEPS, generator, speech  # noqa: F401  (the same tiny generator and 3.3 s speech)
from test_serve import Client, start_service

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def m2s(head):
    return load_m2s(SHIPPED_M2S, head)


def test_the_score_is_lower_for_lips_that_fit_the_audio(m2s, head):
    """The shipped THUNDER model's take of the example voice reads better than a still mouth and than the same
    take 200 ms late; on silence a still mouth reads far better than the take. (On the corpus's test voices:
    true motion 1.31, 200 ms late 2.38, another sentence 2.77: docs/m2s.md.)"""
    shipped = Generator(device="cpu")
    example = Path(backend.__file__).parent / "examples" / "thunder_example.wav"
    take = shipped.generate(example, settings={"steps": 4}, end=4.0)[0]
    wave = shipped.read_speech(example).samples[: 4 * 16000]
    late = [np.concatenate([np.repeat(p[:1], 5, 0), p])[: take.n_frames] for p in (take.expression, take.jaw)]
    still = np.zeros_like(take.expression), np.zeros_like(take.jaw)
    score = lip_reading_score(m2s, take.expression, take.jaw, wave)
    assert take.scores["m2s_mel_l1"] == pytest.approx(score, abs=1e-6)
    assert score < lip_reading_score(m2s, *late, wave) - 0.3
    assert score < lip_reading_score(m2s, *still, wave) - 0.3
    silence = np.zeros_like(wave)
    assert lip_reading_score(m2s, *still, silence) < 0.5 * lip_reading_score(m2s, take.expression, take.jaw, silence)


def test_long_takes_are_read_in_windows_that_agree_with_one_read(m2s, head):
    rng = np.random.default_rng(0)
    frames = 120
    expression = 0.3 * rng.standard_normal((frames, head.n_expression)).astype(np.float32)
    jaw = np.abs(0.1 * rng.standard_normal((frames, 3))).astype(np.float32)
    whole = predict_mel(m2s, expression, jaw, window=frames)
    # One read is M2S over the take with its first and last poses held for HELD_FRAMES around it.
    held = [np.concatenate([np.repeat(x[:1], HELD_FRAMES, 0), x, np.repeat(x[-1:], HELD_FRAMES, 0)])
            for x in (expression, jaw)]
    with torch.no_grad():
        direct = m2s.from_motion(*(torch.from_numpy(x)[None] for x in held))[1][0].numpy()
    direct = direct[4 * HELD_FRAMES: 4 * (HELD_FRAMES + frames)]
    np.testing.assert_allclose(whole, direct, atol=1e-5)
    windowed = predict_mel(m2s, expression, jaw, window=40, context=10)
    assert windowed.shape == (4 * frames, 80)
    # Attention sees 60 frames instead of 120: close, not equal (the windows' seams do not stand out).
    assert np.abs(windowed - whole).mean() < 0.2 * np.abs(whole - whole.mean()).mean()


def test_a_take_that_ends_still_reads_silence_to_its_last_frame(m2s, head):
    """M2S learnt on windows cut from inside speech; read at a bare edge, the last frame of every take came
    out 5 log-mel units louder than the held mouth before it (a click at the end of Listen). The take's last
    pose is held past its end, so a still ending reads as the still frames before it do."""
    shipped = Generator(device="cpu")
    example = Path(backend.__file__).parent / "examples" / "thunder_example.wav"
    take = shipped.generate(example, seed=0, settings={"steps": 4})[0]   # ends in 0.3 s of silence
    tail = [np.concatenate([p, np.repeat(p[-1:], 20, 0)]) for p in (take.expression, take.jaw)]
    loudness = predict_mel(m2s, *tail).reshape(-1, 4, 80).mean(axis=(1, 2))   # per motion frame
    held = loudness[-20:-2]
    assert np.abs(loudness[-2:] - held.mean()).max() < 0.5 + 3 * held.std(), (loudness[-2:], held.mean())


def test_the_score_read_in_windows_is_the_score_of_one_read(m2s, head):
    """The score reads the audio's log-mel window by window too (bounded memory over minutes): on 30 s it is
    the score of one whole read, to a part in a thousand."""
    from backend.audio import clip_log_mel

    rng = np.random.default_rng(1)
    frames = 750
    expression = np.clip(0.2 * rng.standard_normal((frames, head.n_expression)), 0, 1).astype(np.float32)
    jaw = np.abs(0.1 * rng.standard_normal((frames, 3))).astype(np.float32)
    wave = (0.1 * np.sin(np.arange(frames * SAMPLES_PER_FRAME) * 0.05) * rng.random(frames * SAMPLES_PER_FRAME)
            ).astype(np.float32)
    one_read = np.abs(predict_mel(m2s, expression, jaw) - clip_log_mel(wave, frames)).mean()
    assert lip_reading_score(m2s, expression, jaw, wave) == pytest.approx(one_read, rel=1e-3)


def test_every_take_is_scored_and_best_of_keeps_the_best(generator, m2s, speech, tmp_path):
    every = generator.generate(speech, takes=4, seed=3, settings=FEW_STEPS)
    scores = {t.seed: t.scores["m2s_mel_l1"] for t in every}
    assert all(math.isfinite(s) and 0 < s < 10 for s in scores.values()) and len(set(scores.values())) == 4
    # Read in one batch, each as if alone (25 fps takes: the frames M2S hears).
    alone = lip_reading_score(m2s, every[2].expression, every[2].jaw, generator.read_speech(speech).samples)
    assert scores[5] == pytest.approx(alone, abs=1e-5)
    best = generator.generate(speech, takes=2, seed=3, best_of=4, settings=FEW_STEPS)
    assert [t.seed for t in best] == sorted(scores, key=scores.get)[:2]   # best first
    by_seed = {t.seed: t for t in every}
    for take in best:   # the same takes, only chosen: a take depends on its seed alone
        assert np.array_equal(take.jaw, by_seed[take.seed].jaw) and take.scores == by_seed[take.seed].scores
    # The score travels with the take file.
    assert load_take(save_take(tmp_path / "best.npz", best[0])).scores == best[0].scores


@pytest.mark.parametrize("options,words", [
    ({"takes": 3, "best_of": 2}, "best of 2 keeps from 1 to 2 takes, not 3"),
    ({"best_of": 0}, "best of must be a whole number of candidates from 1 to 64, not 0"),
    ({"best_of": 3, "seeds": [1, 2]}, "best of 3 samples 3 candidates: give 3 seeds"),
])
def test_best_of_is_checked_in_one_sentence(generator, speech, options, words):
    with pytest.raises(GenerateError, match=words):
        generator.generate(speech, settings=FEW_STEPS, **options)


def test_a_head_without_m2s_gets_takes_without_scores_and_no_best_of(generator, speech, monkeypatch):
    monkeypatch.setattr(generator, "m2s_model", lambda: None)
    assert generator.generate(speech, settings=FEW_STEPS)[0].scores == {}
    with pytest.raises(GenerateError, match="best of 2 needs the M2S model to score takes"):
        generator.generate(speech, best_of=2, settings=FEW_STEPS)


def test_damaged_scores_are_refused(generator, speech, tmp_path):
    take = generator.generate(speech, settings=FEW_STEPS)[0]
    path = save_take(tmp_path / "t.npz", take)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["scores"] = {"m2s_mel_l1": "good"}
    np.savez(tmp_path / "bad.npz", meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(TakeFileError, match="scores must be a JSON object of finite numbers"):
        load_take(tmp_path / "bad.npz")


def test_the_lips_of_a_take_at_any_rate_become_its_length_of_sound(generator, m2s, speech):
    take = generator.generate(speech, settings=FEW_STEPS, fps=30)[0]
    samples = take_lips_audio(m2s, take)
    assert len(samples) == 83 * SAMPLES_PER_FRAME   # 3.3 s at 25 fps: 83 frames
    assert np.isfinite(samples).all() and 0.5 < np.abs(samples).max() <= 0.9
    with pytest.raises(TakeFileError, match="the M2S model hears the head"):
        take_lips_audio(m2s, dataclasses.replace(take, head={"name": "x", "identity": "x:1"}))


def test_generate_best_of_from_the_command_line(tiny_model, speech, tmp_path, capsys):
    status = thunder(["generate", str(speech), "--out", str(tmp_path / "takes"), "--takes", "2", "--best-of", "3",
                      "--seed", "7", "--steps", "2", "--checkpoint", str(tiny_model), "--device", "cpu", "--quiet"])
    out = capsys.readouterr().out.split()
    assert status == 0 and len(out) == 2
    takes = [load_take(p) for p in out]
    assert [p.split("/")[-1].split(".")[1] for p in out] == ["take1", "take2"]
    assert {t.seed for t in takes} <= {7, 8, 9} and takes[0].scores["m2s_mel_l1"] <= takes[1].scores["m2s_mel_l1"]
    assert out[0].endswith(f"hello.take1.seed{takes[0].seed}.npz")
    status = thunder(["generate", str(speech), "--out", str(tmp_path / "more"), "--takes", "3", "--best-of", "2",
                      "--checkpoint", str(tiny_model)])
    err = capsys.readouterr().err
    assert status == 2 and "best of 2 keeps from 1 to 2 takes, not 3" in err and "Traceback" not in err


def test_the_service_keeps_the_best_and_listens_to_a_take(tiny_model, speech, tmp_path):
    process = start_service("--checkpoint", tiny_model, "--device", "cpu")
    client = Client(process.stdin, process.stdout)
    try:
        assert client.event()["event"] == "ready"
        result = client.until(client.send("generate", audio=str(speech), takes=2, best_of=3, seed=1,
                                          settings=FEW_STEPS, out=str(tmp_path / "takes")), timeout=120)[0]
        assert result["event"] == "result", result
        kept = result["takes"]
        assert [t["take"] for t in kept] == [1, 2] and kept[0]["scores"]["m2s_mel_l1"] <= kept[1]["scores"]["m2s_mel_l1"]
        assert all(load_take(t["path"]).seed == t["seed"] for t in kept)

        wav = tmp_path / "lips.wav"
        heard = client.until(client.send("listen", take=kept[0]["path"], out=str(wav)), final=("listen", "error"),
                             timeout=120)[0]
        assert heard["event"] == "listen" and heard["file"] == str(wav), heard
        samples, rate = soundfile.read(wav)
        assert rate == 16000 and len(samples) == 83 * SAMPLES_PER_FRAME and abs(heard["seconds"] - 3.32) < 1e-9
        again = client.until(client.send("listen", take=kept[0]["path"], out=str(wav)), final=("listen", "error"))[0]
        assert again["event"] == "error" and "already exists" in again["message"]
        missing = client.until(client.send("listen"), final=("listen", "error"))[0]
        assert missing["code"] == "bad_request" and "needs 'take'" in missing["message"]
        for fields, words in (({"take": str(tmp_path)}, "is not a file"),
                              ({"take": str(tmp_path / "none.npz")}, "does not exist"),
                              ({"take": kept[0]["path"], "out": str(speech) + "/x.wav"}, "out folder")):
            refused = client.until(client.send("listen", **fields), final=("listen", "error"))[0]
            assert refused["code"] == "input" and words in refused["message"], refused
        beside = client.until(client.send("listen", take=kept[1]["path"]), final=("listen", "error"), timeout=120)[0]
        assert beside["file"] == kept[1]["path"][: -len(".npz")] + ".lips.wav", beside
    finally:
        process.stdin.close()
        process.wait(60)
