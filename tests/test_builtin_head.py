"""The built-in head asset (backend/builtin_head/builtin_head.npz) and its generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.builtin_head import build
from backend.head import load_head

ASSET = build.DEFAULT_OUTPUT
JOINTS = 5

REQUIRED_EXPRESSIONS = (
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretchLeft", "mouthStretchRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthRollLower",
    "mouthRollUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "cheekPuff", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp",
    "browDownLeft", "browDownRight", "browOuterUpLeft", "browOuterUpRight",
)  # fmt: skip
VERTEX_SETS = (
    "lips", "lips_upper", "lips_lower", "lips_inner", "lips_outer", "lips_upper_inner", "lips_lower_inner",
    "mouth_region", "face", "upper_face", "eyes", "eye_left", "eye_right",
)  # fmt: skip
LANDMARKS = ("upper_lip_center", "lower_lip_center", "mouth_corner_left", "mouth_corner_right")
# Components that should move the mouth and little else.
MOUTH_COMPONENTS = (
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
)  # fmt: skip


@pytest.fixture(scope="module")
def head():
    with np.load(ASSET, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def model():
    return load_head("builtin")


def expression(head, name):
    """(V, 3) displacement of one expression component."""
    n_shape = int(head["n_shape"])
    return head["shapedirs"][:, :, n_shape + list(head["expression_names"]).index(name)].astype(np.float64)


def vertices_of_region(head, region_name):
    region = list(head["face_region_names"]).index(region_name)
    return np.unique(head["f"][head["face_region"] == region])


def mirror_map(vertices):
    """Index of each vertex's mirror image (x -> -x), matched by rounded position.

    Coincident vertices (the two copies of a lip-slit vertex) are paired in index order: the upper lip's
    copy with the upper lip's copy.
    """

    def key(v):
        return tuple(np.round(v * 1e6).astype(np.int64))

    at = {}
    for i, v in enumerate(vertices):
        at.setdefault(key(v), []).append(i)
    rank = {i: indices.index(i) for indices in at.values() for i in indices}
    mirrored = vertices * np.array([-1.0, 1.0, 1.0])
    result = []
    for i, v in enumerate(mirrored):
        partners = at.get(key(v), [])
        result.append(partners[rank[i]] if len(partners) > rank[i] else -1)
    return np.array(result)


# -- the file ----------------------------------------------------------------------------------------------
def test_asset_has_every_key_with_consistent_shapes_and_types(head):
    V, F = head["v_template"].shape[0], head["f"].shape[0]
    n_shape, n_expr = int(head["n_shape"]), len(head["expression_names"])
    assert 5000 <= V <= 7500 and head["v_template"].shape == (V, 3)
    assert head["f"].shape == (F, 3) and head["f"].dtype == np.int32
    assert head["f"].min() == 0 and head["f"].max() == V - 1
    assert head["shapedirs"].shape == (V, 3, n_shape + n_expr)
    assert head["posedirs"].shape == (V, 3, 36)
    assert head["J_regressor"].shape == (JOINTS, V)
    assert head["weights"].shape == (V, JOINTS)
    assert head["kintree_table"].tolist() == [[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        assert head[key].dtype == np.float32, key
        assert np.isfinite(head[key]).all(), key
    assert len(head["shape_names"]) == n_shape >= 10
    assert head["face_region"].shape == (F,) and head["face_region"].dtype == np.int32
    assert set(head["face_region_names"]) >= {"skin", "lips", "mouth_interior", "sclera", "iris"}
    assert 0 <= head["face_region"].min() and head["face_region"].max() < len(head["face_region_names"])
    assert str(head["head_name"]) == "thunder-builtin-v1"
    assert ASSET.stat().st_size < 4_000_000


def test_head_is_human_sized_and_placed_like_flame(head):
    v = head["v_template"]
    skin = np.setdiff1d(np.arange(len(v)), head["vset__eyes"])
    width = v[skin, 0].max() - v[skin, 0].min()
    assert 0.13 < width < 0.20  # ears included
    assert np.abs(v[:, 0].mean()) < 1e-6  # mirror-symmetric
    nose_tip = v[v[:, 2].argmax()]
    assert abs(nose_tip[0]) < 1e-6 and -0.03 < nose_tip[1] < 0.01  # the nose points along +z
    assert v[:, 1].max() > 0.1 and v[:, 1].min() < -0.15  # crown above, neck below


def test_mesh_is_mirror_symmetric(head):
    assert (mirror_map(head["v_template"].astype(np.float64)) >= 0).all()


# -- topology ----------------------------------------------------------------------------------------------
def connected_components(n, faces):
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, c in faces:
        for u, w in ((a, b), (b, c)):
            ru, rw = find(u), find(w)
            if ru != rw:
                parent[ru] = rw
    roots = np.array([find(i) for i in range(n)])
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


def test_mesh_is_closed_and_consistently_oriented(head):
    faces = head["f"].astype(np.int64)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, undirected_counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert (undirected_counts == 2).all(), "every edge is shared by exactly two triangles"
    _, directed_counts = np.unique(directed, axis=0, return_counts=True)
    assert (directed_counts == 1).all(), "neighbouring triangles traverse their shared edge in opposite directions"
    assert len(np.unique(faces)) == len(head["v_template"]), "no unused vertices"


def test_each_closed_part_encloses_positive_volume(head):
    vertices = head["v_template"].astype(np.float64)
    faces = head["f"].astype(np.int64)
    parts = connected_components(len(vertices), faces)
    assert len(parts) == 3  # head surface and two eyeballs
    volumes = []
    for part in parts:
        part_faces = faces[np.isin(faces[:, 0], part)]
        a, b, c = (vertices[part_faces[:, k]] for k in range(3))
        volumes.append(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)
    volumes = sorted(volumes)
    eyeball = 4.0 / 3.0 * np.pi * build.EYEBALL_RADIUS**3
    assert volumes[0] == pytest.approx(eyeball, rel=0.1) and volumes[1] == pytest.approx(eyeball, rel=0.1)
    assert 0.003 < volumes[2] < 0.007  # head and neck, in cubic metres


def test_regions_cover_the_parts(head):
    eyes = set(head["vset__eyes"].tolist())
    for name in ("sclera", "iris"):
        assert set(vertices_of_region(head, name).tolist()) <= eyes
    lips = vertices_of_region(head, "lips")
    interior = vertices_of_region(head, "mouth_interior")
    # The red lips meet the mouth bag exactly along the inner lip line: without the bag, the head has
    # FLAME's mouth hole.
    assert np.array_equal(np.intersect1d(lips, interior), np.sort(head["vset__lips_inner"]))
    bag = np.setdiff1d(interior, lips)
    assert len(np.intersect1d(bag, head["vset__face"])) == 0  # the bag is not part of the face
    z = head["v_template"][:, 2]
    slit = head["vset__lips_inner"]
    assert z[bag].max() < z[slit].max() and z[bag].mean() < z[slit].mean() - 0.01


# -- rig ---------------------------------------------------------------------------------------------------
def test_skinning_weights_are_convex_and_eyes_are_rigid(head):
    weights = head["weights"].astype(np.float64)
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert weights.min() >= 0.0
    assert np.allclose(weights[head["vset__eye_left"], 3], 1.0)
    assert np.allclose(weights[head["vset__eye_right"], 4], 1.0)
    skin = np.setdiff1d(np.arange(len(weights)), head["vset__eyes"])
    assert np.abs(weights[skin, 3:]).max() == 0.0


def test_jaw_weights_follow_the_lower_face(head):
    w = head["weights"][:, 2]
    assert w[int(head["landmark__lower_lip_center"])] > 0.95
    assert w[int(head["landmark__upper_lip_center"])] < 0.05
    for corner in ("mouth_corner_left", "mouth_corner_right"):
        assert 0.3 < w[int(head[f"landmark__{corner}"])] < 0.7
    v = head["v_template"]
    chin = np.flatnonzero((np.abs(v[:, 0]) < 0.01) & (np.abs(v[:, 1] + 0.09) < 0.01) & (v[:, 2] > 0.06))
    assert len(chin) and w[chin].min() > 0.9
    assert w[head["vset__upper_face"]].max() < 0.05
    assert w[v[:, 1] < -0.16].max() < 0.05  # the bottom of the neck stays


def test_joint_regressor_reproduces_the_designed_joints(head):
    regressor = head["J_regressor"].astype(np.float64)
    assert np.allclose(regressor.sum(axis=1), 1.0, atol=1e-5)
    joints = regressor @ head["v_template"].astype(np.float64)
    assert np.allclose(joints, build.joint_targets(), atol=1e-5)
    assert np.allclose(joints[:3, 0], 0.0, atol=1e-6)  # global, neck and jaw on the midline
    assert joints[3, 0] > 0.02 and joints[4, 0] < -0.02  # left eye on +x
    for joint, eye_set in ((3, "vset__eye_left"), (4, "vset__eye_right")):
        eye = head["v_template"][head[eye_set]]
        assert np.allclose(np.linalg.norm(eye - joints[joint], axis=1), build.EYEBALL_RADIUS, atol=1e-5)


def test_regressor_moves_joints_with_the_shape(head):
    regressor = head["J_regressor"].astype(np.float64)
    names = list(head["shape_names"])
    wider = head["shapedirs"][:, :, names.index("eye_spacing")].astype(np.float64)
    moved = regressor @ (head["v_template"] + 2.0 * wider)
    rest = regressor @ head["v_template"].astype(np.float64)
    assert moved[3, 0] - rest[3, 0] > 0.003 and rest[4, 0] - moved[4, 0] > 0.003


# -- expressions and shapes --------------------------------------------------------------------------------
def test_required_arkit_components_exist_and_move_something(head):
    names = list(head["expression_names"])
    assert len(set(names)) == len(names)
    for name in REQUIRED_EXPRESSIONS:
        assert name in names, name
    for name in names:
        largest = np.linalg.norm(expression(head, name), axis=1).max()
        assert 0.0015 < largest < 0.03, f"{name} moves at most {largest * 1000:.1f} mm"
    assert "jawOpen" not in names  # the jaw is a joint


def test_eye_components_stay_on_their_side(head):
    x = head["v_template"][:, 0]
    for name in ("eyeBlink", "eyeWide", "eyeSquint", "browDown", "browOuterUp", "cheekSquint"):
        left, right = expression(head, name + "Left"), expression(head, name + "Right")
        assert np.abs(left[x < 0]).max() == 0.0, name
        assert np.abs(right[x > 0]).max() == 0.0, name


def test_right_components_mirror_the_left_ones(head):
    mirror = mirror_map(head["v_template"].astype(np.float64))
    flip = np.array([-1.0, 1.0, 1.0])
    for name in list(head["expression_names"]):
        if name.endswith("Left"):
            left, right = expression(head, name), expression(head, name[:-4] + "Right")
            assert np.allclose(right, left[mirror] * flip, atol=2e-7), name


def test_mouth_components_move_mostly_the_mouth(head):
    bag = vertices_of_region(head, "mouth_interior")
    mouth = np.union1d(head["vset__mouth_region"], bag)
    for name in MOUTH_COMPONENTS:
        motion = np.linalg.norm(expression(head, name), axis=1)
        assert motion[mouth].sum() > 0.75 * motion.sum(), name
        assert motion[head["vset__upper_face"]].max() < 1e-4, name
    for name in ("mouthSmileLeft", "mouthStretchLeft", "mouthFrownLeft", "mouthPressLeft", "mouthLowerDownLeft"):
        motion = np.linalg.norm(expression(head, name), axis=1)
        x = head["v_template"][:, 0]
        assert motion[x > 0.005].sum() > 5.0 * motion[x < -0.005].sum(), name


def test_blink_and_upper_face_components_leave_the_mouth_alone(head):
    for name in ("eyeBlinkLeft", "browInnerUp", "browDownRight", "eyeWideLeft"):
        motion = np.linalg.norm(expression(head, name), axis=1)
        assert motion[head["vset__mouth_region"]].max() < 1e-6, name


def test_slit_copies_share_their_motion_where_the_lips_stay_closed(head):
    upper, lower = head["vset__lips_upper_inner"], head["vset__lips_lower_inner"]
    v = head["v_template"]
    # Pair the copies by position.
    order_u, order_l = np.argsort(v[upper, 0]), np.argsort(v[lower, 0])
    upper, lower = upper[order_u], lower[order_l]
    assert np.allclose(v[upper], v[lower])
    for name in ("mouthSmileLeft", "mouthLeft", "mouthPucker", "mouthStretchRight", "cheekPuff"):
        d = expression(head, name)
        assert np.allclose(d[upper], d[lower], atol=2e-4), name


def test_shape_components_are_named_and_nonzero(head):
    names = list(head["shape_names"])
    for name in ("head_width", "face_length", "nose_size", "jaw_width", "lip_fullness", "eye_spacing"):
        assert name in names
    for k in range(int(head["n_shape"])):
        assert np.abs(head["shapedirs"][:, :, k]).max() > 0.001, names[k]


def test_posedirs_hold_jaw_correctives_in_flames_layout(head):
    posedirs = head["posedirs"]
    jaw_open = build.pose_feature_index(2, 2, 1)
    assert jaw_open == 16
    assert np.abs(posedirs[:, :, jaw_open]).max() > 0.001
    used = np.flatnonzero(np.abs(posedirs).reshape(-1, 36).max(axis=0) > 0)
    assert set(used.tolist()) <= {build.pose_feature_index(1, 2, 1), jaw_open}


# -- vertex sets and landmarks -----------------------------------------------------------------------------
def test_vertex_sets_exist_and_nest(head):
    V = len(head["v_template"])
    sets = {name: head[f"vset__{name}"] for name in VERTEX_SETS}
    for name, indices in sets.items():
        assert indices.dtype == np.int32 and len(indices) > 0, name
        assert len(np.unique(indices)) == len(indices) and indices.min() >= 0 and indices.max() < V, name

    def subset(a, b):
        return np.isin(sets[a], sets[b]).all()

    assert np.array_equal(np.union1d(sets["lips_upper"], sets["lips_lower"]), np.sort(sets["lips"]))
    for inner in ("lips_inner", "lips_outer", "lips_upper_inner", "lips_lower_inner"):
        assert subset(inner, "lips"), inner
    assert subset("lips_upper_inner", "lips_upper") and subset("lips_lower_inner", "lips_lower")
    assert np.array_equal(np.union1d(sets["lips_upper_inner"], sets["lips_lower_inner"]), np.sort(sets["lips_inner"]))
    assert subset("lips", "mouth_region") and subset("mouth_region", "face") and subset("upper_face", "face")
    assert 250 <= len(sets["mouth_region"]) <= 900
    assert np.array_equal(np.union1d(sets["eye_left"], sets["eye_right"]), np.sort(sets["eyes"]))
    v = head["v_template"]
    assert (v[sets["eye_left"], 0] > 0).all() and (v[sets["eye_right"], 0] < 0).all()
    assert not np.isin(sets["eyes"], sets["face"]).any()
    assert v[sets["upper_face"], 1].min() > v[sets["mouth_region"], 1].max()


def test_landmarks_sit_on_the_lip_line(head):
    marks = {name: int(head[f"landmark__{name}"]) for name in LANDMARKS}
    v = head["v_template"]
    upper, lower = marks["upper_lip_center"], marks["lower_lip_center"]
    assert upper != lower and np.array_equal(v[upper], v[lower])  # the lips are closed at rest
    assert upper in head["vset__lips_upper_inner"] and lower in head["vset__lips_lower_inner"]
    assert abs(v[upper, 0]) < 1e-7
    left, right = marks["mouth_corner_left"], marks["mouth_corner_right"]
    for corner in (left, right):
        assert corner in head["vset__lips_upper_inner"] and corner in head["vset__lips_lower_inner"]
    assert v[left, 0] > 0.02 and v[right, 0] == -v[left, 0]


# -- behaviour through the forward model -------------------------------------------------------------------
def pose(model, jaw=0.0, **weights):
    expression = torch.zeros(1, model.n_expression)
    for name, weight in weights.items():
        expression[0, model.expression_names.index(name)] = weight
    with torch.no_grad():
        return model(expression=expression, jaw=torch.tensor([[jaw, 0.0, 0.0]]))[0].double().numpy()


def lip_gap(model, vertices):
    marks = model.landmarks
    return np.linalg.norm(vertices[marks["upper_lip_center"]] - vertices[marks["lower_lip_center"]])


def widest_lip_gap(head, vertices):
    """Largest distance between the two copies of a slit vertex."""
    upper, lower = head["vset__lips_upper_inner"], head["vset__lips_lower_inner"]
    rest = head["v_template"]
    upper, lower = upper[np.argsort(rest[upper, 0])], lower[np.argsort(rest[lower, 0])]
    return np.linalg.norm(vertices[upper] - vertices[lower], axis=1).max()


def test_jaw_opens_the_mouth_and_mouth_close_closes_it(model, head):
    assert lip_gap(model, pose(model)) == 0.0
    opened = pose(model, jaw=build.JAW_OPEN_REFERENCE)
    assert lip_gap(model, opened) > 0.015
    assert lip_gap(model, pose(model, jaw=build.JAW_OPEN_REFERENCE, mouthClose=1.0)) < 0.001
    chin = opened[model.landmarks["lower_lip_center"]] - pose(model)[model.landmarks["lower_lip_center"]]
    assert chin[1] < -0.015  # down
    for name in ("mouthLowerDownLeft", "mouthUpperUpLeft", "mouthFunnel"):
        assert widest_lip_gap(head, pose(model, **{name: 1.0})) > 0.004, name
    for name in ("mouthSmileLeft", "mouthPucker", "mouthPressLeft", "mouthRollUpper", "cheekPuff"):
        assert widest_lip_gap(head, pose(model, **{name: 1.0})) < 1e-4, name


def test_blink_closes_the_lids_over_the_eyeball(model, head):
    center, radius = build.EYE_CENTER, build.EYEBALL_RADIUS
    skin = np.setdiff1d(np.arange(model.n_vertices), head["vset__eyes"])

    def skin_behind_eyeball(vertices):
        """Skin vertices in front of the left eye that lie behind the eyeball's front surface (the aperture)."""
        p = vertices[skin]
        r2 = (p[:, 0] - center[0]) ** 2 + (p[:, 1] - center[1]) ** 2
        over_eye = (r2 < (0.8 * radius) ** 2) & (p[:, 2] > center[2])
        front = center[2] + np.sqrt(np.clip(radius**2 - r2, 0.0, None))
        return int((over_eye & (p[:, 2] < front - 1e-4)).sum())

    open_count = skin_behind_eyeball(pose(model))
    assert open_count > 20  # the aperture shows the eyeball
    assert skin_behind_eyeball(pose(model, eyeBlinkLeft=1.0)) == 0
    half = skin_behind_eyeball(pose(model, eyeBlinkLeft=0.5))
    assert 0 < half < open_count
    assert skin_behind_eyeball(pose(model, eyeBlinkRight=1.0)) == open_count


# -- the generator -----------------------------------------------------------------------------------------
def test_generator_reproduces_the_committed_asset(tmp_path, head):
    """Integers (faces, parents, indices) exactly; floats to their last bit or so. numpy's vectorised loops
    differ between CPUs (AVX2, AVX-512), and the same generator wrote a shapedirs 8e-11 m (one float32 step)
    off the committed one on an AMD EPYC machine. The committed asset, not a regenerated one, is the head
    models carry the identity of."""
    out = tmp_path / "head.npz"
    build.main([str(out)])
    with np.load(out, allow_pickle=False) as fresh:
        assert sorted(fresh.files) == sorted(head)
        for key in head:
            assert fresh[key].dtype == head[key].dtype, key
            if np.issubdtype(head[key].dtype, np.floating):
                np.testing.assert_allclose(fresh[key], head[key], rtol=1e-6, atol=1e-9, err_msg=key)
            else:
                assert np.array_equal(fresh[key], head[key]), key
