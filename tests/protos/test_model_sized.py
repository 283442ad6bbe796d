"""The cloud-only JPEG's frame: downscaled to what the model uses, never upscaled, same model input."""
from __future__ import annotations

import numpy as np
import pytest

from partitioner import samples
from protos import bundle_pb2
from protos.preprocess import model_sized, preprocess_bgr


def _spec(width: int, height: int, shorter: int = 0) -> bundle_pb2.InputSpec:
    spec = bundle_pb2.InputSpec(width_px=width, height_px=height, resize_shorter_px=shorter, color_order="RGB",
                                layout="NCHW", pixel_scale=1 / 255)
    spec.mean.extend([0.485, 0.456, 0.406])
    spec.std.extend([0.229, 0.224, 0.225])
    return spec


def _frame(h: int, w: int) -> np.ndarray:
    import cv2

    image = cv2.imread(str(samples.image_path("grace_hopper")))
    assert image is not None
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("frame_hw, spec, sent_hw", [
    ((576, 768), _spec(300, 300), (300, 300)),            # plain resize: exactly the model's size
    ((720, 1280), _spec(224, 224, 256), (256, 455)),      # shorter side -> 256, aspect kept, crop later
    ((480, 640), _spec(224, 224, 256), (256, 341)),
    ((200, 160), _spec(224, 224, 256), (200, 160)),       # smaller than the model needs: as it is
    ((120, 160), _spec(300, 300), (120, 160)),
    ((200, 400), _spec(300, 300), (300, 300)),            # one side larger: the model's size, as preprocessing does
])
def test_sizes(frame_hw, spec, sent_hw) -> None:
    assert model_sized(_frame(*frame_hw), spec).shape == (*sent_hw, 3)


@pytest.mark.parametrize("frame_hw, spec", [((576, 768), _spec(300, 300)), ((720, 1280), _spec(224, 224, 256))])
def test_the_model_sees_the_same_input(frame_hw, spec) -> None:
    frame = _frame(*frame_hw)
    direct, via = preprocess_bgr(frame, spec), preprocess_bgr(model_sized(frame, spec), spec)
    assert via.shape == direct.shape
    np.testing.assert_allclose(via, direct, atol=1e-5)


def test_bad_frame_is_named() -> None:
    with pytest.raises(ValueError, match=r"frame has shape \(4, 4\) and dtype uint8; expected HxWx3 uint8"):
        model_sized(np.zeros((4, 4), np.uint8), _spec(300, 300))
