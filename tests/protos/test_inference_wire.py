"""Our generated Open Inference Protocol messages are byte-compatible with tritonclient's."""
from __future__ import annotations

import numpy as np
import pytest

from protos import inference_pb2 as ours
from protos import datatypes

theirs = pytest.importorskip("tritonclient.grpc.service_pb2")


def _request() -> ours.ModelInferRequest:
    req = ours.ModelInferRequest(model_name="mobilenet_v2.features_6", model_version="1a2b3c", id="frame-42")
    req.parameters["split_id"].string_param = "features_6"
    req.parameters["edge_ts_us"].int64_param = 1_700_000_000_123_456
    req.parameters["priority"].uint64_param = 2
    req.parameters["scale"].double_param = 0.0123
    req.parameters["keyframe"].bool_param = True
    act = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    scale = np.array([0.5], dtype=np.float32)
    for name, arr in (("features.6/Add_output_0", act), ("scale", scale)):
        tensor = req.inputs.add(name=name, datatype=datatypes.from_numpy_dtype(arr.dtype), shape=arr.shape)
        tensor.parameters["layout"].string_param = "NCHW"
        req.raw_input_contents.append(arr.tobytes())
    req.outputs.add(name="logits").parameters["classification"].int64_param = 5
    return req


def test_request_round_trips_through_tritonclient() -> None:
    req = _request()
    wire = req.SerializeToString(deterministic=True)
    parsed = theirs.ModelInferRequest.FromString(wire)
    assert parsed.model_name == "mobilenet_v2.features_6"
    assert parsed.parameters["edge_ts_us"].int64_param == 1_700_000_000_123_456
    assert parsed.parameters["priority"].uint64_param == 2
    assert parsed.parameters["keyframe"].bool_param is True
    assert [i.name for i in parsed.inputs] == ["features.6/Add_output_0", "scale"]
    assert list(parsed.inputs[0].shape) == [2, 3, 4]
    assert parsed.inputs[0].datatype == "FP32"
    got = np.frombuffer(parsed.raw_input_contents[0], dtype="<f4").reshape(2, 3, 4)
    np.testing.assert_array_equal(got, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert parsed.outputs[0].parameters["classification"].int64_param == 5
    # and back: their bytes parse to an equal message of ours
    back = ours.ModelInferRequest.FromString(parsed.SerializeToString(deterministic=True))
    assert back == req


def test_response_round_trips_through_tritonclient() -> None:
    resp = theirs.ModelInferResponse(model_name="m", model_version="1", id="frame-42")
    resp.parameters["server_queue_us"].int64_param = 120
    resp.parameters["server_compute_us"].int64_param = 3400
    out = resp.outputs.add(name="logits", datatype="FP16", shape=[1, 1000])
    out.parameters["note"].string_param = "fp16 travels raw"
    resp.raw_output_contents.append(np.ones((1, 1000), dtype=np.float16).tobytes())
    txt = resp.outputs.add(name="labels", datatype="BYTES", shape=[2])
    txt.contents.bytes_contents.extend([b"tabby", b"tiger cat"])
    parsed = ours.ModelInferResponse.FromString(resp.SerializeToString())
    assert parsed.parameters["server_compute_us"].int64_param == 3400
    assert list(parsed.outputs[1].contents.bytes_contents) == [b"tabby", b"tiger cat"]
    arr = np.frombuffer(parsed.raw_output_contents[0], dtype="<f2")
    assert arr.shape == (1000,) and float(arr.sum()) == 1000.0
    assert theirs.ModelInferResponse.FromString(parsed.SerializeToString()) == resp


def test_stream_and_statistics_messages_match() -> None:
    stream = ours.ModelStreamInferResponse(error_message="")
    stream.infer_response.model_name = "m"
    stream.infer_response.outputs.add(name="y", datatype="FP32", shape=[1])
    assert theirs.ModelStreamInferResponse.FromString(stream.SerializeToString()).infer_response.model_name == "m"
    stats = ours.ModelStatisticsResponse()
    ms = stats.model_stats.add(name="m", version="1", last_inference=17, inference_count=10, execution_count=4)
    ms.inference_stats.queue.count = 10
    ms.inference_stats.queue.ns = 5_000
    ms.inference_stats.compute_infer.ns = 9_000
    ms.batch_stats.add(batch_size=4).compute_infer.count = 2
    parsed = theirs.ModelStatisticsResponse.FromString(stats.SerializeToString())
    assert parsed.model_stats[0].inference_stats.queue.ns == 5_000
    assert parsed.model_stats[0].execution_count == 4
    assert parsed.model_stats[0].batch_stats[0].batch_size == 4


def test_model_config_subset_parses_as_triton_model_config() -> None:
    from tritonclient.grpc import model_config_pb2

    cfg = ours.ModelConfig(name="mobilenet_v2.features_6", platform="onnxruntime_onnx", max_batch_size=8)
    cfg.input.add(name="x", data_type=ours.TYPE_UINT8, dims=[32, 28, 28])
    cfg.output.add(name="logits", data_type=ours.TYPE_FP32, dims=[1000])
    cfg.dynamic_batching.max_queue_delay_microseconds = 2000
    cfg.dynamic_batching.preferred_batch_size.extend([4, 8])
    cfg.instance_group.add(kind=ours.ModelInstanceGroup.KIND_CPU, count=1)
    parsed = model_config_pb2.ModelConfig.FromString(cfg.SerializeToString())
    assert parsed.input[0].data_type == model_config_pb2.TYPE_UINT8
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 2000
    assert parsed.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_service_has_the_triton_method_names_and_shapes() -> None:
    mine = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    ref = theirs.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert mine.full_name == ref.full_name == "inference.GRPCInferenceService"
    for method in mine.methods:
        other = ref.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            other.input_type.full_name,
            other.output_type.full_name,
        )
        assert (method.client_streaming, method.server_streaming) == (other.client_streaming, other.server_streaming)


def _fields(desc):  # name -> (number, type, repeated)
    return {f.name: (f.number, f.type, f.is_repeated) for f in desc.fields}


@pytest.mark.parametrize(
    "name",
    ["ModelInferRequest", "ModelInferResponse", "InferParameter", "InferTensorContents", "ModelMetadataResponse",
     "ServerMetadataResponse", "ModelStatistics", "InferStatistics", "RepositoryIndexRequest",
     "RepositoryModelLoadRequest", "ModelStreamInferResponse", "ModelReadyRequest"],
)
def test_every_field_we_define_matches_tritonclient(name: str) -> None:
    mine, ref = getattr(ours, name).DESCRIPTOR, getattr(theirs, name).DESCRIPTOR
    ours_fields, ref_fields = _fields(mine), _fields(ref)
    for field, spec in ours_fields.items():
        assert ref_fields.get(field) == spec, f"{name}.{field}: ours {spec}, tritonclient {ref_fields.get(field)}"


def test_bytes_tensor_round_trip_and_truncation() -> None:
    items = [b"", b"a", b"\x00" * 300]
    raw = datatypes.serialize_bytes_tensor(items)
    assert datatypes.deserialize_bytes_tensor(raw) == items
    with pytest.raises(ValueError, match="claims 300 bytes"):
        datatypes.deserialize_bytes_tensor(raw[:-1])
    with pytest.raises(datatypes.DatatypeError, match="'COMPLEX64'"):
        datatypes.to_numpy_dtype("COMPLEX64")
