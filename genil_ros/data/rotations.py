"""Rotations for pose entries: unit quaternion <-> rotation matrix <-> the 6-D representation.

A pose is fed to the policy as ``[x, y, z]`` plus the 6-D rotation representation (Zhou et al., "On the
Continuity of Rotation Representations in Neural Networks", 2019): the first two columns of the rotation
matrix, ``[r11, r21, r31, r12, r22, r32]``. It is continuous and unique (a quaternion has two signs, Euler
angles wrap), so nearby orientations are nearby vectors. A predicted 6-D vector is turned back into a
rotation by Gram-Schmidt (:func:`matrix_from_rot6d`), which accepts any two non-parallel 3-vectors.

Quaternions are ``(x, y, z, w)`` as in ``geometry_msgs/Quaternion``. All functions work on arrays with
any leading batch shape; pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quat_to_matrix", "matrix_to_quat", "rot6d_from_matrix", "matrix_from_rot6d", "quat_to_rot6d",
           "rot6d_to_quat", "normalize_quat", "QUAT_NORM_TOLERANCE"]

# |‖q‖ - 1| up to this is rounding or a sloppy publisher and is normalised away; beyond it the quaternion
# is not a rotation (e.g. all zeros: an orientation never set) and is rejected.
QUAT_NORM_TOLERANCE = 0.01


def normalize_quat(q, tolerance: float = QUAT_NORM_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """(unit quaternions, ok): ``q`` (..., 4) divided by its norm; ``ok`` is False where the norm is
    further than ``tolerance`` from 1 or not finite (those rows are returned as NaN)."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    ok = np.isfinite(n[..., 0]) & (np.abs(n[..., 0] - 1.0) <= tolerance)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(ok[..., None], q / np.where(n == 0, 1.0, n), np.nan)
    return unit, ok


def quat_to_matrix(q) -> np.ndarray:
    """Unit quaternions (..., 4) ``(x, y, z, w)`` -> rotation matrices (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    m = np.empty(q.shape[:-1] + (3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - z * w)
    m[..., 0, 2] = 2 * (x * z + y * w)
    m[..., 1, 0] = 2 * (x * y + z * w)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - x * w)
    m[..., 2, 0] = 2 * (x * z - y * w)
    m[..., 2, 1] = 2 * (y * z + x * w)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def matrix_to_quat(m) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) ``(x, y, z, w)`` with ``w >= 0``
    (Shepperd's method: the numerically largest of the four candidates per matrix)."""
    m = np.asarray(m, dtype=np.float64)
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = np.stack([
        np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1],
                  1 + tr], -1),
        np.stack([1 + 2 * m[..., 0, 0] - tr, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0],
                  m[..., 2, 1] - m[..., 1, 2]], -1),
        np.stack([m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - tr, m[..., 1, 2] + m[..., 2, 1],
                  m[..., 0, 2] - m[..., 2, 0]], -1),
        np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * m[..., 2, 2] - tr,
                  m[..., 1, 0] - m[..., 0, 1]], -1),
    ], -2)  # (..., 4 candidates, 4): each is 4 * q_k * q for the largest component k
    diag = np.stack([1 + tr, 1 + 2 * m[..., 0, 0] - tr, 1 + 2 * m[..., 1, 1] - tr, 1 + 2 * m[..., 2, 2] - tr], -1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def rot6d_from_matrix(m) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> the 6-D representation (..., 6): column 1 then column 2."""
    m = np.asarray(m, dtype=np.float64)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def matrix_from_rot6d(r, eps: float = 1e-9) -> np.ndarray:
    """The 6-D representation (..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt: the first column
    is ``a / |a|``, the second ``b`` minus its part along the first, normalised, the third their cross
    product. ValueError when a row's two vectors are (nearly) zero or parallel."""
    r = np.asarray(r, dtype=np.float64)
    a, b = r[..., 0:3], r[..., 3:6]
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    c1 = a / np.maximum(na, eps)
    b_perp = b - np.sum(c1 * b, axis=-1, keepdims=True) * c1
    nb = np.linalg.norm(b_perp, axis=-1, keepdims=True)
    if np.any(na <= eps) or np.any(nb <= eps) or not np.all(np.isfinite(r)):
        raise ValueError("6-D rotation with a zero, parallel or non-finite pair of columns is not a rotation")
    c2 = b_perp / nb
    c3 = np.cross(c1, c2)
    return np.stack([c1, c2, c3], axis=-1)


def quat_to_rot6d(q) -> np.ndarray:
    """Unit quaternions (..., 4) ``(x, y, z, w)`` -> 6-D rotations (..., 6)."""
    return rot6d_from_matrix(quat_to_matrix(q))


def rot6d_to_quat(r) -> np.ndarray:
    """6-D rotations (..., 6), any scale (Gram-Schmidt) -> unit quaternions (..., 4) ``(x, y, z, w)``."""
    return matrix_to_quat(matrix_from_rot6d(r))
