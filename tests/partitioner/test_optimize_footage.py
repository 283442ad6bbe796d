"""Same-camera footage for ``optimize`` (issue 17): a video's early stretch trains, a later disjoint one judges."""
from __future__ import annotations

import numpy as np
import pytest

from partitioner import calibration
from partitioner.optimize.sources import input_spec, load_source, same_camera_footage


@pytest.fixture(scope="module")
def spec():  # noqa: ANN201 - bundle_pb2.InputSpec
    return input_spec(load_source("mobilenet_v2"))


def test_same_camera_split_takes_disjoint_stretches_of_one_video(spec) -> None:  # noqa: ANN001
    video = calibration.default_calibration_path()  # bikes.mp4, 250 frames
    footage = same_camera_footage(spec, video, train_fraction=0.6, gap_fraction=0.1, heldout_frames=20)
    assert footage.train.shape == (150, 3, 224, 224)
    assert footage.train_sources == (f"{video} frames 0-149",)
    assert footage.heldout.evaluation_sources == (f"{video} frames 175-249 (same camera, 20 spread evenly)",)
    assert len(footage.heldout.evaluation) == len(footage.heldout.evaluation_bgr) == 20
    all_frames = calibration.read_frames(video).frames
    expected_first = calibration.preprocess_frames([all_frames[0]], spec)[0]
    np.testing.assert_array_equal(footage.train[0].numpy(), expected_first[0])
    assert footage.validation.shape == (25, 3, 224, 224)  # the skipped stretch 150-174 validates
    assert footage.validation_sources == (f"{video} frames 150-174",)
    np.testing.assert_array_equal(footage.validation[0].numpy(),
                                  calibration.preprocess_frames([all_frames[150]], spec)[0][0])
    assert np.array_equal(footage.heldout.evaluation_bgr[0], all_frames[175])
    assert np.array_equal(footage.heldout.evaluation_bgr[-1], all_frames[249])
    train = footage.train.numpy()
    for feed in footage.heldout.evaluation:  # no held-out frame is a training frame
        x = next(iter(feed.values()))
        assert not any(np.array_equal(x[0], t) for t in train)


@pytest.mark.parametrize(("train_fraction", "gap_fraction"), [(0.0, 0.1), (0.9, 0.1), (0.6, -0.1), (1.2, 0.0)])
def test_same_camera_split_rejects_fractions_leaving_nothing(spec, train_fraction: float,  # noqa: ANN001
                                                              gap_fraction: float) -> None:
    with pytest.raises(ValueError, match=rf"train_fraction {train_fraction!r} and gap_fraction {gap_fraction!r}"):
        same_camera_footage(spec, calibration.default_calibration_path(), train_fraction=train_fraction,
                            gap_fraction=gap_fraction)
