"""partitioner.optimize: pruning, low-rank factorization (PyTorch and ONNX), distillation, the gated
step loop and its lineage — on the real MobileNetV2, real footage and tiny inline models."""
from __future__ import annotations

import copy
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from partitioner import samples
from partitioner.fidelity import Gate
from partitioner.optimize import measure
from partitioner.optimize.cli import main as optimize_main
from partitioner.optimize.distill import distill
from partitioner.optimize.lowrank import factorize_layer, factorize_model
from partitioner.optimize.lowrank_onnx import factorize_onnx
from partitioner.optimize.prune import prune_channels
from partitioner.optimize.run import Source, export, optimize
from partitioner.optimize.sources import BUILTIN_MODELS, gather_footage
from partitioner.optimize.steps import Distill, LowRank, Plan, Prune
from partitioner.pipeline import run_partition
from partitioner.training import TrainConfig
from partitioner.training import frames_tensor
from protos import bundle as bundle_io
from protos import bundle_pb2
from protos.lineage import METADATA_KEY, lineage_of
from protos.preprocess import preprocess_bgr
from tests.partitioner.test_pipeline import tiny_config, tiny_model

SHAPE = (1, 3, 224, 224)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def mobilenet() -> tuple[torch.nn.Module, onnx.ModelProto]:
    build, _ = BUILTIN_MODELS["mobilenet_v2"]
    module = build()
    return module, export(module, SHAPE)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    spec = bundle_pb2.InputSpec(width_px=224, height_px=224, layout="NCHW", color_order="RGB", resize_shorter_px=256,
                                pixel_scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return frames_tensor(samples.video_path("bikes.mp4"), count=4, size_hw=(224, 224), stride=40,
                         preprocess=lambda f: preprocess_bgr(f, spec))


# --------------------------------------------------------------------------- pruning


@pytest.mark.slow
@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_pruning_really_removes_channels_and_keeps_a_valid_graph(mobilenet, photos, importance: str) -> None:
    original, original_onnx = mobilenet
    module = BUILTIN_MODELS["mobilenet_v2"][0]()
    prune_channels(module, torch.zeros(SHAPE), Prune(0.3, importance=importance), photos)
    pruned = export(module, SHAPE)
    onnx.checker.check_model(pruned, full_check=True)
    x = photos[:2].numpy()
    assert _run(pruned, x).shape == _run(original_onnx, x).shape == (2, 1000)
    assert measure.count_parameters(pruned) < 0.8 * measure.count_parameters(original_onnx)
    assert measure.count_macs(pruned) < 0.8 * measure.count_macs(original_onnx)
    widths = {n.name: numpy_helper.to_array(t).shape[0] for n in pruned.graph.node if n.op_type == "Conv"
              for t in pruned.graph.initializer if t.name == n.input[1]}
    assert max(widths.values()) < 1280 and all(w % 8 == 0 for w in widths.values())  # round_to=8
    assert module.classifier[1].out_features == 1000  # the output layer keeps its classes


@pytest.mark.slow
def test_per_layer_ratio_overrides_and_unknown_layers(mobilenet) -> None:
    module = BUILTIN_MODELS["mobilenet_v2"][0]()
    prune_channels(module, torch.zeros(SHAPE), Prune(0.1, layer_ratios=(("features.18.0", 0.5),)))
    assert module.features[18][0].out_channels == 640
    with pytest.raises(ValueError, match=r"layer\(s\) 'features.99' not in the model"):
        prune_channels(BUILTIN_MODELS["mobilenet_v2"][0](), torch.zeros(SHAPE),
                       Prune(0.1, layer_ratios=(("features.99", 0.5),)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ratio": 1.0}, "prune ratio 1.0 is invalid; expected a fraction in (0, 1)"),
    ({"ratio": -0.2}, "prune ratio -0.2 is invalid"),
    ({"ratio": 0.0}, "prune ratio 0.0 is invalid"),
    ({"ratio": 0.3, "scope": "everywhere"}, "prune scope 'everywhere' is invalid"),
    ({"ratio": 0.3, "importance": "random"}, "prune importance 'random' is invalid"),
    ({"ratio": 0.3, "layer_ratios": (("features.3", 1.5),)}, "prune ratio of layer 'features.3' 1.5 is invalid"),
])
def test_bad_pruning_values_are_rejected_naming_them(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Prune(**kwargs)
    assert message in str(info.value)


# --------------------------------------------------------------------------- low-rank


@pytest.mark.slow
def test_factorized_layers_reproduce_the_originals_at_full_rank(mobilenet, photos) -> None:
    original, _ = mobilenet
    torch.manual_seed(0)
    linear = original.classifier[1]  # 1280 -> 1000, full rank 1000
    x = torch.randn(3, 1280)
    pair = factorize_layer(linear, 1000)
    assert [tuple(m.weight.shape) for m in pair] == [(1000, 1280), (1000, 1000)]
    torch.testing.assert_close(pair(x), linear(x), rtol=1e-4, atol=1e-4)
    stem = original.features[0][0]  # 3x3 stride 2 conv, 3 -> 32: full rank 27
    pair = factorize_layer(stem, 27)
    torch.testing.assert_close(pair(photos), stem(photos), rtol=1e-4, atol=1e-4)
    assert pair[0].stride == stem.stride and pair[1].kernel_size == (1, 1)


@pytest.mark.slow
def test_energy_budget_picks_cheaper_ranks_and_bad_ranks_are_named(mobilenet) -> None:
    module = BUILTIN_MODELS["mobilenet_v2"][0]()
    _, ranks = factorize_model(module, LowRank(0.8))
    assert ranks and all(0 < r.rank < r.full_rank for r in ranks)
    assert all(r.rank * 2 < r.full_rank * 2 for r in ranks)
    with torch.no_grad():
        assert module(torch.zeros(SHAPE)).shape == (1, 1000)
    with pytest.raises(ValueError, match="rank 2000 of layer 'classifier.1' is above its full rank 1000"):
        factorize_model(BUILTIN_MODELS["mobilenet_v2"][0](), LowRank(ranks=(("classifier.1", 2000),)))
    with pytest.raises(ValueError, match="rank 0 of layer 'classifier.1' is invalid"):
        LowRank(ranks=(("classifier.1", 0),))
    with pytest.raises(ValueError, match=r"low-rank energy 1.5 is invalid; expected a fraction in \(0, 1\]"):
        LowRank(1.5)


def _dense_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("w_gemm", (24, 16)), ("c_gemm", (24,)), ("w_mm", (24, 12)), ("w_conv", (20, 12, 1, 1)), ("b_conv", (20,)))]
    nodes = [
        helper.make_node("Gemm", ["x", "w_gemm", "c_gemm"], ["g"], name="gemm", transB=1, alpha=0.5, beta=2.0),
        helper.make_node("MatMul", ["g", "w_mm"], ["m"], name="matmul"),
        helper.make_node("Reshape", ["m", "shape"], ["m4"], name="to_image"),
        helper.make_node("Conv", ["m4", "w_conv", "b_conv"], ["y"], name="conv1x1", strides=[1, 1]),
    ]
    inits.append(numpy_helper.from_array(np.array([2, 12, 1, 1], dtype=np.int64), "shape"))
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 20, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_onnx_graph_factorization_reproduces_at_full_rank_and_shrinks_by_energy() -> None:
    model = _dense_graph()
    x = np.random.default_rng(4).standard_normal((2, 16)).astype(np.float32)
    full, ranks = factorize_onnx(model, LowRank(ranks=(("gemm", 16), ("matmul", 12), ("conv1x1", 12))))
    assert [(r.layer, r.rank, r.full_rank) for r in ranks] == [("gemm", 16, 16), ("matmul", 12, 12),
                                                               ("conv1x1", 12, 12)]
    assert {n.op_type for n in full.graph.node} == {"MatMul", "Gemm", "Reshape", "Conv"}
    assert len(full.graph.node) == 7
    np.testing.assert_allclose(_run(full, x), _run(model, x), rtol=1e-4, atol=1e-4)
    small, ranks = factorize_onnx(model, LowRank(0.6))
    assert ranks and measure.count_macs(small) < measure.count_macs(model)
    assert {t.name for t in small.graph.initializer}.isdisjoint({r.layer.replace("gemm", "w_gemm") for r in ranks})
    with pytest.raises(ValueError, match="rank 17 of node 'gemm' is above its full rank 16"):
        factorize_onnx(model, LowRank(ranks=(("gemm", 17),)))
    with pytest.raises(ValueError, match="node 'to_image' \\(Reshape\\) cannot be factorized"):
        factorize_onnx(model, LowRank(ranks=(("to_image", 1),)))
    with pytest.raises(ValueError, match="node 'nope' is not in the graph"):
        factorize_onnx(model, LowRank(ranks=(("nope", 1),)))


# --------------------------------------------------------------------------- distillation


def _toy(seed: int, width: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, stride=2, padding=1), torch.nn.BatchNorm2d(width),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(width, 6)).eval()


@pytest.fixture(scope="module")
def small_frames() -> tuple[torch.Tensor, torch.Tensor]:
    spec = bundle_pb2.InputSpec(width_px=32, height_px=32, layout="NCHW", color_order="RGB", resize_shorter_px=36,
                                pixel_scale=1 / 255, mean=[0.5] * 3, std=[0.25] * 3)
    pre = lambda f: preprocess_bgr(f, spec)  # noqa: E731
    return (frames_tensor(samples.video_path("bikes.mp4"), count=32, size_hw=(32, 32), preprocess=pre, stride=6),
            frames_tensor(samples.video_path("bigbuckbunny.mp4"), count=8, size_hw=(32, 32), preprocess=pre, stride=9))


@pytest.mark.parametrize("feature_weight", [0.0, 0.5])
def test_distillation_converges_deterministically_for_a_seed(small_frames, feature_weight: float) -> None:
    teacher = _toy(1, 16)
    # a fresh (random) student: Adam; the default SGD is for fine-tuning a pretrained one
    settings = Distill(seconds=600, epochs=12, batch_size=8, learning_rate=1e-2, seed=5, feature_weight=feature_weight,
                       optimizer="adamw")
    runs = []
    for _ in range(2):
        student = _toy(2, 8)  # narrower: the feature loss goes through a trained adapter
        report = distill(student, teacher, *small_frames, settings, progress=False)
        runs.append((student, report))
    (a, ra), (b, rb) = runs
    assert ra.loss_history == rb.loss_history and ra.heldout_loss == rb.heldout_loss
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ra.loss_history[-1] < 0.5 * ra.loss_history[0]
    with torch.no_grad():
        agree = (a(small_frames[1]).argmax(1) == teacher(small_frames[1]).argmax(1)).float().mean()
    assert agree >= 0.5  # the held-out video (never trained on) mostly gets the teacher's answer


@pytest.mark.parametrize("optimizer, moves", [("sgd", False), ("adamw", True)])
def test_distilling_a_copy_of_the_teacher_leaves_it_as_it_is(small_frames, optimizer: str, moves: bool) -> None:
    """The loss of a perfect copy is 0 up to float noise. SGD steps in proportion to the gradient and leaves the
    copy alone; Adam normalizes every step to about the learning rate, so the noise moves every weight
    (on MobileNetV2 that cost 0.35 of held-out top-1 agreement in 45 steps): why fine-tuning uses SGD."""
    teacher = torch.nn.Sequential(_toy(1, 16), torch.nn.Dropout(0.5))  # dropout is off while distilling
    student = copy.deepcopy(teacher)
    settings = Distill(seconds=600, epochs=3, batch_size=8, learning_rate=1e-3, seed=5, optimizer=optimizer)
    distill(student, teacher, *small_frames, settings, progress=False)
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(student.parameters(), teacher.parameters()))
    assert (moved > 1e-4) is moves, moved


@pytest.mark.parametrize("feature_weight", [0.0, 0.5])
def test_augmented_distillation_validates_every_epoch_and_repeats_for_a_seed(small_frames, feature_weight: float) -> None:
    """With augmentation the teacher answers each augmented batch (deterministic for the seed); validation frames
    (here the training video's frames after the training ones) score every epoch and the best epoch's weights stay."""
    teacher = _toy(1, 16)
    validation = small_frames[0][-8:]
    settings = Distill(seconds=600, epochs=4, batch_size=8, learning_rate=1e-2, seed=5, optimizer="adamw",
                       augment=True, feature_weight=feature_weight, patience=10)
    runs = []
    for _ in range(2):
        student = _toy(2, 8)
        runs.append((student, distill(student, teacher, small_frames[0][:-8], small_frames[1], settings,
                                      progress=False, validation_frames=validation)))
    (a, ra), (b, rb) = runs
    assert ra.loss_history == rb.loss_history and len(ra.validation_history) == 5  # before training + 4 epochs
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    best = min(ra.validation_history)
    assert ra.best_epoch == ra.validation_history.index(best)
    with torch.no_grad():  # the kept weights are the best epoch's: rescoring them gives its score
        t, s = teacher(validation).log_softmax(1), a(validation).log_softmax(1)
    rescored = float((t.argmax(1) != s.argmax(1)).float().mean()) + float((t.exp() * (t - s)).sum(1).mean()) / 100
    assert rescored == pytest.approx(best, abs=1e-5)
    with pytest.raises(ValueError, match="distill patience -1 is invalid"):
        Distill(patience=-1)


def test_a_bad_optimizer_is_named() -> None:
    with pytest.raises(ValueError, match="distill optimizer 'adam' is invalid; expected 'sgd' or 'adamw'"):
        Distill(optimizer="adam")
    with pytest.raises(ValueError, match=r"optimizer 'rmsprop' must be one of \['adamw', 'sgd'\]"):
        TrainConfig(optimizer="rmsprop")


# --------------------------------------------------------------------------- the gated loop and lineage


@pytest.fixture(scope="module")
def tiny_footage():
    spec = bundle_pb2.InputSpec(width_px=32, height_px=32, layout="NCHW", color_order="RGB", resize_shorter_px=40,
                                pixel_scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                                jpeg_quality=90)
    spec.tensor.CopyFrom(bundle_pb2.TensorSpec(name="image", datatype="FP32", shape=[-1, 3, 32, 32]))
    return gather_footage(spec, train_frames=16, heldout_frames=24)


def test_onnx_only_model_gets_gated_low_rank_steps_and_lineage_reaches_the_bundle(tiny_footage,
                                                                                  tmp_path: pathlib.Path) -> None:
    source = Source(name="tiny.onnx", model=tiny_model())
    plan = Plan((LowRank(ranks=(("fc", 1),)), LowRank(ranks=(("fc", 5),))), distill=None)
    result = optimize(source, plan, tiny_footage, gate=Gate(margin=0.02, confident_at=0.8), timing_runs=3,
                      progress=False)
    crushed, full = result.steps
    assert full.kept and full.fidelity == pytest.approx(1.0)  # full rank reproduces the model
    assert not crushed.kept and crushed.fidelity < result.baseline.value - 0.02  # rank 1 of 5 fails the gate
    assert "top1_agreement" in crushed.reason
    assert result.kept == (full,)
    lineage = result.lineage
    assert lineage.source_sha256 == source.sha256 and lineage.source_model == "tiny.onnx"
    assert [(s.kind, s.kept) for s in lineage.steps] == [("lowrank", False), ("lowrank", True)]
    assert lineage.heldout_sources and "bikes.mp4" not in lineage.heldout_sources
    assert lineage.train_sources == ["bikes.mp4"]
    assert {p.key for p in result.model.metadata_props} >= {METADATA_KEY}

    path = tmp_path / "tiny_optimized.onnx"
    onnx.save_model(result.model, str(path))
    run_partition(tiny_config(path, tmp_path / "bundle", fidelity_frames=8, verify_frames=2, max_cuts=2))
    manifest = bundle_io.read_bundle(tmp_path / "bundle").manifest
    assert lineage_of(manifest) == lineage


def test_pruning_needs_pytorch(tiny_footage) -> None:
    with pytest.raises(ValueError, match="'tiny.onnx' is an ONNX model without its PyTorch source"):
        optimize(Source(name="tiny.onnx", model=tiny_model()), Plan((Prune(0.2),)), tiny_footage)


def test_cli_writes_the_model_table_and_chart(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_model(), str(source))
    out = tmp_path / "out" / "tiny_lr.onnx"
    code = optimize_main([str(source), "--out", str(out), "--rank", "fc=5", "--train-frames", "8",
                          "--heldout-frames", "16", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "low-rank" in printed and "cloud-only JPEG q90 baseline" in printed
    assert out.is_file() and out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert any(p.key == METADATA_KEY for p in onnx.load(str(out)).metadata_props)


@pytest.mark.parametrize(("argv", "message"), [
    (["--prune", "1.5"], "prune ratio 1.5 is invalid"),
    (["--lowrank", "0"], "low-rank energy 0.0 is invalid"),
    (["--rank", "fc=0"], "rank 0 of layer 'fc' is invalid"),
    ([], "nothing to do"),
    (["--prune", "0.2", "--distill-seconds", "-5"], "distill seconds -5.0 is invalid"),
])
def test_cli_rejects_bad_values_naming_them(argv: list[str], message: str, tmp_path: pathlib.Path,
                                            capsys: pytest.CaptureFixture) -> None:
    assert optimize_main(["mobilenet_v2", "--out", str(tmp_path / "x.onnx"), *argv]) == 2
    assert message in capsys.readouterr().err


def _toy_classifier_on(frames: torch.Tensor):  # noqa: ANN202 - a builder
    """A builder of a small random conv net whose 6 classes split ``frames`` (its last layer points along
    the main directions of their pooled features), so that its top-1 answer varies from frame to frame."""

    def build() -> torch.nn.Module:
        torch.manual_seed(11)
        body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
        with torch.no_grad():
            features = body(frames)
            mean = features.mean(0)
            _, _, v = torch.linalg.svd(features - mean, full_matrices=False)
            head = torch.nn.Linear(16, 6)
            directions = torch.cat([v[:3], -v[:3]]) / (features - mean).std()
            head.weight.copy_(directions)
            head.bias.copy_(-directions @ mean)
        return torch.nn.Sequential(*body, head).eval()

    return build


def test_pytorch_steps_are_distilled_measured_and_gated(tiny_footage) -> None:
    spec = bundle_pb2.InputSpec()
    spec.CopyFrom(tiny_footage.spec)
    spec.tensor.name = "input"  # the name export gives a PyTorch model's input
    footage = gather_footage(spec, train_frames=16, heldout_frames=24)
    build = _toy_classifier_on(torch.cat([footage.train, footage.heldout_tensor()]))
    source = Source(name="toy", model=export(build(), (1, 3, 32, 32)), build=build, input_shape=(1, 3, 32, 32))
    plan = Plan((Prune(0.9, round_to=1), LowRank(ranks=(("8", 6),))),
                distill=Distill(seconds=120, epochs=3, batch_size=8, learning_rate=1e-3))
    gate = Gate(mode="absolute", threshold=0.99, confident_at=0.8)
    result = optimize(source, plan, footage, gate=gate, timing_runs=3, progress=False)
    pruned, factorized = result.steps
    assert pruned.params < 0.2 * result.original.params and pruned.macs < 0.2 * result.original.macs
    assert not pruned.kept and pruned.fidelity < 0.99  # 90 % of the channels: fails
    # the next step starts from the original, not from the rejected pruned model: full rank reproduces it
    assert factorized.kept and factorized.fidelity == pytest.approx(1.0)
    assert factorized.params > result.original.params
    steps = result.lineage.steps
    assert (steps[0].kind, steps[0].ratio, steps[0].kept) == ("prune", pytest.approx(0.9), False)
    assert [(r.layer, r.rank, r.full_rank) for r in steps[1].ranks] == [("8", 6, 6)]
    for step in steps:  # distilled only when that did not lower held-out fidelity
        assert step.distill_seconds == 0 or (step.distill_epochs >= 1 and step.temperature == 4.0)
    assert _run(result.model, footage.heldout_tensor()[:2].numpy()).shape == (2, 6)
