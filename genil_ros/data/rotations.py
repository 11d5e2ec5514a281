"""Rotations for poses in the task schema: unit quaternions, rotation matrices and the 6-D representation.

A pose entry is ``[x, y, z, r11, r21, r31, r12, r22, r32]``: the position, then the first two COLUMNS of the
rotation matrix (Zhou et al. 2019, "On the Continuity of Rotation Representations in Neural Networks"):
continuous and unique, unlike Euler angles or quaternions (q and -q are the same rotation). A predicted 6-D
rotation is turned back into a rotation by Gram-Schmidt, so any two non-parallel vectors give a valid one.

Quaternions are ``[x, y, z, w]`` (the order of geometry_msgs/Quaternion). Every function takes arrays with
any leading batch shape. Plain numpy; no ROS.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quaternion_to_matrix", "matrix_to_quaternion", "matrix_to_sixd", "sixd_to_matrix",
           "quaternion_to_sixd", "sixd_to_quaternion", "rotation_angle", "slerp_matrix"]


def quaternion_to_matrix(q) -> np.ndarray:
    """(..., 4) quaternions [x, y, z, w] (normalised here) -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    m = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(m) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions [x, y, z, w] with w >= 0.

    Shepperd's method: the largest of the four candidates is computed from the diagonal, the others from
    it, so the result is accurate for every rotation (no division by a small number)."""
    m = np.asarray(m, np.float64)
    batch = m.shape[:-2]
    r = m.reshape(-1, 3, 3)
    tr = np.trace(r, axis1=1, axis2=2)
    cand = np.stack([1 + 2 * r[:, 0, 0] - tr, 1 + 2 * r[:, 1, 1] - tr, 1 + 2 * r[:, 2, 2] - tr, 1 + tr], axis=1)
    k = np.argmax(cand, axis=1)
    s = 2 * np.sqrt(np.maximum(cand[np.arange(len(k)), k], 1e-300))[:, None]  # 4 |component k|
    d21, d02, d10 = r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]
    s01, s02, s12 = r[:, 0, 1] + r[:, 1, 0], r[:, 0, 2] + r[:, 2, 0], r[:, 1, 2] + r[:, 2, 1]
    forms = np.stack([  # [x, y, z, w] * 4 |component k|, for k = x, y, z, w
        np.stack([s[:, 0] ** 2 / 4, s01, s02, d21], axis=1),
        np.stack([s01, s[:, 0] ** 2 / 4, s12, d02], axis=1),
        np.stack([s02, s12, s[:, 0] ** 2 / 4, d10], axis=1),
        np.stack([d21, d02, d10, s[:, 0] ** 2 / 4], axis=1),
    ], axis=1)
    q = forms[np.arange(len(k)), k] / s
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 3] < 0] *= -1
    return q.reshape(batch + (4,))


def matrix_to_sixd(m) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two columns, [r11, r21, r31, r12, r22, r32]."""
    m = np.asarray(m, np.float64)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def sixd_to_matrix(d, eps: float = 1e-9) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) rotation matrices by Gram-Schmidt (the inverse of :func:`matrix_to_sixd` for
    a valid rotation; the nearest valid one for any other input). ValueError when a column is (nearly)
    zero or the two are (nearly) parallel: no rotation is defined then."""
    d = np.asarray(d, np.float64)
    a, b = d[..., 0:3], d[..., 3:6]
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(na < eps):
        raise ValueError("6-D rotation: the first column is zero")
    c1 = a / na
    b = b - np.sum(c1 * b, axis=-1, keepdims=True) * c1
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    if np.any(nb < eps):
        raise ValueError("6-D rotation: the two columns are parallel")
    c2 = b / nb
    c3 = np.cross(c1, c2)
    return np.stack([c1, c2, c3], axis=-1)


def quaternion_to_sixd(q) -> np.ndarray:
    return matrix_to_sixd(quaternion_to_matrix(q))


def sixd_to_quaternion(d) -> np.ndarray:
    return matrix_to_quaternion(sixd_to_matrix(d))


def rotation_angle(m1, m2) -> np.ndarray:
    """The angle (rad, 0..pi) of the rotation that takes ``m1`` to ``m2`` ((..., 3, 3) each)."""
    rel = np.swapaxes(np.asarray(m1, np.float64), -1, -2) @ np.asarray(m2, np.float64)
    c = (np.trace(rel, axis1=-2, axis2=-1) - 1) / 2
    return np.arccos(np.clip(c, -1.0, 1.0))


def slerp_matrix(m1, m2, t: float) -> np.ndarray:
    """The rotation a fraction ``t`` (0..1) of the way from ``m1`` to ``m2`` (one pair of (3, 3) matrices),
    along the shortest path."""
    q1, q2 = matrix_to_quaternion(m1), matrix_to_quaternion(m2)
    dot = float(np.dot(q1, q2))
    if dot < 0:
        q2, dot = -q2, -dot
    if dot > 1 - 1e-12:
        return quaternion_to_matrix(q1 + t * (q2 - q1))
    theta = np.arccos(min(dot, 1.0))
    q = (np.sin((1 - t) * theta) * q1 + np.sin(t * theta) * q2) / np.sin(theta)
    return quaternion_to_matrix(q)
