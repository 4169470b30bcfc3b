"""Vertex sets derived from FLAME's topology (backend.head_regions), checked on a FLAME-like mesh.

FLAME's mouth is a hole whose boundary is the inner lip line. The built-in head without its mouth
cavity has exactly that topology, and it knows its own lip sets: the derived sets must agree.
"""

import dataclasses

import pytest

from backend.errors import HeadFileError
from backend.flame_file import load_head_file
from backend.head import BUILTIN_HEAD_PATH, Head
from backend.head_regions import boundary_loops, derive_regions


@pytest.fixture(scope="module")
def open_mouth_head():
    data = load_head_file(BUILTIN_HEAD_PATH)
    cavity = data.face_region_names.index("mouth_interior")
    faces = data.faces[data.face_region != cavity]
    return data, faces


def test_the_builtin_head_is_closed_but_the_flame_like_one_has_a_mouth_hole(open_mouth_head):
    data, faces = open_mouth_head
    assert boundary_loops(data.faces) == []
    loops = boundary_loops(faces)
    assert len(loops) == 1
    assert set(loops[0].tolist()) == set(data.vertex_sets["lips_inner"].tolist())


def test_derived_lip_line_and_landmarks_match_the_builtin_names(open_mouth_head):
    data, faces = open_mouth_head
    sets, landmarks = derive_regions(data.v_template, faces, data.weights)
    assert landmarks == data.landmarks
    for name in ("lips_inner", "lips_upper_inner", "lips_lower_inner", "eye_left", "eye_right"):
        assert set(sets[name].tolist()) == set(data.vertex_sets[name].tolist()), name


def test_derived_regions_are_nested_and_plausible(open_mouth_head):
    data, faces = open_mouth_head
    sets, landmarks = derive_regions(data.v_template, faces, data.weights)
    as_set = {k: set(v.tolist()) for k, v in sets.items()}
    assert as_set["lips_inner"] <= as_set["lips"] <= as_set["mouth_region"]
    assert as_set["lips_upper"] | as_set["lips_lower"] == as_set["lips"]
    assert as_set["lips_outer"] <= as_set["lips"]
    assert as_set["upper_face"] <= as_set["face"]
    assert not as_set["upper_face"] & as_set["lips"]
    assert as_set["eyes"].isdisjoint(as_set["face"])
    v = data.v_template
    assert v[sets["lips_upper"], 1].mean() > v[sets["lips_lower"], 1].mean()
    assert v[landmarks["mouth_corner_left"], 0] > 0 > v[landmarks["mouth_corner_right"], 0]
    # Against the head's own hand-made lips: most of each is in the other.
    own = set(data.vertex_sets["lips"].tolist())
    overlap = len(own & as_set["lips"])
    assert overlap > 0.6 * len(own) and overlap > 0.6 * len(as_set["lips"])


def test_a_head_without_vertex_sets_derives_them_on_first_use(open_mouth_head):
    data, faces = open_mouth_head
    bare = dataclasses.replace(data, faces=faces, face_region=None, face_region_names=None,
                               vertex_sets={}, landmarks={})
    head = Head(bare)
    assert head.landmarks["upper_lip_center"] in head.vertex_sets["lips_upper_inner"]


def test_a_closed_mouth_cannot_be_found():
    data = load_head_file(BUILTIN_HEAD_PATH)
    with pytest.raises(HeadFileError, match="cannot find the mouth opening"):
        derive_regions(data.v_template, data.faces, data.weights)
