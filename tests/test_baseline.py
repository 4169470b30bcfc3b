"""The classic viseme baseline (training.baseline): layout, rest, closed lips at /p b m/, names by lookup."""

import dataclasses
import types

import numpy as np
import pytest
import torch

from backend.errors import ThunderError
from backend.head import Head
from training.baseline import BaselineError, baseline_motion, phone_viseme
from training.corpus.format import Segment
from training.metrics import lip_distance

# "a map": silence, AA, M (120 ms: three frames), AA, silence.
PHONES = [("SIL", 0.0, 0.3), ("AH0", 0.3, 0.5), ("M", 0.5, 0.62), ("AA1", 0.62, 0.9), ("SIL", 0.9, 1.4)]
N_FRAMES = 35


def lip_opening(head, motion) -> np.ndarray:
    """(T,) lip distance in metres, computing only the two lip-centre vertices."""
    lm = head.landmarks
    lips = head.subset([lm["upper_lip_center"], lm["lower_lip_center"]])
    with torch.no_grad():
        v = lips(expression=torch.from_numpy(motion["expression"]), jaw=torch.from_numpy(motion["jaw"]))
    return lip_distance(v, {"upper_lip_center": 0, "lower_lip_center": 1})


def test_the_output_has_the_corpus_motion_layout(head):
    motion = baseline_motion(PHONES, N_FRAMES, head)
    shapes = {k: v.shape for k, v in motion.items()}
    assert shapes == {"expression": (N_FRAMES, head.n_expression), "jaw": (N_FRAMES, 3),
                      "neck": (N_FRAMES, 3), "eyes": (N_FRAMES, 6)}
    assert all(v.dtype == np.float32 for v in motion.values())
    assert not motion["neck"].any() and not motion["eyes"].any()
    assert not motion["jaw"][:, 1:].any()  # the jaw only opens (rotation about +x)
    assert motion["jaw"][:, 0].max() > 0.1


def test_silence_is_the_rest_pose(head):
    motion = baseline_motion(PHONES, N_FRAMES, head)
    # Frames further than the smoothing's reach (3 sigma = 5 frames) from speech are exactly at rest.
    for frame in (*range(0, 2), *range(29, N_FRAMES)):
        assert not motion["expression"][frame].any() and not motion["jaw"][frame].any(), frame
    silent = baseline_motion([("SIL", 0.0, 1.0), ("+SPN+", 1.0, 1.2)], 30, head)
    assert not any(v.any() for v in silent.values())
    assert not baseline_motion([], 10, head)["jaw"].any()


def test_the_lips_close_during_a_bilabial_and_open_on_vowels(head):
    opening = lip_opening(head, baseline_motion(PHONES, N_FRAMES, head))
    m_frames = [13, 14, 15]  # times 0.52, 0.56, 0.60 s
    vowel_frames = [9, 18, 20]
    assert opening[m_frames].max() < 0.0005
    assert opening[vowel_frames].min() > 0.008
    # Segment objects and stress digits give the same motion.
    segments = [Segment(label.rstrip("01"), start, end) for label, start, end in PHONES]
    again = baseline_motion(segments, N_FRAMES, head)
    assert np.array_equal(again["jaw"], baseline_motion(PHONES, N_FRAMES, head)["jaw"])


def test_a_bilabial_shorter_than_a_frame_still_shows(head):
    phones = [("AA", 0.0, 0.41), ("P", 0.41, 0.43), ("AA", 0.43, 0.8)]  # no frame time in [0.41, 0.43)
    opening = lip_opening(head, baseline_motion(phones, 20, head))
    assert opening[10] < 0.0005 and opening[5] > 0.008


def test_expressions_are_looked_up_by_name(head):
    reversed_head = types.SimpleNamespace(expression_names=head.expression_names[::-1])
    flipped = baseline_motion(PHONES, N_FRAMES, reversed_head)
    normal = baseline_motion(PHONES, N_FRAMES, head)
    assert np.array_equal(flipped["expression"], normal["expression"][:, ::-1])


def test_a_head_without_the_arkit_names_gives_one_clear_sentence(head):
    names = [f"exp{i:03d}" for i in range(head.n_expression)]
    unnamed = Head(dataclasses.replace(head.data, expression_names=names))
    with pytest.raises(BaselineError) as caught:
        baseline_motion(PHONES, N_FRAMES, unnamed)
    assert isinstance(caught.value, ThunderError)
    message = str(caught.value)
    assert "mouthPressLeft" in message and "mouthPucker" in message
    assert message.count(".") == 0 and "\n" not in message


def test_unknown_phones_are_refused_and_silences_are_rest():
    assert phone_viseme("sil") is None and phone_viseme("+NSN+") is None
    assert phone_viseme("b") == phone_viseme("M") == "MBP"
    assert phone_viseme("ow1") == "O"
    with pytest.raises(BaselineError, match="'XX'"):
        phone_viseme("XX")
