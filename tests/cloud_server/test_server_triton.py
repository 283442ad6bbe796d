"""A stock tritonclient against our real gRPC server on port 0; plus health checking and reflection."""

from __future__ import annotations

import pathlib
import queue
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from cloud_server.server import RunningServer, create_server
from protos import bundle as bundle_io

from .conftest import FC_B, FC_W, MODEL_NAME, REPO_MODEL, make_settings, pooled_of, write_tiny_repository

POOL = f"{MODEL_NAME}.pool"
FEAT = f"{MODEL_NAME}.feat"


def _pool_input(x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("pooled", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_live_ready_and_server_metadata(triton_client: grpcclient.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    meta = triton_client.get_server_metadata(as_json=True)
    assert meta["name"] == "splitinfer"
    assert "statistics" in meta["extensions"] and "model_repository" in meta["extensions"]


def test_model_metadata_and_config(triton_client: grpcclient.InferenceServerClient, tiny_bundle: bundle_io.Bundle) -> None:
    version = "1"  # an integer version, as Triton and `export-triton` use; the bundle is a config parameter
    assert bundle_io.tail_model_version(tiny_bundle.manifest) == version
    assert triton_client.is_model_ready(POOL)
    assert triton_client.is_model_ready(POOL, version)
    meta = triton_client.get_model_metadata(POOL, as_json=True)
    assert meta["name"] == POOL and meta["versions"] == [version] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "pooled", "datatype": "FP32", "shape": ["-1", "8"]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "5"]}]
    inp_meta = triton_client.get_model_metadata(f"{MODEL_NAME}.input", as_json=True)
    assert inp_meta["inputs"] == [{"name": "jpeg", "datatype": "BYTES", "shape": ["-1"]}]
    config = triton_client.get_model_config(FEAT, as_json=True)["config"]
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == ["8", "-1", "-1"]
    assert config["parameters"]["splitinfer_cut"]["string_value"] == "feat"
    assert config["parameters"]["splitinfer_bundle_hash"]["string_value"] == tiny_bundle.content_hash[:12]


def test_infer_raw_with_parameters_returns_advisory_times(triton_client: grpcclient.InferenceServerClient) -> None:
    x = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    result = triton_client.infer(
        POOL,
        [_pool_input(x)],
        request_id="frame-42",
        outputs=[grpcclient.InferRequestedOutput("logits")],
        parameters={"splitinfer_cut": "pool", "edge_sent_unix_us": int(time.time() * 1e6)},
    )
    np.testing.assert_allclose(result.as_numpy("logits"), x @ FC_W.T + FC_B, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert response.id == "frame-42"
    assert response.model_version
    params = response.parameters
    assert params["server_queue_us"].int64_param >= 0
    assert params["server_compute_us"].int64_param > 0


def test_repository_model_serves(triton_client: grpcclient.InferenceServerClient) -> None:
    x = np.ones((1, 8), np.float32)
    result = triton_client.infer(REPO_MODEL, [_pool_input(x)], model_version="1")
    np.testing.assert_allclose(result.as_numpy("logits"), x @ FC_W.T + FC_B, rtol=1e-5)


def test_five_megabyte_tensor(triton_client: grpcclient.InferenceServerClient) -> None:
    feat = np.random.default_rng(2).random((1, 8, 400, 400), dtype=np.float32)
    assert feat.nbytes >= 5_000_000
    inp = grpcclient.InferInput("feat", list(feat.shape), "FP32")
    inp.set_data_from_numpy(feat)
    logits = triton_client.infer(FEAT, [inp]).as_numpy("logits")
    expected = feat.mean(axis=(2, 3)) @ FC_W.T + FC_B
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_streaming_answers_every_request_and_survives_errors(
    triton_client: grpcclient.InferenceServerClient,
) -> None:
    results: queue.Queue = queue.Queue()
    triton_client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        xs = [np.full((1, 8), i, np.float32) for i in range(4)]
        for i, x in enumerate(xs[:2]):
            triton_client.async_stream_infer(POOL, [_pool_input(x)], request_id=f"s{i}")
        triton_client.async_stream_infer(POOL, [_pool_input(np.ones((1, 7), np.float32))], request_id="bad")
        for i, x in enumerate(xs[2:], start=2):
            triton_client.async_stream_infer(POOL, [_pool_input(x)], request_id=f"s{i}")
        got = [results.get(timeout=10) for _ in range(5)]
    finally:
        triton_client.stop_stream()
    errors = [e for r, e in got if e is not None]
    assert len(errors) == 1 and "shape [1, 7]; expected [-1, 8]" in str(errors[0])
    ok = {r.get_response().id: r.as_numpy("logits") for r, e in got if e is None}
    assert sorted(ok) == ["s0", "s1", "s2", "s3"]
    for i, x in enumerate(xs):
        np.testing.assert_allclose(ok[f"s{i}"], x @ FC_W.T + FC_B, rtol=1e-5)


def test_statistics(triton_client: grpcclient.InferenceServerClient) -> None:
    before = triton_client.get_inference_statistics(POOL, as_json=True)["model_stats"][0]
    triton_client.infer(POOL, [_pool_input(np.ones((3, 8), np.float32))])
    stats = triton_client.get_inference_statistics(POOL, as_json=True)["model_stats"][0]
    assert stats["name"] == POOL
    assert int(stats["inference_count"]) == int(before.get("inference_count", 0)) + 3
    assert int(stats["execution_count"]) >= 1
    inf = stats["inference_stats"]
    for field in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert int(inf[field]["count"]) >= 1, field
    assert int(inf["compute_infer"]["ns"]) > 0
    assert any(int(b["batch_size"]) == 3 for b in stats["batch_stats"])
    assert int(stats["last_inference"]) > 0
    everything = triton_client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in everything} >= {POOL, FEAT, REPO_MODEL}


def test_unknown_model_or_version_is_not_found(
    triton_client: grpcclient.InferenceServerClient, tiny_bundle: bundle_io.Bundle
) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton_client.infer("resnet50.layer3", [_pool_input(np.ones((1, 8), np.float32))])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "'resnet50.layer3'" in info.value.message() and POOL in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton_client.get_model_metadata(POOL, "deadbeef0000")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "'deadbeef0000'" in info.value.message() and "available versions: 1" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        triton_client.get_inference_statistics("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert triton_client.is_server_live(), "the server keeps serving"


def test_repository_index_load_and_unload(tiny_bundle: bundle_io.Bundle, tmp_path: pathlib.Path) -> None:
    repo = write_tiny_repository(tmp_path / "repo")
    running = create_server(make_settings(tiny_bundle, repo))
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{running.port}")
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    health = health_pb2_grpc.HealthStub(channel)
    try:
        index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
        assert index[REPO_MODEL] == {"name": REPO_MODEL, "version": "1", "state": "READY"}
        client.unload_model(REPO_MODEL)
        assert not client.is_model_ready(REPO_MODEL)
        assert health.Check(health_pb2.HealthCheckRequest(service=REPO_MODEL)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(InferenceServerException) as info:
            client.infer(REPO_MODEL, [_pool_input(np.ones((1, 8), np.float32))])
        assert info.value.status() == "StatusCode.UNAVAILABLE" and "unloaded" in info.value.message()
        client.load_model(REPO_MODEL)
        assert client.is_model_ready(REPO_MODEL)
        assert health.Check(health_pb2.HealthCheckRequest(service=REPO_MODEL)).status == health_pb2.HealthCheckResponse.SERVING
        x = np.ones((1, 8), np.float32)
        np.testing.assert_allclose(client.infer(REPO_MODEL, [_pool_input(x)]).as_numpy("logits"), x @ FC_W.T + FC_B, rtol=1e-5)
        with pytest.raises(InferenceServerException) as info:
            client.load_model("../../etc")
        assert info.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()
        channel.close()
        running.stop(1.0)


def test_health_overall_and_per_model_and_draining(tiny_bundle: bundle_io.Bundle) -> None:
    running = create_server(make_settings(tiny_bundle))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    health = health_pb2_grpc.HealthStub(channel)
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{running.port}")
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        assert health.Check(health_pb2.HealthCheckRequest(service=POOL)).status == serving
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.model"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        running.set_draining()
        for service in ("", POOL):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not client.is_server_ready()
        # requests that still arrive while draining are answered
        x = np.ones((1, 8), np.float32)
        np.testing.assert_allclose(client.infer(POOL, [_pool_input(x)]).as_numpy("logits"), x @ FC_W.T + FC_B, rtol=1e-5)
    finally:
        client.close()
        channel.close()
        running.stop(1.0)


def test_reflection_lists_the_services(server: RunningServer) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    finally:
        channel.close()
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto, described


def test_head_output_from_the_edge_matches_the_full_model(
    triton_client: grpcclient.InferenceServerClient, jpeg_frames: list[bytes], tiny_bundle: bundle_io.Bundle
) -> None:
    """The split round trip: the edge head's 'pooled' activation through our tail = the full model."""
    from protos.preprocess import decode_jpeg, preprocess_bgr

    from .conftest import reference_logits

    image = preprocess_bgr(decode_jpeg(jpeg_frames[0]), tiny_bundle.manifest.input)
    logits = triton_client.infer(POOL, [_pool_input(pooled_of(image))]).as_numpy("logits")
    np.testing.assert_allclose(logits, reference_logits(image), rtol=1e-4, atol=1e-5)
    # and the 'input' cut: the server decodes the JPEG itself
    inp = grpcclient.InferInput("jpeg", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg_frames[0]], dtype=np.object_))
    np.testing.assert_allclose(
        triton_client.infer(f"{MODEL_NAME}.input", [inp]).as_numpy("logits"), reference_logits(image), rtol=1e-4, atol=1e-5
    )
