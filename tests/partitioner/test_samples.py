from __future__ import annotations

import cv2
import pytest

from partitioner import samples


def test_sample_video_decodes() -> None:
    cap = cv2.VideoCapture(str(samples.video_path("bikes.mp4")))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.ndim == 3 and frame.shape[2] == 3


def test_sample_images_and_labels() -> None:
    paths = samples.available_images()
    assert len(paths) >= 5
    assert cv2.imread(str(samples.image_path("chelsea"))).shape[2] == 3
    labels = samples.imagenet_labels()
    assert labels[281] == "tabby cat"
    assert samples.mobilenet_v2_weights_path().stat().st_size > 10_000_000


def test_unknown_sample_names_the_choices() -> None:
    with pytest.raises(samples.SampleNotFound, match="'cat'.*chelsea"):
        samples.image_path("cat")
