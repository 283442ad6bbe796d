"""Protocol fidelity with stock tritonclient: BYTES tensors, config.pbtxt fields honoured or refused,
RepositoryModelLoad parameters, and Triton features we do not serve answering UNIMPLEMENTED.

The repository models mirror Triton's client examples: a string add/sub model (INT32 numbers sent as
BYTES text, as `simple_grpc_string_infer_client` does), an image model whose config reshapes [3,4,4] to
[1,3,4,4] with FORMAT_NCHW (as the densenet example's), an echo of BYTES, and a model with
max_batch_size 2.
"""

from __future__ import annotations

import json
import pathlib
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from cloud_server.errors import ModelConfigRefused
from cloud_server.server import RunningServer, create_server
from protos import bundle as bundle_io

from .conftest import make_settings

_W = np.random.default_rng(11).normal(size=(5, 3, 1, 1)).astype(np.float32)


def _model(nodes: list, inputs: list, outputs: list, inits: list = ()) -> bytes:  # type: ignore[type-arg]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _string_add_sub() -> bytes:
    vi = helper.make_tensor_value_info
    return _model(
        [
            helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
            helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Sub", ["a", "b"], ["diff"]),
            helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
            helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=TensorProto.STRING),
        ],
        [vi("INPUT0", TensorProto.STRING, ["N", 16]), vi("INPUT1", TensorProto.STRING, ["N", 16])],
        [vi("OUTPUT0", TensorProto.STRING, ["N", 16]), vi("OUTPUT1", TensorProto.STRING, ["N", 16])],
    )


def _image_model() -> bytes:
    vi = helper.make_tensor_value_info
    return _model(
        [helper.make_node("GlobalAveragePool", ["data_0"], ["gap"]), helper.make_node("Conv", ["gap", "w"], ["prob"])],
        [vi("data_0", TensorProto.FLOAT, [1, 3, 4, 4])],
        [vi("prob", TensorProto.FLOAT, [1, 5, 1, 1])],
        [numpy_helper.from_array(_W, "w")],
    )


def _echo() -> bytes:
    vi = helper.make_tensor_value_info
    return _model([helper.make_node("Identity", ["text"], ["echo"])],
                  [vi("text", TensorProto.STRING, ["N", 1])], [vi("echo", TensorProto.STRING, ["N", 1])])


def _pool_fc() -> bytes:
    from .conftest import make_graph

    return make_graph(["fc"], "pooled", "logits")


CONFIGS = {
    "simple_string": ("""name: "simple_string" platform: "onnxruntime_onnx" max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_STRING dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 16 ] }, { name: "OUTPUT1" data_type: TYPE_STRING dims: [ 16 ] } ]
""", _string_add_sub),
    "image_like": ("""name: "image_like" platform: "onnxruntime_onnx" max_batch_size: 0
input [ { name: "data_0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 4, 4 ] reshape { shape: [ 1, 3, 4, 4 ] } } ]
output [ { name: "prob" data_type: TYPE_FP32 dims: [ 5 ] reshape { shape: [ 1, 5, 1, 1 ] } label_filename: "labels.txt" } ]
""", _image_model),
    "echo": ("""name: "echo" backend: "onnxruntime" max_batch_size: 4
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "echo" data_type: TYPE_STRING dims: [ 1 ] } ]
""", _echo),
    "batch2": ("""name: "batch2" platform: "onnxruntime_onnx" max_batch_size: 2
input [ { name: "pooled" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 5 ] } ]
""", _pool_fc),
}


def write_repository(root: pathlib.Path, configs: dict[str, tuple] = CONFIGS) -> pathlib.Path:  # type: ignore[type-arg]
    for name, (config, build) in configs.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(config)
        (root / name / "1" / "model.onnx").write_bytes(build())
        if "label_filename" in config:
            (root / name / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(5)))
    return root


@pytest.fixture(scope="module")
def repo_server(tiny_bundle: bundle_io.Bundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = write_repository(tmp_path_factory.mktemp("fidelity_repo"))
    running = create_server(make_settings(tiny_bundle, repo))
    yield running
    running.stop(0.5)


@pytest.fixture()
def client(repo_server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(url=f"127.0.0.1:{repo_server.port}")
    yield c
    c.close()


def _bytes_input(name: str, values: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(values.shape), "BYTES")
    inp.set_data_from_numpy(values)
    return inp


def test_bytes_reach_the_model_unchanged(client: grpcclient.InferenceServerClient) -> None:
    values = np.array([[b"hello"], ["žluťoučký kůň".encode()], [b""]], dtype=np.object_)
    result = client.infer("echo", [_bytes_input("text", values)])
    assert result.as_numpy("echo").tolist() == values.tolist()


def test_string_example_adds_numbers_sent_as_text(client: grpcclient.InferenceServerClient) -> None:
    """What Triton's simple_grpc_string_infer_client does, unchanged: numbers travel as BYTES text."""
    in0 = np.arange(16, dtype=np.int32)
    in1 = np.ones(16, dtype=np.int32)
    as_text = [np.array([str(x).encode("utf-8") for x in a], dtype=np.object_).reshape(1, 16) for a in (in0, in1)]
    result = client.infer("simple_string", [_bytes_input("INPUT0", as_text[0]), _bytes_input("INPUT1", as_text[1])])
    assert [int(x) for x in result.as_numpy("OUTPUT0").reshape(-1)] == (in0 + in1).tolist()
    assert [int(x) for x in result.as_numpy("OUTPUT1").reshape(-1)] == (in0 - in1).tolist()


def test_non_utf8_bytes_are_refused_naming_the_element(client: grpcclient.InferenceServerClient) -> None:
    values = np.array([[b"ok"], [b"\xff\xfe"]], dtype=np.object_)
    with pytest.raises(InferenceServerException) as info:
        client.infer("echo", [_bytes_input("text", values)])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert "element 1 is not UTF-8" in info.value.message()


def test_reshape_and_format_are_honoured_and_reported(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("image_like").config
    assert grpcclient.model_config_pb2.ModelInput.Format.Name(config.input[0].format) == "FORMAT_NCHW"
    assert list(config.input[0].reshape.shape) == [1, 3, 4, 4]
    assert list(config.output[0].reshape.shape) == [1, 5, 1, 1]
    assert config.output[0].label_filename == "labels.txt"
    image = np.random.default_rng(2).random((3, 4, 4), dtype=np.float32)
    inp = grpcclient.InferInput("data_0", [3, 4, 4], "FP32")
    inp.set_data_from_numpy(image)
    got = client.infer("image_like", [inp]).as_numpy("prob")
    want = ort.InferenceSession(_image_model()).run(None, {"data_0": image[None]})[0].reshape(5)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_max_batch_size_from_the_config_is_enforced(client: grpcclient.InferenceServerClient) -> None:
    assert client.get_model_config("batch2").config.max_batch_size == 2
    ok = grpcclient.InferInput("pooled", [2, 8], "FP32")
    ok.set_data_from_numpy(np.ones((2, 8), np.float32))
    assert client.infer("batch2", [ok]).as_numpy("logits").shape == (2, 5)
    too_many = grpcclient.InferInput("pooled", [5, 8], "FP32")
    too_many.set_data_from_numpy(np.ones((5, 8), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("batch2", [too_many])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert "batch size 5" in info.value.message() and "max_batch_size=2" in info.value.message()


@pytest.mark.parametrize("extra, field", [
    ("sequence_batching { }", "sequence_batching"),
    ("ensemble_scheduling { step [ ] }", "ensemble_scheduling"),
    ("model_transaction_policy { decoupled: true }", "model_transaction_policy"),
    ("instance_group [ { count: 2 kind: KIND_CPU } ]", "instance_group[0].count"),
    ("dynamic_batching { priority_levels: 2 }", "dynamic_batching.priority_levels"),
    ("parameters { key: \"intra_op_thread_count\" value { string_value: \"2\" } }", "parameters"),
])
def test_unhonoured_config_fields_refuse_the_model_naming_the_field(
    tmp_path: pathlib.Path, tiny_bundle: bundle_io.Bundle, extra: str, field: str
) -> None:
    config, build = CONFIGS["batch2"]
    repo = write_repository(tmp_path / "repo", {"batch2": (config + extra, build)})
    with pytest.raises(ModelConfigRefused) as info:
        create_server(make_settings(tiny_bundle, repo))
    assert f"'{field}" in str(info.value) and "batch2/config.pbtxt" in str(info.value)


def test_optional_input_is_refused(tmp_path: pathlib.Path, tiny_bundle: bundle_io.Bundle) -> None:
    config, build = CONFIGS["batch2"]
    repo = write_repository(tmp_path / "repo", {"batch2": (config.replace("dims: [ 8 ]", "dims: [ 8 ] optional: true"),
                                                          build)})
    with pytest.raises(ModelConfigRefused, match=r"'input\[0\]\.optional'"):
        create_server(make_settings(tiny_bundle, repo))


def test_load_with_a_config_override_applies_it(client: grpcclient.InferenceServerClient) -> None:
    config, _ = CONFIGS["batch2"]
    override = {"name": "batch2", "platform": "onnxruntime_onnx", "max_batch_size": 1,
                "input": [{"name": "pooled", "data_type": "TYPE_FP32", "dims": [8]}],
                "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [5]}]}
    try:
        client.load_model("batch2", config=json.dumps(override))
        assert client.get_model_config("batch2").config.max_batch_size == 1
        two = grpcclient.InferInput("pooled", [2, 8], "FP32")
        two.set_data_from_numpy(np.ones((2, 8), np.float32))
        with pytest.raises(InferenceServerException, match="max_batch_size=1"):
            client.infer("batch2", [two])
    finally:
        client.load_model("batch2", config=json.dumps({**override, "max_batch_size": 2}))
    assert client.get_model_config("batch2").config.max_batch_size == 2


@pytest.mark.parametrize("kwargs, status, words", [
    ({"config": "{not json"}, "INVALID_ARGUMENT", "not a valid JSON ModelConfig"),
    ({"config": json.dumps({"name": "batch2", "sequence_batching": {}})}, "INVALID_ARGUMENT", "'sequence_batching'"),
    ({"config": "{}", "files": {"file:1/model.onnx": b"\x08\x01"}}, "UNIMPLEMENTED", "file:1/model.onnx"),
])
def test_load_parameters_we_cannot_apply_are_refused(
    client: grpcclient.InferenceServerClient, kwargs: dict, status: str, words: str  # type: ignore[type-arg]
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.load_model("batch2", **kwargs)
    assert status in str(info.value.status()) and words in info.value.message()
    assert client.is_model_ready("batch2")  # the served model is untouched


def test_shared_memory_and_sequences_answer_unimplemented(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory("region", "/no_such_key", 64)
    assert "UNIMPLEMENTED" in str(info.value.status()) and "SystemSharedMemoryRegister" in info.value.message()
    inp = grpcclient.InferInput("pooled", [1, 8], "FP32")
    inp.set_data_from_numpy(np.ones((1, 8), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("batch2", [inp], sequence_id=7, sequence_start=True)
    assert "UNIMPLEMENTED" in str(info.value.status()) and "sequence_id" in info.value.message()
    shm = grpcclient.InferInput("pooled", [1, 8], "FP32")
    shm.set_shared_memory("region", 32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("batch2", [shm])
    assert "UNIMPLEMENTED" in str(info.value.status()) and "shared memory" in info.value.message()


def test_classification_extension_answers_top_classes_with_labels(client: grpcclient.InferenceServerClient) -> None:
    """What Triton's image_client does with --classes: the top k as "value:index:label" strings."""
    image = np.random.default_rng(4).random((3, 4, 4), dtype=np.float32)
    inp = grpcclient.InferInput("data_0", [3, 4, 4], "FP32")
    inp.set_data_from_numpy(image)
    result = client.infer("image_like", [inp], outputs=[grpcclient.InferRequestedOutput("prob", class_count=3)])
    got = [x.decode().split(":") for x in result.as_numpy("prob")]
    scores = ort.InferenceSession(_image_model()).run(None, {"data_0": image[None]})[0].reshape(5)
    top = np.argsort(-scores)[:3]
    assert [int(i) for _, i, _ in got] == top.tolist()
    assert [label for _, _, label in got] == [f"class_{i}" for i in top]
    np.testing.assert_allclose([float(v) for v, _, _ in got], scores[top], rtol=1e-5)

def test_classification_of_zero_classes_is_invalid(repo_server: RunningServer) -> None:
    import grpc

    from protos import inference_pb2 as pb
    from protos import inference_pb2_grpc

    request = pb.ModelInferRequest(model_name="image_like")
    request.inputs.add(name="data_0", datatype="FP32", shape=[3, 4, 4])
    request.raw_input_contents.append(np.zeros((3, 4, 4), np.float32).tobytes())
    request.outputs.add(name="prob").parameters["classification"].int64_param = 0
    with grpc.insecure_channel(repo_server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "parameter 'classification' is 0; expected a number of classes >= 1" in info.value.details()


@pytest.mark.parametrize("policy, served", [
    ("", ["3"]),  # Triton's default: latest { num_versions: 1 }
    ("version_policy: { latest: { num_versions: 2 } }", ["2", "3"]),
    ("version_policy: { all: { } }", ["1", "2", "3"]),
    ("version_policy: { specific: { versions: [ 1, 3 ] } }", ["1", "3"]),
])
def test_version_policy_chooses_the_served_versions(
    tmp_path: pathlib.Path, tiny_bundle: bundle_io.Bundle, policy: str, served: list[str]
) -> None:
    config, build = CONFIGS["batch2"]
    repo = write_repository(tmp_path / "repo", {"batch2": (config + policy, build)})
    for version in ("2", "3"):
        (repo / "batch2" / version).mkdir()
        (repo / "batch2" / version / "model.onnx").write_bytes(build())
    running = create_server(make_settings(tiny_bundle, repo))
    try:
        assert running.registry.versions("batch2") == served
    finally:
        running.stop(0.5)
