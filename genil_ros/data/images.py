"""Image and joint-state decoding shared by the dataset builder (rosbags messages) and the ROS nodes
(rclpy messages): both have the same field names, so these functions take the fields, not a message type."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from genil_ros.errors import DataError

# encoding -> (channels, conversion to RGB or None)
_ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


def decode_image(encoding: str, height: int, width: int, step: int, data, *, where: str = "image",
                 is_bigendian: int = 0) -> np.ndarray:
    """A sensor_msgs/Image's fields -> (height, width, 3) uint8 RGB. ``where`` names the topic in errors."""
    import cv2

    enc = encoding.lower()
    if enc not in _ENCODINGS:
        raise DataError(f"{where}: unsupported image encoding {encoding!r} "
                        f"(supported: {', '.join(SUPPORTED_ENCODINGS)})")
    ch = _ENCODINGS[enc]
    if height <= 0 or width <= 0:
        raise DataError(f"{where}: empty image ({width}x{height})")
    row = width * ch
    step = step or row
    if isinstance(data, np.ndarray):
        buf = data.view(np.uint8).reshape(-1)
    else:
        buf = np.frombuffer(memoryview(data), dtype=np.uint8)
    if step < row or buf.size < step * (height - 1) + row:
        raise DataError(f"{where}: image data has {buf.size} bytes, expected {step * height} for "
                        f"{width}x{height} {encoding} with step {step}")
    if step == row and buf.size >= row * height:
        img = buf[: row * height].reshape(height, width, ch)
    else:
        img = np.lib.stride_tricks.as_strided(buf, shape=(height, width, ch), strides=(step, ch, 1))
    if enc == "rgb8":
        return np.ascontiguousarray(img)
    if enc == "bgr8":
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if enc == "mono8":
        return cv2.cvtColor(np.ascontiguousarray(img[..., 0]), cv2.COLOR_GRAY2RGB)
    if enc == "rgba8":
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGRA2RGB)


def check_image(encoding: str, height: int, width: int, step: int, nbytes: int, *, where: str = "image") -> None:
    """The checks of :func:`decode_image` without decoding (cheap): DataError naming ``where``."""
    enc = encoding.lower()
    if enc not in _ENCODINGS:
        raise DataError(f"{where}: unsupported image encoding {encoding!r} "
                        f"(supported: {', '.join(SUPPORTED_ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise DataError(f"{where}: empty image ({width}x{height})")
    row = width * _ENCODINGS[enc]
    step = step or row
    if step < row or nbytes < step * (height - 1) + row:
        raise DataError(f"{where}: image data has {nbytes} bytes, expected {step * height} for "
                        f"{width}x{height} {encoding} with step {step}")


def check_compressed_format(fmt: str, *, where: str = "image") -> None:
    f = fmt.lower()
    if not any(k in f for k in ("jpeg", "jpg", "png")):
        raise DataError(f"{where}: unsupported CompressedImage format {fmt!r} (supported: jpeg, png)")


def decode_compressed(fmt: str, data, *, where: str = "image") -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    import cv2

    f = fmt.lower()
    if not any(k in f for k in ("jpeg", "jpg", "png")):
        raise DataError(f"{where}: unsupported CompressedImage format {fmt!r} (supported: jpeg, png)")
    buf = np.frombuffer(memoryview(data), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise DataError(f"{where}: could not decode {fmt!r} CompressedImage ({buf.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (H, W, 3) uint8 to the configured size (area interpolation when shrinking)."""
    import cv2

    if img.shape[0] == height and img.shape[1] == width:
        return img
    shrink = img.shape[0] > height or img.shape[1] > width
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def reorder_joints(names: Sequence[str], values: Sequence[float], wanted: Sequence[str], *, where: str = "joint_states",
                   field: str = "position") -> np.ndarray:
    """Values of a JointState field reordered to ``wanted`` by joint *name* (never by index).

    Raises DataError naming the missing joint(s) and the topic.
    """
    names = list(names)
    if len(values) != len(names):
        raise DataError(f"{where}: JointState has {len(names)} names but {len(values)} {field} values")
    index = {n: i for i, n in enumerate(names)}
    missing = [j for j in wanted if j not in index]
    if missing:
        raise DataError(f"{where}: JointState is missing joint(s) {missing} (it has {names})")
    vals = np.asarray(values, dtype=np.float64)
    return vals[[index[j] for j in wanted]].astype(np.float32)


def image_from_numpy(img: np.ndarray) -> tuple[str, int, int, int, bytes]:
    """(encoding, height, width, step, data) of an RGB or mono uint8 array, for building Image messages."""
    if img.dtype != np.uint8:
        raise ValueError("image must be uint8")
    if img.ndim == 2:
        return "mono8", img.shape[0], img.shape[1], img.shape[1], np.ascontiguousarray(img).tobytes()
    if img.ndim == 3 and img.shape[2] == 3:
        return "rgb8", img.shape[0], img.shape[1], img.shape[1] * 3, np.ascontiguousarray(img).tobytes()
    raise ValueError(f"image must be (H, W) or (H, W, 3), got {img.shape}")


