"""Shared, session-scoped model fixtures for the partitioner tests.

Expensive things are built once per test session: the real MobileNetV2 (ImageNet
weights) exported to ONNX under ``tmp_path_factory``, prepared copies of the onnx
package's light_* models, and real ImageNet-preprocessed sample photos. Small
topologies (a feature pyramid with four outputs, a torch export rewritten with
TensorFlow-style names and Constant-node weights) are built inline.
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from protos import bundle_pb2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLE_IMAGES = ("chelsea", "coffee", "astronaut")
LIGHT_MODELS = ("light_resnet50", "light_densenet121", "light_inception_v2")


# --------------------------------------------------------------------------- real frames


@pytest.fixture(scope="session")
def imagenet_input_spec() -> bundle_pb2.InputSpec:
    """torchvision's ImageNet evaluation preprocessing (resize 256, centre crop 224)."""
    return bundle_pb2.InputSpec(
        tensor=bundle_pb2.TensorSpec(name="input", datatype="FP32", shape=[-1, 3, 224, 224]),
        width_px=224, height_px=224, layout="NCHW", color_order="RGB", resize_shorter_px=256,
        pixel_scale=1 / 255, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), jpeg_quality=90,
    )


def load_frames(names: tuple[str, ...], spec: bundle_pb2.InputSpec) -> list[np.ndarray]:
    """Real sample photos preprocessed with ``spec``: each a (1, C, H, W) float32 batch."""
    import cv2

    from protos.preprocess import preprocess_bgr
    from partitioner import samples

    frames = []
    for name in names:
        img = cv2.imread(str(samples.image_path(name)), cv2.IMREAD_COLOR)
        assert img is not None, f"cannot read sample image {name}"
        frames.append(preprocess_bgr(img, spec))
    return frames


@pytest.fixture(scope="session")
def imagenet_frames(imagenet_input_spec: bundle_pb2.InputSpec) -> list[np.ndarray]:
    """chelsea (a cat), coffee, astronaut as (1, 3, 224, 224) ImageNet-normalised batches."""
    return load_frames(SAMPLE_IMAGES, imagenet_input_spec)


# --------------------------------------------------------------------------- MobileNetV2


@pytest.fixture(scope="session")
def mobilenet_v2_torch():
    """The torch MobileNetV2 with the shipped ImageNet weights, eval mode."""
    from partitioner.models.mobilenet_v2 import mobilenet_v2

    return mobilenet_v2()


@pytest.fixture(scope="session")
def mobilenet_v2_onnx_path(tmp_path_factory: pytest.TempPathFactory, mobilenet_v2_torch) -> pathlib.Path:
    """MobileNetV2 exported once per session (opset 17, dynamic batch)."""
    from partitioner.models import export_onnx

    path = tmp_path_factory.mktemp("mobilenet_v2") / "mobilenet_v2.onnx"
    export_onnx(mobilenet_v2_torch, path, (1, 3, 224, 224), opset=17)
    return path


@pytest.fixture(scope="session")
def mobilenet_v2_model(mobilenet_v2_onnx_path: pathlib.Path) -> onnx.ModelProto:
    from partitioner.loading import load_model

    return load_model(mobilenet_v2_onnx_path)


@pytest.fixture(scope="session")
def prepared_mobilenet_v2(mobilenet_v2_model: onnx.ModelProto) -> onnx.ModelProto:
    from partitioner.graph import prepare_model

    return prepare_model(mobilenet_v2_model)


# --------------------------------------------------------------------------- onnx light models


def light_model_path(name: str) -> pathlib.Path:
    """Path of one of the onnx package's backend test models (``light_resnet50``...)."""
    path = pathlib.Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is not shipped with this onnx version")
    return path


def perturb_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Multiply every float initializer by factors in [0.5, 1.5] (signs kept).

    The light_* models fill their weights with one constant, which makes every class
    score equal; perturbing them makes the outputs depend on where values flow, so a
    wrongly wired split cannot pass by accident.
    """
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        if tensor.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(tensor)
        if arr.size < 2:
            continue
        noisy = (arr * rng.uniform(0.5, 1.5, size=arr.shape)).astype(np.float32)
        tensor.CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    return out


@pytest.fixture(scope="session")
def prepared_light_models() -> dict[str, onnx.ModelProto]:
    """Each light_* model loaded, prepared, and with perturbed weights."""
    from partitioner.graph import prepare_model
    from partitioner.loading import load_model

    return {name: perturb_weights(prepare_model(load_model(light_model_path(name)))) for name in LIGHT_MODELS}


# --------------------------------------------------------------------------- inline topologies


def _conv(rng: np.random.Generator, name: str, c_out: int, c_in: int, k: int) -> onnx.TensorProto:
    w = rng.normal(0, (2.0 / (c_in * k * k)) ** 0.5, size=(c_out, c_in, k, k)).astype(np.float32)
    return numpy_helper.from_array(w, name)


def build_fpn_model(seed: int = 0) -> onnx.ModelProto:
    """A feature pyramid with a classification head: four outputs, three of them also
    feeding later nodes (so few single-tensor cuts exist past the backbone).

    input [B,3,64,64] -> c1 (32x32) -> c2 (16x16) -> c3 (8x8); p3 = lat(c3),
    p2 = lat(c2) + up(p3), p1 = lat(c1) + up(p2); outputs: logits (GAP+Gemm on c3),
    p3, p2, and seg = conv(p1).
    """
    rng = np.random.default_rng(seed)
    inits = [
        _conv(rng, "backbone.c1.w", 8, 3, 3), _conv(rng, "backbone.c2.w", 16, 8, 3),
        _conv(rng, "backbone.c3.w", 32, 16, 3), _conv(rng, "fpn.lat3.w", 16, 32, 1),
        _conv(rng, "fpn.lat2.w", 16, 16, 1), _conv(rng, "fpn.lat1.w", 16, 8, 1),
        _conv(rng, "head.seg.w", 4, 16, 3),
        numpy_helper.from_array(rng.normal(0, 0.2, size=(32, 10)).astype(np.float32), "head.cls.w"),
        numpy_helper.from_array(rng.normal(0, 0.1, size=(10,)).astype(np.float32), "head.cls.b"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "up.scales"),
    ]
    s2 = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["images", "backbone.c1.w"], ["backbone/c1/conv"], name="c1_conv", **s2),
        helper.make_node("Relu", ["backbone/c1/conv"], ["backbone/c1"], name="c1_relu"),
        helper.make_node("Conv", ["backbone/c1", "backbone.c2.w"], ["backbone/c2/conv"], name="c2_conv", **s2),
        helper.make_node("Relu", ["backbone/c2/conv"], ["backbone/c2"], name="c2_relu"),
        helper.make_node("Conv", ["backbone/c2", "backbone.c3.w"], ["backbone/c3/conv"], name="c3_conv", **s2),
        helper.make_node("Relu", ["backbone/c3/conv"], ["backbone/c3"], name="c3_relu"),
        helper.make_node("GlobalAveragePool", ["backbone/c3"], ["head/cls/gap"], name="cls_gap"),
        helper.make_node("Flatten", ["head/cls/gap"], ["head/cls/flat"], name="cls_flatten"),
        helper.make_node("Gemm", ["head/cls/flat", "head.cls.w", "head.cls.b"], ["logits"], name="cls_gemm"),
        helper.make_node("Conv", ["backbone/c3", "fpn.lat3.w"], ["p3"], name="lat3", kernel_shape=[1, 1]),
        helper.make_node("Resize", ["p3", "", "up.scales"], ["fpn/p3_up"], name="up3", mode="nearest"),
        helper.make_node("Conv", ["backbone/c2", "fpn.lat2.w"], ["fpn/lat2"], name="lat2", kernel_shape=[1, 1]),
        helper.make_node("Add", ["fpn/lat2", "fpn/p3_up"], ["p2"], name="p2_add"),
        helper.make_node("Resize", ["p2", "", "up.scales"], ["fpn/p2_up"], name="up2", mode="nearest"),
        helper.make_node("Conv", ["backbone/c1", "fpn.lat1.w"], ["fpn/lat1"], name="lat1", kernel_shape=[1, 1]),
        helper.make_node("Add", ["fpn/lat1", "fpn/p2_up"], ["fpn/p1"], name="p1_add"),
        helper.make_node("Conv", ["fpn/p1", "head.seg.w"], ["seg"], name="seg_conv", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_fpn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("p3", TensorProto.FLOAT, ["N", 16, 8, 8]),
         helper.make_tensor_value_info("p2", TensorProto.FLOAT, ["N", 16, 16, 16]),
         helper.make_tensor_value_info("seg", TensorProto.FLOAT, ["N", 4, 32, 32])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def fpn_model() -> onnx.ModelProto:
    return build_fpn_model()


@pytest.fixture(scope="session")
def fpn_frames(imagenet_input_spec: bundle_pb2.InputSpec) -> list[np.ndarray]:
    """Real photos at 64x64 for the FPN model."""
    spec = bundle_pb2.InputSpec()
    spec.CopyFrom(imagenet_input_spec)
    spec.width_px = spec.height_px = 64
    spec.resize_shorter_px = 72
    return load_frames(("chelsea", "rocket"), spec)


def build_small_torch_net():
    """A small residual CNN with BatchNorm and two outputs (logits, embedding)."""
    import torch
    from torch import nn

    class SmallNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1))
            self.down = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.1))
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.block(x))
            x = self.down(x)
            emb = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return self.fc(emb), emb

    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so folding matters
        for bn in (net.stem[1], net.down[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return net


def tensorflow_style(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a model the way tf2onnx-converted graphs look: every weight a Constant
    node read through an Identity, TensorFlow-style value names (``.../BiasAdd:0``),
    graph input ``input_1:0`` and outputs ``Identity:0``, ``Identity_1:0``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    rename: dict[str, str] = {}
    inputs = [vi for vi in graph.input if vi.name not in {t.name for t in graph.initializer}]
    for vi in inputs:
        rename[vi.name] = "input_1:0"
    for k, vi in enumerate(graph.output):
        rename[vi.name] = "Identity:0" if k == 0 else f"Identity_{k}:0"
    for i, node in enumerate(graph.node):
        for out_name in node.output:
            rename.setdefault(out_name, f"StatefulPartitionedCall/small_net/layer_{i}/{node.op_type}:0")
    const_nodes = []
    for k, init in enumerate(graph.initializer):
        raw = f"StatefulPartitionedCall/small_net/ReadVariableOp_{k}:0"
        read = f"StatefulPartitionedCall/small_net/ReadVariableOp_{k}/Identity:0"
        const_nodes.append(helper.make_node("Constant", [], [raw], name=f"Const_{k}", value=init))
        const_nodes.append(helper.make_node("Identity", [raw], [read], name=f"ReadVariableOp_{k}"))
        rename[init.name] = read
    for node in graph.node:
        node.input[:] = [rename.get(x, x) for x in node.input]
        node.output[:] = [rename.get(x, x) for x in node.output]
        node.name = f"StatefulPartitionedCall/small_net/{node.name or node.op_type}"
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        vi.name = rename.get(vi.name, vi.name)
    nodes = const_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    keep = [vi for vi in graph.input if vi.name == "input_1:0"]
    del graph.input[:]
    graph.input.extend(keep)
    onnx.checker.check_model(out)
    return out


@pytest.fixture(scope="session")
def odd_names_model() -> onnx.ModelProto:
    """A torch export rewritten with TensorFlow-style names and Constant-node weights."""
    from partitioner.loading import export_torch_module

    exported = export_torch_module(build_small_torch_net(), (1, 3, 32, 32), 17)
    return tensorflow_style(exported)


@pytest.fixture(scope="session")
def odd_names_frames(imagenet_input_spec: bundle_pb2.InputSpec) -> list[np.ndarray]:
    spec = bundle_pb2.InputSpec()
    spec.CopyFrom(imagenet_input_spec)
    spec.width_px = spec.height_px = 32
    spec.resize_shorter_px = 36
    return load_frames(("coffee", "horse"), spec)
