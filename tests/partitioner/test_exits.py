"""Early exits (issue 16 part 2): threshold calibration tables, deterministic distillation with
the shared trainer, and a real bundle (the tiny edge bundle) gaining a calibrated exit that
meets its target on held-out frames of other videos."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from partitioner import samples
from partitioner.exit_stage import ExitOptions, add_exits
from partitioner.exits import (build_objectness_exit, calibrate_threshold,
                               classifier_confidence, fit_classifier_exit, fit_objectness_exit, run_onnx)
from partitioner.training import TrainConfig
from protos.bundle import Side, read_bundle
from protos.errors import ManifestError
from protos.exits import exit_of, exits_of, validate_exit
from tests.edge_agent.edge_bundle import write_tiny_bundle


@pytest.mark.parametrize("confidence, agrees, target, want_threshold, want_rate, want_agreement", [
    # every frame agrees: everything exits at the lowest confidence
    ([0.9, 0.5, 0.7], [1, 1, 1], 0.9, 0.5, 1.0, 1.0),
    # the least confident frame disagrees: it stays
    ([0.9, 0.5, 0.7], [1, 0, 1], 0.9, 0.7, 2 / 3, 1.0),
    # 3 of the 4 most confident agree (0.75 >= 0.75): all four exit
    ([0.95, 0.9, 0.8, 0.6], [1, 0, 1, 1], 0.75, 0.6, 1.0, 0.75),
    # ties exit together: 0.8 appears twice, one of them wrong -> only 0.9 exits at target 1.0
    ([0.9, 0.8, 0.8, 0.3], [1, 1, 0, 1], 1.0, 0.9, 0.25, 1.0),
    # nothing reaches the target: threshold 1.0, nobody exits
    ([0.9, 0.8], [0, 0], 0.5, 1.0, 0.0, 1.0),
])
def test_calibration_table(confidence, agrees, target, want_threshold, want_rate, want_agreement) -> None:
    cal = calibrate_threshold(np.array(confidence), np.array(agrees, dtype=bool), target=target)
    assert cal.threshold == pytest.approx(want_threshold)
    assert cal.exit_rate == pytest.approx(want_rate)
    assert cal.agreement == pytest.approx(want_agreement)
    assert cal.frames == len(confidence)


def test_calibration_respects_min_exits_and_rejects_bad_input() -> None:
    cal = calibrate_threshold(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 0], dtype=bool), target=1.0, min_exits=2)
    assert cal.threshold == 1.0 and cal.exit_rate == 0.0
    with pytest.raises(ValueError, match="one agreement per confidence"):
        calibrate_threshold(np.array([0.5]), np.array([True, False]), target=0.9)
    with pytest.raises(ValueError, match="target 1.5"):
        calibrate_threshold(np.array([0.5]), np.array([True]), target=1.5)


def _toy_activations(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Activations [n, 6, 4, 4] and a teacher whose logits are a fixed linear map of their means."""
    rng = np.random.default_rng(seed)
    act = rng.gamma(2.0, 1.0, (n, 6, 4, 4)).astype(np.float32)
    mix = np.random.default_rng(99).normal(0, 2.0, (6, 5)).astype(np.float32)
    return act, act.mean(axis=(2, 3)) @ mix


def test_exit_training_is_deterministic_with_a_seed() -> None:
    a_train, t_train = _toy_activations(0, 96)
    a_held, t_held = _toy_activations(1, 48)
    config = TrainConfig(seed=3, max_epochs=5, progress=False)
    fits = [fit_classifier_exit(a_train, t_train, a_held, t_held, config, input_name="act", output_name="logits",
                                probabilities=False) for _ in range(2)]
    w = [onnx.numpy_helper.to_array(next(i for i in f.model.graph.initializer if i.name == "exit_weight"))
         for f in fits]
    np.testing.assert_array_equal(w[0], w[1])
    other = fit_classifier_exit(a_train, t_train, a_held, t_held, TrainConfig(seed=4, max_epochs=5, progress=False),
                                input_name="act", output_name="logits", probabilities=False)
    w_other = onnx.numpy_helper.to_array(next(i for i in other.model.graph.initializer if i.name == "exit_weight"))
    assert not np.array_equal(w[0], w_other)
    assert fits[0].report.heldout_loss < fits[0].report.loss_history[0]  # it learned something


def test_classifier_exit_learns_the_teacher_and_its_threshold_holds_on_held_out_frames() -> None:
    a_train, t_train = _toy_activations(0, 256)
    a_cal, t_cal = _toy_activations(1, 128)
    fit = fit_classifier_exit(a_train, t_train, a_cal, t_cal, TrainConfig(seed=0, max_epochs=60, learning_rate=1e-2,
                              progress=False), input_name="act", output_name="logits", probabilities=False)
    scores = np.concatenate([o[0] for o in run_onnx(fit.model, [{"act": a_cal[i:i + 1]} for i in range(128)])])
    agrees = scores.argmax(1) == t_cal.argmax(1)
    assert agrees.mean() > 0.7  # pooling + linear can express this teacher
    cal = calibrate_threshold(classifier_confidence(scores, probabilities=False), agrees, target=0.95)
    exiting = classifier_confidence(scores, probabilities=False) >= cal.threshold
    assert exiting.sum() >= 5 and agrees[exiting].mean() >= 0.95
    assert cal.agreement == pytest.approx(agrees[exiting].mean())


def test_objectness_exit_separates_empty_from_busy_activations() -> None:
    rng = np.random.default_rng(0)

    def frames(n: int) -> tuple[np.ndarray, np.ndarray]:
        act = rng.normal(0, 0.3, (n, 4, 6, 6)).astype(np.float32)
        busy = rng.random(n) < 0.5
        for i in np.flatnonzero(busy):  # an "object": a bright blob in channel 2
            y, x = rng.integers(0, 5, 2)
            act[i, 2, y:y + 2, x:x + 2] += 3.0
        return act, busy.astype(np.float32)

    (a_tr, t_tr), (a_ho, t_ho) = frames(160), frames(80)
    fit = fit_objectness_exit(a_tr, t_tr, a_ho, t_ho, TrainConfig(seed=0, max_epochs=40, learning_rate=1e-2,
                              progress=False), input_name="act")
    prob = np.array([o[0].item() for o in run_onnx(fit.model, [{"act": a_ho[i:i + 1]} for i in range(80)])])
    assert ((prob > 0.5) == (t_ho > 0.5)).mean() > 0.9
    with pytest.raises(ValueError, match="expected NCHW"):
        build_objectness_exit({}, input_name="x", input_shape=[1, 4])


def test_add_exits_to_a_real_bundle_meets_its_target_on_held_out_videos(tmp_path) -> None:
    bundle = write_tiny_bundle(tmp_path / "tiny")
    options = ExitOptions(train_sources=(str(samples.video_path("bikes.mp4")),),
                          heldout_sources=(str(samples.video_path("carphone_pristine.mp4")),),
                          train_frames=120, heldout_frames=100, target=0.95, max_epochs=40, seed=0)
    copy = tmp_path / "copy"
    shutil.copytree(bundle.root, copy)
    updated = add_exits(bundle.root, ["conv1", "conv2"], options)  # conv2 travels as uint8 codes
    again = read_bundle(updated.root, Side.ALL)  # hashes and the content hash hold
    spec = exit_of(again, "conv1")
    assert spec is not None and spec.kind == "classifier" and spec.outputs == ("logits",)
    cut = again.cut("conv1").early_exit
    assert cut.heldout_frames == 100 and cut.exit_agreement >= 0.95 and cut.exit_rate * 100 >= options.min_exits
    assert cut.target == 0.95 and cut.train_frames == 120 and cut.exit_ms > 0
    assert list(exits_of(again)) == ["conv1", "conv2"]
    conv2 = again.cut("conv2").early_exit
    assert conv2.exit_agreement >= 0.95 and conv2.exit_rate * 100 >= options.min_exits
    # the same seed on a fresh copy gives the same exit file
    other = add_exits(copy, ["conv1", "conv2"], options)
    assert other.cut("conv1").exit_head.sha256 == again.cut("conv1").exit_head.sha256


def test_add_exits_names_bad_cuts_and_the_manifest_check_names_fields(tmp_path) -> None:
    bundle = write_tiny_bundle(tmp_path / "tiny")
    with pytest.raises(ValueError, match=r"cannot add exits at \['output', 'nope'\].*\['conv1', 'conv2'\]"):
        add_exits(bundle.root, ["output", "nope"], ExitOptions(target=0.9))
    cut = type(bundle.cut("conv1"))()
    cut.CopyFrom(bundle.cut("conv1"))
    cut.early_exit.kind = "magic"
    with pytest.raises(ManifestError, match="exit_head"):
        validate_exit(cut)
    cut.exit_head.path = "edge/exits/conv1.onnx"
    with pytest.raises(ManifestError, match="'magic' is not one of"):
        validate_exit(cut)
    cut.early_exit.kind, cut.early_exit.threshold = "classifier", 1.5
    with pytest.raises(ManifestError, match="threshold: 1.5 is not in"):
        validate_exit(cut)


def test_exit_stage_command_adds_an_exit_and_names_what_is_missing(tmp_path, capsys) -> None:
    from partitioner.exit_stage import main

    bundle = write_tiny_bundle(tmp_path / "tiny")
    code = main([str(bundle.root), "--exits", "conv1", "--exit-train-source", str(samples.video_path("bikes.mp4")),
                 "--exit-heldout", str(samples.video_path("carphone_pristine.mp4")), "--exit-frames", "60",
                 "--exit-target", "0.95", "--exit-epochs", "10"])
    assert code == 0
    assert "exit at conv1: classifier exit: threshold" in capsys.readouterr().out
    assert exit_of(read_bundle(bundle.root, Side.ALL), "conv1") is not None
    assert main([str(bundle.root), "--exits", "nope", "--exit-target", "0.9"]) == 2
    assert "cannot add exits at ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(bundle.root)])
