"""An independent numpy implementation of FLAME's forward model, to check backend.lbs against.

Written differently on purpose: Rodrigues from axis and angle, the chain with explicit 4x4 matrices
and a translate-back, and skinning as a sum over joints, all in float64.
"""

import numpy as np


def rotation(axis_angle):
    angle = np.linalg.norm(axis_angle)
    if angle < 1e-12:
        return np.eye(3)
    k = axis_angle / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * np.outer(k, k)


def homogeneous(r, t):
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, t
    return m


def flame_forward(model, coefficients, pose):
    """model: dict of FLAME arrays (v_template, shapedirs (V,3,K), posedirs (V,3,36), J_regressor,
    weights, parents); coefficients (K,); pose (15,). Returns vertices (V, 3)."""
    v = model["v_template"] + np.tensordot(model["shapedirs"], coefficients, axes=([2], [0]))
    joints = model["J_regressor"] @ v
    rotations = [rotation(pose[3 * j: 3 * j + 3]) for j in range(len(joints))]
    features = np.concatenate([(r - np.eye(3)).ravel() for r in rotations[1:]])
    v = v + np.tensordot(model["posedirs"], features, axes=([2], [0]))
    world = []
    for j, parent in enumerate(model["parents"]):
        offset = joints[j] if parent < 0 else joints[j] - joints[parent]
        local = homogeneous(rotations[j], offset)
        world.append(local if parent < 0 else world[parent] @ local)
    out = np.zeros_like(v)
    for j, g in enumerate(world):
        skin = g @ homogeneous(np.eye(3), -joints[j])
        moved = v @ skin[:3, :3].T + skin[:3, 3]
        out += model["weights"][:, j:j + 1] * moved
    return out
