"""`thunder eval --audio`, the real-speech mode, end to end: a tiny folder of synthetic speech (flite and
espeak-ng) with transcripts beside the audio and in a transcripts.tsv, aligned with pocketsphinx (a word
outside its dictionary spelled by flite), the shipped model with 2 takes against the phoneme baseline; the
printed table, the JSON report, the alignment cache, and one sentence for each kind of bad folder.

The metric functions themselves are tested on signals with known answers in tests/test_metrics.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from backend.audio import write_wav
from backend.models import SHIPPED_THUNDER
from backend.cli import main as thunder
from training.corpus.synth import synthesize
from training.corpus.voices import VoiceConfig

SHIPPED = str(SHIPPED_THUNDER)
SENTENCES = {"bob": ("flite:kal16", "Bob bought a big map, and the zorblax man made me laugh."),
             "maps": ("espeak-ng:en-us+m3", "My father's pub has a bad lamp by the palm tree.")}


@pytest.fixture(scope="module")
def speech_folder(tmp_path_factory):
    """top/bob.wav + bob.txt, and top/more/maps.flac with its text in more/transcripts.tsv."""
    top = tmp_path_factory.mktemp("speech") / "top"
    (top / "more").mkdir(parents=True)
    audio = {name: synthesize(VoiceConfig.parse(voice), text) for name, (voice, text) in SENTENCES.items()}
    write_wav(top / "bob.wav", audio["bob"])
    (top / "bob.txt").write_text(SENTENCES["bob"][1] + "\n")
    soundfile.write(top / "more" / "maps.flac", audio["maps"], 16000)
    (top / "more" / "transcripts.tsv").write_text(f"id\ttext\nmaps\t{SENTENCES['maps'][1]}\n")
    return top


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thunder: error:"), lines
    return lines[0]


def test_real_speech_eval_prints_the_table_writes_the_report_and_caches_the_alignment(speech_folder, tmp_path,
                                                                                    capsys, monkeypatch):
    torch.set_num_threads(1)
    out, cache = tmp_path / "real.json", tmp_path / "cache"
    args = ["eval", f"thunder={SHIPPED}", "--audio", str(speech_folder), "--takes", "2", "--align-cache",
            str(cache), "--json", str(out), "--quiet"]
    assert thunder(args + ["--per-clip"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("2 clips (")
    for block in ("all clips", "top (1 clips", "more (1 clips", "bob (", "more/maps ("):
        assert block in printed, printed
    first_table = printed.split("\n\n")[0].splitlines()
    assert [line.split("  ")[0] for line in first_table[2:]] == ["thunder", "phoneme baseline"], printed

    result = json.loads(out.read_text())
    assert result["mode"] == "real speech" and result["clips"] == 2 and result["takes"] == 2
    assert result["bilabials"] >= 12 and result["open_vowels"] >= 6
    model, base = result["rows"]["thunder"], result["rows"]["phoneme baseline"]
    assert model["bilabials"] == 2 * result["bilabials"] and base["bilabials"] == result["bilabials"]
    for figures in (model, base):
        assert 0.0 <= figures["closure_rate"] <= 1.0 and 0.0 <= figures["never_open_fraction"] <= 1.0
        assert figures["spikes_per_s"] >= 0.0 and figures["second_diff_mm"] > 0.0
        assert -1.0 <= figures["envelope_r"] <= 1.0
    assert base["closure_rate"] == 1.0  # the baseline shuts the lips on every /p b m/ it is handed
    assert model["second_diff_vs_baseline"] == pytest.approx(model["second_diff_mm"] / base["second_diff_mm"])
    assert model["envelope_r_baseline"] == base["envelope_r"]
    assert model["upper_face_spread_mm"] > 0.0 and model["head_motion_spread_deg"] > 0.0
    assert len(model["blinks_per_min"]) == 2
    assert model["blinks_per_min_min"] <= model["blinks_per_min_max"]
    assert "upper_face_spread_mm" not in base and "blinks_per_min" not in base  # one take, no eyes
    assert set(result["groups"]) == {"top", "more"}
    assert [c["id"] for c in result["per_clip"]] == ["bob", "more/maps"]
    pooled = sum(c["rows"]["thunder"]["bilabials"] for c in result["per_clip"])
    assert pooled == model["bilabials"]
    assert len(list(cache.glob("*.json"))) == 2

    def no_aligning(*_args, **_kwargs):
        raise AssertionError("aligned again although the alignment is cached")

    monkeypatch.setattr("training.corpus.align.align", no_aligning)
    out.unlink()
    assert thunder(args) == 0
    assert json.loads(out.read_text())["rows"] == result["rows"]  # same seeds, same alignment, same figures


def test_bad_real_speech_folders_get_one_sentence(speech_folder, tmp_path, capsys):
    def run(folder) -> str:
        assert thunder(["eval", SHIPPED, "--audio", str(folder), "--takes", "1", "--steps", "1",
                        "--align-cache", "", "--quiet"]) == 2
        return _error_line(capsys)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here\n")
    assert "holds no audio files" in run(empty)
    assert "is not a folder" in run(tmp_path / "missing")

    untranscribed = tmp_path / "untranscribed"
    untranscribed.mkdir()
    (untranscribed / "a.wav").write_bytes((speech_folder / "bob.wav").read_bytes())
    line = run(untranscribed)
    assert "1 of the 1 audio files" in line and "a.wav" in line and "have no transcript" in line

    silent = tmp_path / "silent"
    silent.mkdir()
    write_wav(silent / "quiet.wav", np.zeros(16000, np.float32))
    (silent / "quiet.txt").write_text("nothing at all\n")
    line = run(silent)
    assert "quiet.wav holds no speech" in line

    numbers = tmp_path / "numbers"
    numbers.mkdir()
    (numbers / "a.wav").write_bytes((speech_folder / "bob.wav").read_bytes())
    (numbers / "a.txt").write_text("Bob bought 2 maps.\n")
    assert "the number '2'" in run(numbers)
