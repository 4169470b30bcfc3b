"""Sentences, voices, synthesis and alignment: the parts before the head."""

import numpy as np
import pytest

from training.corpus.align import align
from training.corpus.errors import AlignmentError, VoiceMissingError
from training.corpus.synth import synthesize
from training.corpus.text import GRID_SLOTS, PHONES, load_dictionary, make_sentences, phone_counts
from training.corpus.voices import VoiceConfig, check_voice, choose_voices, split_by_voice


def test_sentences_are_deterministic_and_cover_the_phones():
    a, b = make_sentences(200, seed=5), make_sentences(200, seed=5)
    assert a == b and a != make_sentences(200, seed=6)
    assert make_sentences(50, seed=5) == a[:50]  # plans grow by prefix
    kinds = {k for k, _, _ in a}
    assert kinds == {"grid", "dictionary"}
    dictionary = load_dictionary()
    for kind, spoken, text in a:
        assert spoken == text and all(w in dictionary for w in text.split())
        if kind == "grid":
            assert [w in slot for w, slot in zip(text.split(), GRID_SLOTS)] == [True] * 6
    counts = phone_counts(t for _, _, t in a)
    assert sum(1 for p in PHONES if counts[p] > 0) >= 38


def test_voice_choice_and_split_by_voice_group():
    configs = choose_voices(40, seed=1)
    assert len(configs) == 40 and len({c.id for c in configs}) == 40
    assert configs == choose_voices(40, seed=1)
    assert {c.engine for c in configs} == {"espeak-ng", "flite", "festival"}
    splits = split_by_voice(configs, seed=1)
    assert set(splits.values()) == {"train", "val", "test"}
    by_group = {}
    for c in configs:
        by_group.setdefault(c.group, set()).add(splits[c.id])
    assert all(len(s) == 1 for s in by_group.values())  # test voices are unseen in training
    for c in configs:
        assert VoiceConfig.parse(c.id) == c


def test_missing_voice_is_one_clear_sentence():
    with pytest.raises(VoiceMissingError, match="the flite voice 'nosuchvoice' is not installed"):
        check_voice(VoiceConfig.parse("flite:nosuchvoice"))


@pytest.mark.parametrize("spec", ["espeak-ng:en-us+m3@1.1,+1.0", "flite:slt@0.9,-1.0", "festival:kal_diphone"])
def test_synthesis_and_alignment(spec):
    text = "place blue at f two now"
    speech = synthesize(VoiceConfig.parse(spec), text)
    assert speech.dtype == np.float32 and speech.ndim == 1 and 0.8 < speech.size / 16000 < 4
    audio = np.concatenate([np.zeros(4000), speech, np.zeros(4000)]).astype(np.float32)
    audio += np.random.default_rng(0).normal(0, 1e-3, audio.size).astype(np.float32)
    words, phones = align(audio, text)
    assert [w.label for w in words if w.label != "<sil>"] == text.split()
    assert phones[0].start == 0.0 and abs(phones[-1].end - audio.size / 16000) < 0.011
    assert all(abs(round(p.start * 100) - p.start * 100) < 1e-6 for p in phones)  # 10 ms grid
    labels = [p.label for p in phones if p.label != "SIL"]
    assert labels[:4] == ["P", "L", "EY", "S"] and "F" in labels and "UW" in labels


def test_alignment_rejects_unknown_words():
    with pytest.raises(AlignmentError, match="qzxv"):
        align(np.zeros(16000, np.float32), "hello qzxv")
