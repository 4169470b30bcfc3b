"""The shipped model (backend/models/thunder) as a new user meets it: it loads for the built-in head with nothing
downloaded, stays under 50 MB, and `thunder generate` with the defaults writes deterministic takes at the
scene's frame rate for several files in one call, and `thunder serve` serves it by default."""

import json
import math
from pathlib import Path

import numpy as np
import soundfile
import torch

from backend.cli import main
from backend.head import load_head
from backend.models import SHIPPED_THUNDER
from backend.take_file import load_take
from backend.thunder_model import load_model

SHIPPED = SHIPPED_THUNDER


def _speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Syllable-rate bursts of a harmonic tone: enough to exercise the whole path."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None)
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    return (0.3 * envelope * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


def test_the_shipped_model_loads_for_the_builtin_head_and_is_small():
    torch.set_num_threads(1)
    head = load_head("builtin")
    model = load_model(SHIPPED, head)
    config = json.loads((SHIPPED / "config.json").read_text())
    assert config["head"]["identity"] == head.identity
    assert len(config["motion_stats"]["mean"]) == head.n_expression + 12
    # The default is the row the real-speech ablation chose (docs/results.md, "Real voices, fifth round"):
    # frozen Whisper tiny.en, trained on the real-sounding corpus, its last stages with the M2S loss (w_m2s 0.1)
    # and an M2S retrained on that corpus (runs/v2/m2s; not the inference M2S shipped beside it).
    assert config["encoder"]["kind"] == "whisper" and not config["encoder"]["store_weights"]
    assert config["train"]["w_m2s"] == 0.1 and config["train"]["lip_gap_weight"] == 0.02
    assert sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file()) < 50e6
    assert set(model.emotions) >= {"neutral", "happy", "sad", "angry", "surprised"}


def test_generate_with_the_defaults_is_deterministic_at_the_scene_frame_rate(tmp_path):
    wav, mp3 = tmp_path / "line1.wav", tmp_path / "line2.mp3"
    soundfile.write(wav, _speechlike(2.0, 16000, 0), 16000)
    soundfile.write(mp3, np.stack([_speechlike(1.5, 8000, 1)] * 2, axis=1), 8000, format="MP3")
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["generate", str(wav), str(mp3), "--out", str(out), "--takes", "2", "--seed", "3",
                     "--fps", "30", "--steps", "4", "--threads", "1"]) == 0
        runs.append(sorted(out.glob("*.npz")))
    assert [p.name for p in runs[0]] == ["line1.take1.seed3.npz", "line1.take2.seed4.npz",
                                         "line2.take1.seed3.npz", "line2.take2.seed4.npz"]
    for first, second in zip(*runs):
        a, b = load_take(first), load_take(second)
        assert a.fps == 30 and a.model["name"] == "thunder"
        for name in ("expression", "jaw", "neck", "eyes"):
            assert np.array_equal(a.parts()[name], b.parts()[name])
    line1 = load_take(runs[0][0])
    assert line1.n_frames == math.ceil(2.0 * 30)
    other_seed = load_take(runs[0][1])
    assert not np.allclose(line1.parts()["neck"], other_seed.parts()["neck"])


def test_the_service_serves_the_shipped_model_by_default(tmp_path):
    """`thunder serve` with no options: the shipped model answers, matches the command line take for take,
    cancels a long generate between steps, and refuses a text file named .wav while staying up."""
    from test_serve import TIMEOUT, Client, start_service

    wav = tmp_path / "line1.wav"
    soundfile.write(wav, _speechlike(2.0, 16000, 0), 16000)
    assert main(["generate", str(wav), "--out", str(tmp_path / "cli"), "--takes", "2", "--seed", "3",
                 "--fps", "30", "--steps", "4", "--threads", "1"]) == 0
    process = start_service(stderr=open(tmp_path / "stderr.txt", "w"))
    client = Client(process.stdin, process.stdout)
    try:
        assert client.event()["event"] == "ready"
        assert client.ask("load")["event"] == "loaded"
        hello = client.ask("hello")
        assert Path(hello["model"]["path"]).resolve() == SHIPPED and hello["head"]["name"] == "thunder-builtin-v1"
        result = client.ask("generate", audio=str(wav), takes=2, seed=3, fps=30, settings={"steps": 4},
                            out=str(tmp_path / "service"))
        assert result["event"] == "result", result
        for k in (1, 2):
            name = f"line1.take{k}.seed{2 + k}.npz"
            a, b = load_take(tmp_path / "cli" / name), load_take(tmp_path / "service" / name)
            assert all(np.array_equal(a.parts()[p], b.parts()[p]) for p in ("expression", "jaw", "neck", "eyes"))
        request = client.send("generate", audio=str(wav), settings={"steps": 1000})
        client.until(request, final=("sampling",), timeout=TIMEOUT)
        assert client.ask("cancel", target=request)["running"] is True
        assert client.until(request)[0]["event"] == "cancelled"
        text = tmp_path / "notes.wav"
        text.write_text("not audio at all\n")
        error = client.ask("generate", audio=str(text))
        assert error["event"] == "error" and "notes.wav" in error["message"]
        assert client.ask("hello")["event"] == "hello"
    finally:
        process.stdin.close()
        process.wait(TIMEOUT)
