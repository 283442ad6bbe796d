"""What the live view draws on a frame (OpenCV): top-k labels or detection boxes and the cut.

Pure drawing on a copy: :func:`draw_overlay` never touches the agent's frame. Text sits
in a dark band at the top left; boxes are drawn where the result puts them (normalised
coordinates when every value is <= 1.5, else pixels of the frame the model saw, scaled
to the drawn frame with ``model_size``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
BAND_BGR = (32, 32, 32)
TEXT_BGR = (255, 255, 255)
BAR_BGR = (80, 200, 80)
BOX_BGR = (0, 200, 255)


def scale_to_width(image: np.ndarray, max_width_px: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= max_width_px:
        return image
    return cv2.resize(image, (max_width_px, max(1, round(h * max_width_px / w))), interpolation=cv2.INTER_AREA)


def overlay_lines(payload: dict, cut: str, path: str, latency_ms: Optional[float]) -> list[str]:
    """The text lines of the band: the cut and path, then one line per label (pure)."""
    head = f"cut {cut} | {path}" + (f" | {latency_ms:.0f} ms" if latency_ms is not None else "")
    lines = [head]
    if "error" in payload:
        lines.append(f"error: {payload['error']}"[:60])
    for entry in (payload.get("top_k") or [])[:5]:
        lines.append(f"{entry.get('label', entry.get('index'))}  {float(entry.get('score', 0.0)):.2f}")
    return lines


def _box_scale(boxes: Sequence[Sequence[float]], size: tuple[int, int],
               model_size: Optional[tuple[int, int]]) -> tuple[float, float]:
    w, h = size
    if boxes and max(max(b) for b in boxes) <= 1.5:
        return float(w), float(h)
    if model_size is not None:
        return w / model_size[0], h / model_size[1]
    return 1.0, 1.0


def draw_overlay(image: np.ndarray, payload: dict, *, cut: str, path: str, latency_ms: Optional[float] = None,
                 model_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A copy of ``image`` (BGR) with the result drawn on it."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(0.6, w / 640 * 0.6))
    line_h = int(26 * scale / 0.6)
    detections = payload.get("detections") or []
    boxes = [d.get("box_xyxy", [0, 0, 0, 0]) for d in detections]
    # "source_px": the edge already mapped boxes to this frame's pixels (issue 12)
    sx, sy = (1.0, 1.0) if payload.get("box_units") == "source_px" else _box_scale(boxes, (w, h), model_size)
    for det, (x1, y1, x2, y2) in zip(detections, boxes):
        p1, p2 = (int(x1 * sx), int(y1 * sy)), (int(x2 * sx), int(y2 * sy))
        cv2.rectangle(out, p1, p2, BOX_BGR, 2)
        cv2.putText(out, f"{det.get('label', det.get('index'))} {float(det.get('score', 0)):.2f}",
                    (p1[0] + 2, max(line_h, p1[1] - 4)), FONT, scale, BOX_BGR, 1, cv2.LINE_AA)
    lines = overlay_lines(payload, cut, path, latency_ms)
    band_w = min(w, int(max(len(t) for t in lines) * 11 * scale / 0.6) + 12)
    band = out[: line_h * len(lines) + 8, :band_w]
    band[:] = (band * 0.35 + np.array(BAND_BGR) * 0.65).astype(np.uint8)
    top = payload.get("top_k") or []
    for i, text in enumerate(lines):
        y = line_h * (i + 1)
        if i >= 1 and i - 1 < len(top) and "error" not in payload:
            bar = int((band_w - 12) * min(1.0, max(0.0, float(top[i - 1].get("score", 0.0)))))
            cv2.rectangle(out, (6, y + 1), (6 + bar, y + 3), BAR_BGR, -1)  # a score bar under the label
        cv2.putText(out, text, (8, y - 2), FONT, scale, TEXT_BGR, 1, cv2.LINE_AA)
    return out


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} frame as JPEG")
    return buf.tobytes()
