"""Frame preprocessing exactly as a bundle's InputSpec says (numpy + OpenCV, no onnx).

Shared by the partitioner (calibration and verification frames), the edge agent
(camera frames) and the cloud server (the "input" cut decodes a JPEG and runs this).
"""
from __future__ import annotations

import numpy as np

from protos import bundle_pb2


def preprocess_bgr(frame_bgr: np.ndarray, spec: bundle_pb2.InputSpec) -> np.ndarray:
    """An HxWx3 uint8 BGR frame (OpenCV's order) -> a batch of one in the model's layout."""
    import cv2

    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(f"frame has shape {frame_bgr.shape} and dtype {frame_bgr.dtype}; expected HxWx3 uint8")
    width, height = int(spec.width_px), int(spec.height_px)
    img = frame_bgr
    if spec.resize_shorter_px:
        h, w = img.shape[:2]
        scale = spec.resize_shorter_px / min(h, w)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        img = img[top : top + height, left : left + width]
    else:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    if spec.color_order == "RGB":
        img = img[:, :, ::-1]
    x = img.astype(np.float32) * np.float32(spec.pixel_scale)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) / std
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None, ...], dtype=np.float32)


def model_sized(frame_bgr: np.ndarray, spec: bundle_pb2.InputSpec) -> np.ndarray:
    """``frame_bgr`` downscaled to the resolution :func:`preprocess_bgr` works at (never upscaled):
    what a cloud-only JPEG needs to carry. :func:`preprocess_bgr` of the result gives the model the
    same input as of the frame itself (up to the JPEG's loss): with ``resize_shorter_px`` the shorter
    side becomes exactly that and the centre crop is taken later, as before; otherwise the frame
    becomes the model's width x height, which the later resize leaves as it is."""
    import cv2

    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(f"frame has shape {frame_bgr.shape} and dtype {frame_bgr.dtype}; expected HxWx3 uint8")
    h, w = frame_bgr.shape[:2]
    width, height = int(spec.width_px), int(spec.height_px)
    if spec.resize_shorter_px:
        scale = spec.resize_shorter_px / min(h, w)
        if scale >= 1:
            return frame_bgr
        size = (max(width, round(w * scale)), max(height, round(h * scale)))
    else:
        if w <= width and h <= height:
            return frame_bgr
        size = (width, height)
    return cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA)


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> HxWx3 uint8 BGR; ValueError when the bytes are not an image."""
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{len(data)} bytes are not a decodable JPEG image")
    return img


def encode_jpeg(frame_bgr: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", frame_bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode a frame of shape {frame_bgr.shape}")
    return buf.tobytes()
