"""The corpus format: round trip, validation errors that name the clip, and skipping bad clips."""

import json

import numpy as np
import pytest

from training.corpus.errors import ClipError, CorpusError
from training.corpus.format import (Clip, ClipMeta, Segment, clip_paths, frames_for_samples, open_corpus,
                                    read_clip, write_clip, write_index)


def make_clip(clip_id="a0001", seconds=1.0, split="train", speaker="s1"):
    n = int(seconds * 16000)
    t = frames_for_samples(n)
    rng = np.random.default_rng(0)
    meta = ClipMeta(id=clip_id, head={"name": "h", "identity": "h:0"}, speaker=speaker, split=split, n_frames=t,
                    n_samples=n, emotion={"label": "happy", "intensity": 0.5}, text="bin blue",
                    words=[Segment("bin", 0.0, 0.4), Segment("blue", 0.4, seconds)],
                    phones=[Segment("B", 0.0, 0.1), Segment("IH", 0.1, 0.3), Segment("N", 0.3, 0.4),
                            Segment("B", 0.4, 0.5), Segment("L", 0.5, 0.6), Segment("UW", 0.6, seconds)])
    return Clip(meta=meta, audio=(0.1 * rng.standard_normal(n)).astype(np.float32),
                expression=rng.random((t, 7)).astype(np.float32), jaw=rng.random((t, 3)).astype(np.float32),
                neck=np.zeros((t, 3), np.float32), eyes=np.zeros((t, 6), np.float32))


def test_round_trip(tmp_path):
    clip = make_clip()
    write_clip(tmp_path, clip)
    back = read_clip(tmp_path, clip.id)
    assert back.meta.to_json() == clip.meta.to_json()
    for k, v in clip.motion().items():
        np.testing.assert_array_equal(back.motion()[k], v)
    np.testing.assert_allclose(back.audio, clip.audio, atol=1 / 32767)
    assert back.expression.shape == (25, 7) and back.meta.phones[3] == Segment("B", 0.4, 0.5)


def test_length_mismatch_names_the_clip(tmp_path):
    clip = make_clip("bad_len")
    clip.jaw = clip.jaw[:-5]
    with pytest.raises(ClipError, match="bad_len"):
        write_clip(tmp_path, clip)
    clip = make_clip("bad_len2")
    write_clip(tmp_path, clip)
    np.savez(clip_paths(tmp_path, "bad_len2")["npz"], expression=clip.expression[:20], jaw=clip.jaw[:20],
             neck=clip.neck[:20], eyes=clip.eyes[:20])
    with pytest.raises(ClipError, match=r"clip bad_len2: .*20 frames"):
        read_clip(tmp_path, "bad_len2")


def test_nan_and_missing_fields_name_the_clip(tmp_path):
    clip = make_clip("with_nan")
    write_clip(tmp_path, clip)
    expr = clip.expression.copy()
    expr[3, 2] = np.nan
    np.savez(clip_paths(tmp_path, "with_nan")["npz"], expression=expr, jaw=clip.jaw, neck=clip.neck, eyes=clip.eyes)
    with pytest.raises(ClipError, match=r"clip with_nan: motion 'expression' has NaN"):
        read_clip(tmp_path, "with_nan")
    clip = make_clip("no_split")
    write_clip(tmp_path, clip)
    path = clip_paths(tmp_path, "no_split")["json"]
    data = json.loads(path.read_text())
    del data["split"], data["emotion"]
    path.write_text(json.dumps(data))
    with pytest.raises(ClipError, match=r"clip no_split: the metadata lacks the fields emotion, split"):
        read_clip(tmp_path, "no_split")
    clip = make_clip("no_eyes")
    write_clip(tmp_path, clip)
    np.savez(clip_paths(tmp_path, "no_eyes")["npz"], expression=clip.expression, jaw=clip.jaw, neck=clip.neck)
    with pytest.raises(ClipError, match=r"clip no_eyes: the motion lacks 'eyes'"):
        read_clip(tmp_path, "no_eyes")


def test_corpus_skips_and_reports_bad_clips(tmp_path):
    good = [make_clip(f"g{i}", speaker=f"s{i}") for i in range(3)]
    bad = make_clip("broken")
    for c in good + [bad]:
        write_clip(tmp_path, c)
    clip_paths(tmp_path, "broken")["wav"].unlink()
    write_index(tmp_path, {"head": {"name": "h", "identity": "h:0"}}, [c.meta for c in good + [bad]])
    reported = []
    corpus = open_corpus(tmp_path, report=reported.append)
    assert [m.id for m in corpus.metas] == ["g0", "g1", "g2"]
    assert len(reported) == 1 and "clip broken" in str(reported[0]) and "missing" in str(reported[0])
    assert sum(1 for _ in corpus.clips()) == 3


def test_not_a_corpus(tmp_path):
    with pytest.raises(CorpusError, match="no index.json"):
        open_corpus(tmp_path)
