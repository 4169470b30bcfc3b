"""FLAME's pose as Blender channels, in numpy alone (no bpy, no torch): pure functions, tested against backend.lbs.

The head the add-on builds is an armature whose bones sit at FLAME's rest joints with identity rest
orientation (each bone points along +Y, roll 0), and a mesh whose shape keys are the expression basis and
FLAME's 36 pose correctives. Per frame, a take then becomes:
- the expression coefficients, as shape-key values;
- the pose-corrective inputs (R - I of every joint but the root), as shape-key values;
- each bone's local rotation (the take's axis-angle, as a quaternion) and location.

Why bones get a location: FLAME regresses its joints from the expressed mesh, so an expression moves the
pivot of the jaw and eyes by a fraction of a millimetre. A bone rotating about its rest head with the offset
(R - I)(rest - expressed joint) rotates exactly about the moved joint: derivation in `bone_channels`.
Coordinates are FLAME's (y up, z forward); the armature object carries the turn into Blender's z-up world.
"""

from __future__ import annotations

import numpy as np

# Below this squared angle (rad^2) the closed forms divide by nearly zero: use their Taylor series.
_SMALL_ANGLE_SQ = 1e-6


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, R = I + a K + b K^2. axis_angle: (..., 3). Returns (..., 3, 3)."""
    axis_angle = np.asarray(axis_angle, dtype=np.float64)
    x, y, z = np.moveaxis(axis_angle, -1, 0)
    zero = np.zeros_like(x)
    cross = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*x.shape, 3, 3)
    angle_sq = (axis_angle * axis_angle).sum(-1)
    small = angle_sq < _SMALL_ANGLE_SQ
    safe_sq = np.where(small, 1.0, angle_sq)
    safe = np.sqrt(safe_sq)
    a = np.where(small, 1.0 - angle_sq / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - angle_sq / 24.0, (1.0 - np.cos(safe)) / safe_sq)
    return np.eye(3) + a[..., None, None] * cross + b[..., None, None] * (cross @ cross)


def axis_angle_to_quaternion(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle to (..., 4) unit quaternions in Blender's order (w, x, y, z)."""
    axis_angle = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(axis_angle, axis=-1)
    small = angle < 1e-6
    # sin(angle / 2) / angle, with its series near zero.
    half_sinc = np.where(small, 0.5 - angle**2 / 48.0, np.sin(angle / 2) / np.where(small, 1.0, angle))
    return np.concatenate([np.cos(angle / 2)[..., None], axis_angle * half_sinc[..., None]], axis=-1)


def pose_corrective_features(rotations: np.ndarray) -> np.ndarray:
    """The values of FLAME's pose-corrective shape keys: (R - I) of every joint but the root, flattened in the
    order joint, row, column. rotations: (T, J, 3, 3). Returns (T, (J - 1) * 9)."""
    return (rotations[:, 1:] - np.eye(3)).reshape(len(rotations), -1)


def pose_corrective_names(joint_names) -> list[str]:
    """One name per pose-corrective shape key, in `pose_corrective_features` order: pose.<joint>.<row><col>."""
    return [f"pose.{joint}.{row}{col}" for joint in joint_names[1:] for row in range(3) for col in range(3)]


def take_pose(take_parts: dict, n_joints: int = 5) -> np.ndarray:
    """A take's per-joint axis-angle, (T, J, 3), in FLAME's joint order: the root (not animated by takes: zero),
    the neck, the jaw, the left eye, the right eye."""
    frames = len(take_parts["jaw"])
    pose = np.zeros((frames, n_joints, 3))
    pose[:, 1] = take_parts["neck"]
    pose[:, 2] = take_parts["jaw"]
    pose[:, 3:5] = np.asarray(take_parts["eyes"]).reshape(frames, 2, 3)
    return pose


def bone_channels(pose: np.ndarray, expression: np.ndarray, joints: np.ndarray,
                  joint_expression_basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each bone's local location and rotation quaternion, per frame.

    pose: (T, J, 3) axis-angle per joint; expression: (T, E); joints: (J, 3) rest joints (where the bones are);
    joint_expression_basis: (J, 3, E). Returns locations (T, J, 3) and quaternions (T, J, 4), (w, x, y, z).

    With bones of identity rest orientation at B, Blender's deform matrix of bone j is P_j T(-B_j), where its
    pose matrix is P_j = P_parent T(B_j - B_parent) L_j and L_j the bone's local [R | t]. FLAME's is
    W_j T(-J_j), with J the expressed joints and W_j = W_parent [R_j | J_j - J_parent]. Setting d = B - J, the
    two agree for every bone when P_j = W_j T(d_j), which gives t_j = (R_j - I) d_j: no offset for a bone that
    does not rotate, and for one that does, the rotation about the expressed joint instead of the rest one.
    """
    expressed = joints[None] + np.einsum("jce,te->tjc", joint_expression_basis, expression)
    offset = joints[None] - expressed
    rotations = axis_angle_to_matrix(pose)
    locations = np.einsum("tjrc,tjc->tjr", rotations - np.eye(3), offset)
    return locations, axis_angle_to_quaternion(pose)
