"""Fixtures for the cloud server: a tiny but real bundle and Triton repository, and real servers on port 0.

The tiny model: image [N,3,H,W] -> Conv(8, 3x3, pad 1) -> Relu = "feat" [N,8,H,W] -> GlobalAveragePool ->
Flatten = "pooled" [N,8] -> Gemm(5) = "logits" [N,5]. The bundle `tiny_net` holds the cuts 'input' (tail =
the full model, fed JPEG frames), 'feat' (dynamic spatial size, so a 5 MB tensor fits), 'pool' (fixed
shape [-1, 8]) and 'output'. Heads and tails are separate graphs split by hand at those tensors.
"""

from __future__ import annotations

import pathlib
from typing import Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cloud_server.server import RunningServer, create_server
from cloud_server.settings import ServerSettings
from protos import bundle as bundle_io
from tests.bundles import FULL, BundleSpec, CutSpec, InputSpec, Tensor, write_test_bundle

MODEL_NAME = "tiny_net"
REPO_MODEL = "tiny_repo"

_RNG = np.random.default_rng(7)
CONV_W = _RNG.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
CONV_B = _RNG.normal(0, 0.1, (8,)).astype(np.float32)
FC_W = _RNG.normal(0, 0.5, (5, 8)).astype(np.float32)
FC_B = _RNG.normal(0, 0.1, (5,)).astype(np.float32)

_NODES = {
    "conv": helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv_out"], pads=[1, 1, 1, 1]),
    "relu": helper.make_node("Relu", ["conv_out"], ["feat"]),
    "gap": helper.make_node("GlobalAveragePool", ["feat"], ["gap"]),
    "flat": helper.make_node("Flatten", ["gap"], ["pooled"], axis=1),
    "fc": helper.make_node("Gemm", ["pooled", "fc_w", "fc_b"], ["logits"], transB=1),
}
_INITS = {
    "conv": [numpy_helper.from_array(CONV_W, "conv_w"), numpy_helper.from_array(CONV_B, "conv_b")],
    "fc": [numpy_helper.from_array(FC_W, "fc_w"), numpy_helper.from_array(FC_B, "fc_b")],
}
_SHAPES = {
    "image": ["N", 3, "H", "W"],
    "feat": ["N", 8, "H", "W"],
    "pooled": ["N", 8],
    "logits": ["N", 5],
}


def make_graph(nodes: list[str], input_name: str, output_name: str) -> bytes:
    """A serialized ONNX model running `nodes` from `input_name` to `output_name`."""
    graph = helper.make_graph(
        [_NODES[n] for n in nodes],
        f"tiny_{input_name}_{output_name}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, _SHAPES[input_name])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, _SHAPES[output_name])],
        initializer=[init for n in nodes for init in _INITS.get(n, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def reference_logits(image: np.ndarray) -> np.ndarray:
    """numpy reference of the whole model."""
    import onnxruntime as ort

    sess = ort.InferenceSession(make_graph(list(_NODES), "image", "logits"), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"image": image})[0]


def pooled_of(image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(
        make_graph(["conv", "relu", "gap", "flat"], "image", "pooled"), providers=["CPUExecutionProvider"]
    )
    return sess.run(["pooled"], {"image": image})[0]


def write_tiny_bundle(out: pathlib.Path) -> bundle_io.Bundle:
    full = make_graph(list(_NODES), "image", "logits")
    logits = Tensor("logits", "FP32", (-1, 5))
    spec = BundleSpec(
        model_name=MODEL_NAME, created_by="tests/cloud_server", full_model=full, labels=["a", "b", "c", "d", "e"],
        top_k=2, outputs=(logits,),
        input=InputSpec(Tensor("image", "FP32", (-1, 3, 32, 32)), 32, 32, resize_shorter_px=36,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        cuts=(
            CutSpec("input", (Tensor("jpeg", "BYTES", (-1,), codec="jpeg"),), tail=FULL, wire_bytes=2048),
            CutSpec("feat", (Tensor("feat", "FP32", (-1, 8, -1, -1)),), wire_bytes=32 * 32 * 8 * 4,
                    head=make_graph(["conv", "relu"], "image", "feat"),
                    tail=make_graph(["gap", "flat", "fc"], "feat", "logits")),
            CutSpec("pool", (Tensor("pooled", "FP32", (-1, 8)),), display_name="pooled", wire_bytes=32,
                    head=make_graph(["conv", "relu", "gap", "flat"], "image", "pooled"),
                    tail=make_graph(["fc"], "pooled", "logits")),
            CutSpec("output", (logits,)),
        ),
    )
    return write_test_bundle(out, spec)


REPO_CONFIG = f"""
name: "{REPO_MODEL}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "pooled" data_type: TYPE_FP32 dims: [ 8 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 5 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
"""


def write_tiny_repository(root: pathlib.Path) -> pathlib.Path:
    model_dir = root / REPO_MODEL
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(REPO_CONFIG)
    (model_dir / "1" / "model.onnx").write_bytes(make_graph(["fc"], "pooled", "logits"))
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> bundle_io.Bundle:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / MODEL_NAME)


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_repository(tmp_path_factory.mktemp("repo"))


def make_settings(bundle: bundle_io.Bundle, repo: pathlib.Path | None = None, **overrides: object) -> ServerSettings:
    base = dict(
        port=0, bundles=(bundle.root,), triton_repository=repo, metrics_port=None, discovery=False,
        max_queue_delay_us=2000, grpc_workers=40,
    )
    base.update(overrides)
    return ServerSettings(**base)  # type: ignore[arg-type]




@pytest.fixture(scope="session")
def server(tiny_bundle: bundle_io.Bundle, tiny_repository: pathlib.Path) -> Iterator[RunningServer]:
    running = create_server(make_settings(tiny_bundle, tiny_repository))
    yield running
    running.stop(1.0)


@pytest.fixture(scope="session")
def slow_server(tiny_bundle: bundle_io.Bundle) -> Iterator[RunningServer]:
    """Long batching window (0.5 s) and a queue of 2: for batching, deadline and queue-full cases."""
    running = create_server(
        make_settings(tiny_bundle, max_queue_delay_us=500_000, max_queue_size=2, max_batch_size=8),
        eager_batching=False,
    )
    yield running
    running.stop(1.0)


@pytest.fixture(scope="session")
def triton_client(server: RunningServer):  # type: ignore[no-untyped-def]
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def jpeg_frames() -> list[bytes]:
    """Real photos from partitioner.samples, JPEG-encoded like the edge does."""
    from protos.preprocess import encode_jpeg
    from partitioner import samples

    import cv2

    frames = []
    for path in samples.available_images()[:3]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        frames.append(encode_jpeg(img, 90))
    assert frames, "no sample images installed"
    return frames
