"""FLAME's forward model as pure functions.

Each step is a small function whose docstring gives the tensor shapes; `lbs` composes them in the order
FLAME defines. Nothing here holds state: `backend.head.Head` keeps the buffers and calls `lbs`.

Shapes use B for the batch (frames), V vertices, J joints, K blendshape components.
"""

from __future__ import annotations

import torch

# Below this squared angle (rad^2), Rodrigues' coefficients use their Taylor series: the closed forms
# divide by the angle, and both their values and their gradients lose precision near zero.
_SMALL_ANGLE_SQ = 1e-6


def blend_shapes(coefficients: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Linear blendshape offsets.

    coefficients: (B, K); directions: (V, 3, K). Returns offsets (B, V, 3).
    """
    return torch.einsum("bk,vck->bvc", coefficients, directions)


def vertices_to_joints(joint_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joint locations as weighted sums of vertices.

    joint_regressor: (J, V); vertices: (B, V, 3). Returns joints (B, J, 3).
    """
    return torch.einsum("jv,bvc->bjc", joint_regressor, vertices)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, R = I + a K + b K^2 with K the cross-product matrix of the axis-angle vector,
    a = sin(t)/t and b = (1 - cos(t))/t^2; exact and differentiable at t = 0.

    axis_angle: (N, 3). Returns rotation matrices (N, 3, 3).
    """
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)

    angle_sq = (axis_angle * axis_angle).sum(-1)
    small = angle_sq < _SMALL_ANGLE_SQ
    # Evaluate the closed forms on a safe angle, so the branch not taken cannot produce NaN gradients.
    safe_angle_sq = torch.where(small, torch.ones_like(angle_sq), angle_sq)
    safe_angle = safe_angle_sq.sqrt()
    a = torch.where(small, 1.0 - angle_sq / 6.0, torch.sin(safe_angle) / safe_angle)
    b = torch.where(small, 0.5 - angle_sq / 24.0, (1.0 - torch.cos(safe_angle)) / safe_angle_sq)

    identity = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return identity + a[:, None, None] * cross + b[:, None, None] * (cross @ cross)


def pose_corrective_features(rotations: torch.Tensor) -> torch.Tensor:
    """The inputs of FLAME's pose-corrective blendshapes: (R - I) of every joint but the root, flattened.

    rotations: (B, J, 3, 3). Returns (B, (J - 1) * 9), ordered joint, row, column.
    """
    identity = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - identity).flatten(1)


def rigid_transform_chain(
    rotations: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose a kinematic chain.

    rotations: (B, J, 3, 3), each joint's rotation relative to its parent; joints: (B, J, 3), rest
    positions; parents: (J,) parent index of each joint, -1 for the root, every parent before its child.
    Returns posed joint positions (B, J, 3), and (B, J, 4, 4) transforms that carry a rest-pose point
    skinned to that joint to its posed position.
    """
    batch, n_joints = joints.shape[:2]
    relative_joints = joints.clone()
    relative_joints[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]

    local = torch.zeros(batch, n_joints, 4, 4, dtype=rotations.dtype, device=rotations.device)
    local[..., :3, :3] = rotations
    local[..., :3, 3] = relative_joints
    local[..., 3, 3] = 1.0

    world = [local[:, 0]]
    for j in range(1, n_joints):
        world.append(world[int(parents[j])] @ local[:, j])
    world = torch.stack(world, dim=1)

    posed_joints = world[..., :3, 3]
    # Remove each joint's rest position, so the transform applies to rest-pose vertices directly.
    rest_offset = (world[..., :3, :3] @ joints.unsqueeze(-1)).squeeze(-1)
    skinning = world.clone()
    skinning[..., :3, 3] = world[..., :3, 3] - rest_offset
    return posed_joints, skinning


def skin_vertices(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning.

    vertices: (B, V, 3) rest-pose vertices; weights: (V, J); transforms: (B, J, 4, 4) from
    `rigid_transform_chain`. Returns posed vertices (B, V, 3).
    """
    blended = torch.einsum("vj,bjrc->bvrc", weights, transforms)
    return (blended[..., :3, :3] @ vertices.unsqueeze(-1)).squeeze(-1) + blended[..., :3, 3]


def lbs(
    coefficients: torch.Tensor,
    pose: torch.Tensor,
    v_template: torch.Tensor,
    blend_directions: torch.Tensor,
    pose_directions: torch.Tensor,
    joint_template: torch.Tensor,
    joint_directions: torch.Tensor,
    parents: torch.Tensor,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAME's forward model.

    coefficients: (B, K) shape and expression coefficients, in the order of blend_directions (V, 3, K);
    pose: (B, J * 3) axis-angle per joint; v_template: (V, 3); pose_directions: ((J - 1) * 9, V * 3);
    joint_template: (J, 3) and joint_directions: (J, 3, K), the joint regressor applied to the template and
    to the blend directions (`vertices_to_joints`); parents: (J,); weights: (V, J).
    Returns vertices (B, V, 3) and posed joints (B, J, 3).

    FLAME regresses joints from the shaped mesh. Regression and blendshapes are both linear, so regressing
    the template and the directions once gives the same joints, and lets the vertices be any subset of the
    mesh (only the lips, say) without changing the result.
    """
    batch = coefficients.shape[0]
    n_joints = joint_template.shape[0]

    # 1. Shape and expression blendshapes on the template.
    v_shaped = v_template + blend_shapes(coefficients, blend_directions)
    # 2. Joints of the shaped (not yet posed) mesh, so identity moves the joints.
    rest_joints = joint_template + blend_shapes(coefficients, joint_directions)
    # 3. Pose-corrective blendshapes, driven by the joint rotations.
    rotations = axis_angle_to_matrix(pose.reshape(-1, 3)).reshape(batch, n_joints, 3, 3)
    corrective = (pose_corrective_features(rotations) @ pose_directions).reshape(batch, -1, 3)
    v_posed = v_shaped + corrective
    # 4. Pose the kinematic chain and skin.
    posed_joints, transforms = rigid_transform_chain(rotations, rest_joints, parents)
    return skin_vertices(v_posed, weights, transforms), posed_joints
