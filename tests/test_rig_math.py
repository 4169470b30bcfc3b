"""The add-on's numpy rig maths against the backend's torch FLAME layer (the Blender rig itself is tested in
tests/test_blender_addon.py)."""

import numpy as np
import torch

from backend import lbs
from thunder_blender import rig_math


def quaternion_to_matrix(q):
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(*w.shape, 3, 3)


def test_rotations_and_correctives_equal_the_backend():
    rng = np.random.default_rng(0)
    pose = np.concatenate([rng.normal(0, 0.4, (6, 5, 3)), np.zeros((1, 5, 3)), np.full((1, 5, 3), 1e-5)])
    matrices = rig_math.axis_angle_to_matrix(pose)
    expected = lbs.axis_angle_to_matrix(torch.from_numpy(pose.reshape(-1, 3))).numpy().reshape(matrices.shape)
    np.testing.assert_allclose(matrices, expected, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(rig_math.axis_angle_to_quaternion(pose)), matrices, atol=1e-12)
    np.testing.assert_allclose(rig_math.pose_corrective_features(matrices),
                               lbs.pose_corrective_features(torch.from_numpy(matrices)).numpy(), atol=1e-12)
    names = rig_math.pose_corrective_names(["global", "neck", "jaw", "eye_left", "eye_right"])
    assert len(names) == 36 and names[0] == "pose.neck.00" and names[-1] == "pose.eye_right.22"


def test_bone_channels_rotate_about_the_expressed_joints(head):
    """Emulate Blender's pose chain (bones of identity rest orientation at the rest joints) with the channels,
    and compare its skinning transforms with FLAME's, whose joints the expression has moved."""
    rng = np.random.default_rng(1)
    data = head.data
    joints = data.joint_regressor @ data.v_template
    # The built-in head's expressions do not move its joints; a FLAME file's do, by a fraction of a millimetre.
    joint_basis = rng.normal(0, 3e-4, (5, 3, head.n_expression))
    expression = rng.normal(0, 1.5, (3, head.n_expression))
    pose = rng.normal(0, 0.3, (3, 5, 3))
    pose[:, 0] = 0.0
    locations, quaternions = rig_math.bone_channels(pose, expression, joints, joint_basis)
    assert np.abs(locations).max() > 1e-7  # the expression really moves the pivots

    def translation(t):
        m = np.eye(4)
        m[:3, 3] = t
        return m

    expressed = joints + np.einsum("jce,te->tjc", joint_basis, expression)
    _, flame = lbs.rigid_transform_chain(torch.from_numpy(rig_math.axis_angle_to_matrix(pose)),
                                         torch.from_numpy(expressed), torch.as_tensor(data.parents))
    for t in range(3):
        pose_matrices = []
        for j, parent in enumerate(data.parents):
            local = translation(locations[t, j])
            local[:3, :3] = quaternion_to_matrix(quaternions[t, j])
            rest_to_parent = translation(joints[j] - (joints[parent] if parent >= 0 else 0.0))
            pose_matrices.append((pose_matrices[parent] if parent >= 0 else np.eye(4)) @ rest_to_parent @ local)
            deform = pose_matrices[j] @ translation(-joints[j])
            np.testing.assert_allclose(deform, flame[t, j].numpy(), rtol=0, atol=1e-7)  # float32 data
