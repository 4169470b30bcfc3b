"""backend.lbs and backend.head.Head: the FLAME math, checked against tests/numpy_flame.py."""

import numpy as np
import pytest
import torch

from backend.errors import HeadInputError
from backend.flame_file import load_head_file
from backend.head import Head
from backend.lbs import axis_angle_to_matrix
from flame_fixtures import make_synthetic_flame, write_flame_pickle
from numpy_flame import flame_forward


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    model = make_synthetic_flame(n_verts=150, n_shape=300, n_expr=20, seed=3)
    path = write_flame_pickle(tmp_path_factory.mktemp("flame") / "generic_model.pkl", model)
    return model, Head(load_head_file(path))


def test_rodrigues_is_a_rotation_and_smooth_at_zero():
    vecs = torch.randn(64, 3, dtype=torch.float64)
    rot = axis_angle_to_matrix(vecs)
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(64, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(rot), torch.ones(64, dtype=torch.float64))
    tiny = (torch.randn(4, 3, dtype=torch.float64) * 1e-5).requires_grad_()
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (tiny,))
    zero = torch.zeros(1, 3, requires_grad=True)
    axis_angle_to_matrix(zero)[0, 1, 2].backward()
    assert torch.isfinite(zero.grad).all() and zero.grad.abs().sum() > 0  # d R / d x at 0 is the generator


def test_zero_parameters_give_the_template(synthetic):
    model, head = synthetic
    verts = head(expression=torch.zeros(3, head.n_expression))
    assert verts.shape == (3, 150, 3) and verts.dtype == torch.float32
    np.testing.assert_allclose(verts.numpy(), np.broadcast_to(model["v_template"], (3, 150, 3)), atol=1e-6)


def test_matches_the_numpy_reference_on_random_parameters(synthetic):
    model, head = synthetic
    rng = np.random.default_rng(7)
    n_frames = 5
    shape = rng.normal(size=head.n_shape)
    expression = rng.normal(size=(n_frames, head.n_expression))
    pose = rng.normal(scale=0.4, size=(n_frames, 15))
    verts = head(expression=expression, shape=shape, global_pose=pose[:, 0:3], neck=pose[:, 3:6],
                 jaw=pose[:, 6:9], eyes=pose[:, 9:15]).numpy()
    reference_model = {**model, "parents": np.array([-1, 0, 1, 1, 1])}
    for t in range(n_frames):
        expected = flame_forward(reference_model, np.concatenate([shape, expression[t]]), pose[t])
        np.testing.assert_allclose(verts[t], expected, atol=2e-6, rtol=1e-4)
        assert np.abs(expected - model["v_template"]).max() > 1e-3  # the pose really moved the mesh


def test_jaw_rotation_moves_only_jaw_weighted_vertices(synthetic):
    model, head = synthetic
    jaw = torch.tensor([[0.3, 0.05, -0.02]])
    moved = (head(jaw=jaw) - head(jaw=torch.zeros(1, 3)))[0].norm(dim=-1).numpy()
    on_jaw = model["weights"][:, 2] > 0
    assert moved[~on_jaw].max() < 1e-7
    assert moved[on_jaw].min() > 1e-5


def test_gradients_reach_every_parameter(synthetic):
    _, head = synthetic
    params = {"expression": torch.randn(4, head.n_expression), "jaw": torch.randn(4, 3) * 0.2,
              "neck": torch.randn(4, 3) * 0.2, "eyes": torch.randn(4, 6) * 0.2,
              "shape": torch.randn(head.n_shape), "global_pose": torch.zeros(4, 3),
              "translation": torch.zeros(4, 3)}
    for p in params.values():
        p.requires_grad_()
    verts = head(**params)
    (verts * torch.randn_like(verts)).sum().backward()
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_fewer_expression_components_are_padded_with_zeros(synthetic):
    _, head = synthetic
    expr = torch.randn(2, 5)
    full = torch.nn.functional.pad(expr, (0, head.n_expression - 5))
    assert torch.equal(head(expression=expr), head(expression=full))


@pytest.mark.parametrize("kwargs, words", [
    ({"expression": torch.zeros(2, 999)}, "expression must have shape (frames, up to 20)"),
    ({"jaw": torch.zeros(2, 4)}, "jaw must have shape (frames, 3)"),
    ({"jaw": torch.zeros(3)}, "jaw must have shape (frames, 3)"),
    ({"expression": torch.zeros(2, 20), "jaw": torch.zeros(3, 3)}, "disagree on the number of frames"),
    ({}, "give at least one per-frame parameter"),
])
def test_wrong_parameter_shapes_give_one_sentence(synthetic, kwargs, words):
    _, head = synthetic
    with pytest.raises(HeadInputError) as info:
        head(**kwargs)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_a_vertex_subset_gives_exactly_those_vertices(synthetic):
    _, head = synthetic
    rng = np.random.default_rng(11)
    params = {"expression": rng.normal(size=(3, head.n_expression)), "shape": rng.normal(size=head.n_shape),
              "jaw": rng.normal(scale=0.3, size=(3, 3)), "neck": rng.normal(scale=0.3, size=(3, 3)),
              "eyes": rng.normal(scale=0.3, size=(3, 6))}
    indices = np.array([5, 17, 3, 99, 140])
    part = head.subset(indices)
    assert part.v_template.shape == (5, 3) and part.n_vertices == head.n_vertices
    torch.testing.assert_close(part(**params), head(**params)[:, indices], atol=1e-6, rtol=1e-5)
