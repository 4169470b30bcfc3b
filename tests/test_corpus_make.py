"""`thunder corpus make` end to end: a tiny corpus that validates, closes the lips on /p b m/, resumes, and
fails with one clear sentence on bad input while keeping what it wrote."""

import os
import subprocess
import sys

import numpy as np
import pytest

from backend.head import load_head
from training.corpus.format import open_corpus
from training.corpus.stats import clip_lip_distance, corpus_stats
from training.metrics import bilabial_closures

VOICES = ["--voice", "espeak-ng:en-us+m3@1.05,+1.0", "--voice", "flite:slt@0.95,-1.0", "--voice",
          "festival:kal_diphone@1.0,+0.0"]


def thunder(*args, env=None):
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    result = thunder("corpus", "make", str(out), "--clips", "4", "--seed", "2", *VOICES, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def test_tiny_corpus_validates(tiny):
    out, result = tiny
    assert "made 4 clips" in result.stdout
    check = thunder("corpus", "validate", str(out))
    assert check.returncode == 0 and "4 clips valid" in check.stdout and "0 bad clips" in check.stdout
    corpus = open_corpus(out)
    assert len(corpus.metas) == 4
    for m in corpus.metas:
        assert m.phones and m.text and m.voice["engine"] in ("espeak-ng", "flite", "festival")
        assert m.emotion["label"] in ("neutral", "happy", "sad", "angry", "surprised")
    stats = corpus_stats(corpus)
    assert stats["phones_covered"] >= 15 and stats["total_hours"] > 0


def test_tiny_corpus_closes_the_lips(tiny):
    out, _ = tiny
    head = load_head("builtin")
    corpus = open_corpus(out)
    closed, peak = [], []
    for clip in corpus.clips():
        d = clip_lip_distance(head, clip)
        closed.append(bilabial_closures(d, clip.meta.phones))
        peak.append(np.percentile(d, 95))
    closed = np.concatenate(closed)
    assert closed.size >= 3
    assert closed.mean() >= 0.95
    assert min(peak) > 0.004  # the mouth really opens (over 4 mm) somewhere in every clip


def test_second_run_writes_nothing_new(tiny):
    out, _ = tiny
    before = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    again = thunder("corpus", "make", str(out), "--clips", "4", "--seed", "2", *VOICES, "--quiet")
    assert again.returncode == 0 and "4 already written, 0 to make" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == before


def test_missing_engine_is_one_sentence_and_keeps_clips(tiny, tmp_path):
    out, _ = tiny
    before = sorted(p.name for p in (out / "clips").iterdir())
    env = dict(os.environ, PATH=str(tmp_path))  # no espeak-ng, flite or festival here
    result = thunder("corpus", "make", str(out), "--clips", "6", "--seed", "2", *VOICES, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "espeak-ng is not installed" in lines[0]
    assert sorted(p.name for p in (out / "clips").iterdir()) == before


def test_missing_voice_and_unwritable_folder(tmp_path):
    result = thunder("corpus", "make", str(tmp_path / "c"), "--voice", "flite:nosuchvoice")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "the flite voice 'nosuchvoice' is not installed" in result.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = thunder("corpus", "make", str(blocker / "corpus"), "--clips", "1", *VOICES[:2])
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot write the corpus folder" in result.stderr


def test_render_a_clip_to_video_with_its_audio(tiny, tmp_path):
    out, _ = tiny
    clip = open_corpus(out).metas[0]
    video = tmp_path / "clip.mp4"
    result = thunder("corpus", "render", str(out), clip.id, str(video), "--resolution", "96", "--keep-frames")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,nb_frames",
                            "-of", "csv=p=0", str(video)], capture_output=True, text=True, timeout=60)
    streams = probe.stdout.split()
    assert any(s.startswith("video") for s in streams) and any(s.startswith("audio") for s in streams), streams
    frames = int(next(s for s in streams if s.startswith("video")).split(",")[1])
    assert abs(frames - clip.n_frames) <= 1
