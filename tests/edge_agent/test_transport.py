"""The OIP gRPC client against real servers on port 0: our cloud server (stream and unary,
token, mutual TLS), a plain v2 server without ModelStreamInfer, and error mapping."""
from __future__ import annotations

import datetime
import ipaddress
import pathlib
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from cloud_server.security import TokenAuthInterceptor, load_server_credentials
from cloud_server.server import create_server
from cloud_server.settings import ServerSettings
from edge_agent.errors import OffloadUnavailable
from edge_agent.head import HeadRunner
from edge_agent.transport_fake import FakeTransport
from edge_agent.transport_grpc import GrpcOptions, GrpcTransport, request_to_proto, response_to_outputs
from edge_agent.types import OffloadRequest, WireTensor
from protos.bundle import BUNDLE_HASH_PARAMETER, bundle_hash, tail_model_name, tail_model_version
from protos import inference_pb2, inference_pb2_grpc
from tests.edge_agent.conftest import first_video_frame


def _settings(bundle, **extra) -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, bundles=(bundle.root,), metrics_port=None, discovery=False,
                          max_queue_delay_us=0, **extra)


@pytest.fixture(scope="module")
def server(tiny_bundle):
    running = create_server(_settings(tiny_bundle))
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def head(tiny_bundle) -> HeadRunner:
    runner = HeadRunner(tiny_bundle, threads=1, prewarm_neighbours=3)
    runner.activate("conv1")
    return runner


def _request(bundle, head: HeadRunner, cut: str, rid: str = "r1", bundle_id: str | None = None) -> OffloadRequest:
    """What the agent's Offloader sends: the integer version and the bundle hash to check."""
    out = head.run_head(cut, first_video_frame())
    return OffloadRequest(tail_model_name(bundle.manifest, cut), tail_model_version(bundle.manifest), rid,
                          out.tensors, ("logits",), {"splitinfer_cut": cut, "edge_sent_unix_us": 1,
                                                     BUNDLE_HASH_PARAMETER: bundle_id or bundle_hash(bundle.manifest)})


def test_stream_round_trip_every_cut_matches_local(tiny_bundle, server, head) -> None:
    local, _ = head.run_full(first_video_frame())
    transport = GrpcTransport(server.address)
    try:
        assert transport.healthy(2.0)
        for i, cut in enumerate(("input", "conv1", "conv2")):
            resp = transport.infer(_request(tiny_bundle, head, cut, f"r{i}"), timeout_s=5.0)
            assert resp.request_id == f"r{i}"
            assert resp.outputs["logits"].shape == (1, 5)
            tol = 0.2 if cut == "conv2" else (0.05 if cut == "input" else 1e-4)  # int8 / JPEG round trip
            np.testing.assert_allclose(resp.outputs["logits"], local["logits"], atol=tol)
            assert resp.server_compute_ms is not None and resp.server_compute_ms >= 0  # advisory, our server
            assert resp.round_trip_ms > 0
        assert transport.streaming
    finally:
        transport.close()


def test_concurrent_requests_share_one_stream(tiny_bundle, server, head) -> None:
    transport = GrpcTransport(server.address)
    try:
        with futures.ThreadPoolExecutor(4) as pool:
            reqs = [_request(tiny_bundle, head, "conv1", f"c{i}") for i in range(12)]
            resps = list(pool.map(lambda r: transport.infer(r, 5.0), reqs))
        assert [r.request_id for r in resps] == [f"c{i}" for i in range(12)]
    finally:
        transport.close()


def test_errors_map_to_offload_unavailable(tiny_bundle, server, head) -> None:
    transport = GrpcTransport(server.address)
    bad = _request(tiny_bundle, head, "conv1")
    unknown = OffloadRequest("tiny_net.nope", bad.model_version, "x1", bad.inputs)
    try:
        with pytest.raises(OffloadUnavailable) as info:
            transport.infer(unknown, 5.0)
        # the stream's error answer names its status, so it maps like the unary call's
        assert info.value.code == "MODEL_NOT_SERVED" and "nope" in str(info.value)
        assert info.value.retryable is False and "bundle version mismatch" in str(info.value)
        unary = GrpcTransport(server.address, GrpcOptions(streaming=False))
        with pytest.raises(OffloadUnavailable) as info:
            unary.infer(unknown, 5.0)
        assert info.value.code == "MODEL_NOT_SERVED" and info.value.retryable is False
        assert isinstance(info.value.__cause__, grpc.RpcError)
        unary.close()
        # the stream survives a per-request error
        assert transport.infer(bad, 5.0).outputs["logits"].shape == (1, 5)
    finally:
        transport.close()
    dead = GrpcTransport("127.0.0.1:1")
    with pytest.raises(OffloadUnavailable) as info:
        dead.infer(bad, 2.0)
    assert info.value.code == "UNAVAILABLE"
    assert dead.healthy(0.5) is False
    dead.close()


def test_integer_version_and_bundle_check_through_model_config(tiny_bundle, server, head) -> None:
    """The agent asks for version "1"; the bundle is checked against the server's ModelConfig
    parameter, and another bundle's hash is configuration (MODEL_NOT_SERVED), never an outage."""
    assert tail_model_version(tiny_bundle.manifest) == "1"
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.address))
    config = stub.ModelConfig(inference_pb2.ModelConfigRequest(name="tiny_net.conv1", version="1"), timeout=5).config
    assert config.parameters[BUNDLE_HASH_PARAMETER].string_value == bundle_hash(tiny_bundle.manifest)
    for options in (GrpcOptions(), GrpcOptions(streaming=False)):
        transport = GrpcTransport(server.address, options)
        try:
            ok = transport.infer(_request(tiny_bundle, head, "conv1", "ok1"), 5.0)
            assert ok.outputs["logits"].shape == (1, 5)
            with pytest.raises(OffloadUnavailable) as info:
                transport.infer(_request(tiny_bundle, head, "conv1", "other", bundle_id="0123456789ab"), 5.0)
            assert info.value.code == "MODEL_NOT_SERVED" and info.value.retryable is False
            message = str(info.value)
            assert "'0123456789ab'" in message and repr(bundle_hash(tiny_bundle.manifest)) in message
            assert BUNDLE_HASH_PARAMETER in message
            # the right bundle still offloads after the refusal (checked again, not stuck)
            assert transport.infer(_request(tiny_bundle, head, "conv1", "ok2"), 5.0).outputs["logits"].shape == (1, 5)
        finally:
            transport.close()


def test_offloads_to_an_exported_triton_repository(tiny_bundle, head, tmp_path: pathlib.Path) -> None:
    """`export-triton`'s layout (version directory 1, hash in config.pbtxt) served by a real server:
    the agent's version and bundle check agree with it; a different bundle is refused as configuration."""
    from partitioner.triton_export import export_triton

    repo = tmp_path / "repo"
    export_triton(tiny_bundle.root, repo)
    running = create_server(ServerSettings(host="127.0.0.1", port=0, triton_repository=repo, metrics_port=None,
                                           discovery=False, max_queue_delay_us=0))
    transport = GrpcTransport(running.address)
    try:
        local, _ = head.run_full(first_video_frame())
        resp = transport.infer(_request(tiny_bundle, head, "conv1", "t1"), 5.0)
        np.testing.assert_allclose(resp.outputs["logits"], local["logits"], atol=1e-4)
        with pytest.raises(OffloadUnavailable) as info:
            transport.infer(_request(tiny_bundle, head, "conv1", "t2", bundle_id="ffffffffffff"), 5.0)
        assert info.value.code == "MODEL_NOT_SERVED" and "'ffffffffffff'" in str(info.value)
    finally:
        transport.close()
        running.stop(0)


class UnaryOnlyServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """A minimal v2 server: ModelInfer and ServerReady only (no streaming extension), slow on demand."""

    def __init__(self, handler, delay_s: float = 0.0) -> None:
        self.handler, self.delay_s, self.calls = handler, delay_s, 0

    def ServerReady(self, request, context):  # noqa: N802
        return inference_pb2.ServerReadyResponse(ready=True)

    def ModelInfer(self, request, context):  # noqa: N802
        self.calls += 1
        time.sleep(self.delay_s)
        req = OffloadRequest(request.model_name, request.model_version, request.id,
                             [WireTensor(i.name, i.datatype, tuple(i.shape), raw)
                              for i, raw in zip(request.inputs, request.raw_input_contents)])
        outputs = self.handler(req)
        resp = inference_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        for name, arr in outputs.items():
            resp.outputs.add(name=name, datatype="FP32", shape=list(arr.shape))
            resp.raw_output_contents.append(np.ascontiguousarray(arr, dtype="<f4").tobytes())
        return resp


def _serve(servicer) -> tuple[grpc.Server, str]:
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    return srv, f"127.0.0.1:{port}"


def test_falls_back_to_unary_without_streaming_and_deadline(tiny_bundle, head, tail_server) -> None:
    servicer = UnaryOnlyServicer(tail_server)
    srv, address = _serve(servicer)
    transport = GrpcTransport(address)
    try:
        resp = transport.infer(_request(tiny_bundle, head, "conv1"), 5.0)
        assert resp.outputs["logits"].shape == (1, 5)
        assert resp.server_compute_ms is None  # a stock server sends no advisory times
        assert transport.streaming is False and servicer.calls == 1
        servicer.delay_s = 0.5
        with pytest.raises(OffloadUnavailable) as info:
            transport.infer(_request(tiny_bundle, head, "conv1", "late"), 0.1)
        assert info.value.code == "DEADLINE_EXCEEDED"
    finally:
        transport.close()
        srv.stop(0)


def test_stream_deadline_drops_the_late_answer(tiny_bundle, head, tail_server) -> None:
    class SlowStream(UnaryOnlyServicer):
        def ModelStreamInfer(self, request_iterator, context):  # noqa: N802
            for request in request_iterator:
                time.sleep(0.3 if request.id == "slow" else 0.0)
                yield inference_pb2.ModelStreamInferResponse(infer_response=self.ModelInfer(request, context))

    srv, address = _serve(SlowStream(tail_server))
    transport = GrpcTransport(address)
    try:
        with pytest.raises(OffloadUnavailable) as info:
            transport.infer(_request(tiny_bundle, head, "conv1", "slow"), 0.1)
        assert info.value.code == "DEADLINE_EXCEEDED"
        resp = transport.infer(_request(tiny_bundle, head, "conv1", "next"), 5.0)
        assert resp.request_id == "next"  # the late "slow" answer was dropped, not mistaken for this one
    finally:
        transport.close()
        srv.stop(0)


def test_a_stalled_stream_is_dropped_after_its_deadline(tiny_bundle, head, tail_server) -> None:
    """A stream bound to a server that no longer answers (a replaced server behind a proxy) while
    unary calls work: the request after a deadline goes over a fresh stream, and succeeds."""
    class StallFirstStream(UnaryOnlyServicer):
        streams = 0

        def ModelStreamInfer(self, request_iterator, context):  # noqa: N802
            StallFirstStream.streams += 1
            stale = StallFirstStream.streams == 1
            for request in request_iterator:
                if not stale:
                    yield inference_pb2.ModelStreamInferResponse(infer_response=self.ModelInfer(request, context))

    srv, address = _serve(StallFirstStream(tail_server))
    transport = GrpcTransport(address)
    try:
        with pytest.raises(OffloadUnavailable) as info:
            transport.infer(_request(tiny_bundle, head, "conv1", "lost"), 0.3)
        assert info.value.code == "DEADLINE_EXCEEDED"
        resp = transport.infer(_request(tiny_bundle, head, "conv1", "fresh"), 5.0)
        assert resp.request_id == "fresh" and resp.outputs["logits"].shape == (1, 5)
        assert StallFirstStream.streams == 2 and transport.streaming
    finally:
        transport.close()
        srv.stop(0)


def test_server_restarted_on_the_same_port_offloads_at_the_first_request(tiny_bundle, head) -> None:
    first = create_server(_settings(tiny_bundle))
    port = first.port
    transport = GrpcTransport(f"127.0.0.1:{port}")
    try:
        assert transport.infer(_request(tiny_bundle, head, "conv1", "a"), 5.0).request_id == "a"
        first.stop(0)
        with pytest.raises(OffloadUnavailable):
            transport.infer(_request(tiny_bundle, head, "conv1", "b"), 1.0)
        second = create_server(ServerSettings(host="127.0.0.1", port=port, bundles=(tiny_bundle.root,),
                                              metrics_port=None, discovery=False, max_queue_delay_us=0))
        try:
            deadline = time.monotonic() + 10
            while not transport.healthy(0.5) and time.monotonic() < deadline:
                time.sleep(0.05)
            # the circuit would close now: the very next offload must work (no stale stream)
            assert transport.infer(_request(tiny_bundle, head, "conv1", "c"), 5.0).request_id == "c"
        finally:
            second.stop(0)
    finally:
        transport.close()


def _pki(tmp: pathlib.Path) -> dict[str, pathlib.Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(cn, key, issuer, issuer_key, *, ca=False, server=False):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    out = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = cert("test-ca", ca_key, ca_name, ca_key, ca=True)
    out["ca"] = tmp / "ca.pem"
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        out[f"{who}_cert"] = tmp / f"{who}.pem"
        out[f"{who}_cert"].write_bytes(cert(who, key, ca.subject, ca_key, server=server).public_bytes(serialization.Encoding.PEM))
        out[f"{who}_key"] = tmp / f"{who}.key"
        out[f"{who}_key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return out


def test_mutual_tls_and_token(tiny_bundle, head, tmp_path: pathlib.Path) -> None:
    pki = _pki(tmp_path)
    creds = load_server_credentials(pki["server_cert"], pki["server_key"], pki["ca"])
    srv = create_server(_settings(tiny_bundle), server_credentials=creds, interceptors=[TokenAuthInterceptor("tok")])
    address = f"localhost:{srv.port}"
    good = GrpcOptions(tls=True, ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"], token="tok")
    req = _request(tiny_bundle, head, "conv2")
    try:
        ok = GrpcTransport(address, good)
        assert ok.infer(req, 5.0).outputs["logits"].shape == (1, 5)
        ok.close()
        no_token = GrpcTransport(address, GrpcOptions(tls=True, ca_file=pki["ca"], cert_file=pki["client_cert"],
                                                      key_file=pki["client_key"], streaming=False))
        with pytest.raises(OffloadUnavailable) as info:
            no_token.infer(req, 5.0)
        assert info.value.code == "UNAUTHENTICATED" and not info.value.retryable
        no_token.close()
        no_cert = GrpcTransport(address, GrpcOptions(tls=True, ca_file=pki["ca"], token="tok"))
        with pytest.raises(OffloadUnavailable):
            no_cert.infer(req, 3.0)
        no_cert.close()
    finally:
        srv.stop(0)


def test_proto_conversion_round_trip() -> None:
    req = OffloadRequest("m.c", "v1", "id9", [WireTensor("t", "UINT8", (1, 2), b"\x01\x02", {"compression": "none"})],
                         ("out",), {"splitinfer_cut": "c", "edge_sent_unix_us": 5, "flag": True, "ratio": 0.5})
    msg = request_to_proto(req)
    assert msg.raw_input_contents == [b"\x01\x02"] and list(msg.inputs[0].shape) == [1, 2]
    assert msg.parameters["edge_sent_unix_us"].int64_param == 5 and msg.parameters["flag"].bool_param
    assert msg.parameters["ratio"].double_param == 0.5 and msg.outputs[0].name == "out"
    resp = inference_pb2.ModelInferResponse(id="id9")
    resp.outputs.add(name="a", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([1.5, 2.5])
    assert response_to_outputs(resp)["a"].tolist() == [[1.5, 2.5]]
    resp.outputs.add(name="b", datatype="FP32", shape=[1, 3])
    resp.raw_output_contents.extend([b"\0" * 8, b"\0" * 8])
    with pytest.raises(ValueError, match=r"output 'b' has 8 raw bytes; expected 12"):  # protos.wire's wording
        response_to_outputs(resp)


def test_fake_transport_runs_real_tails(tiny_bundle, head, tail_server) -> None:
    fake = FakeTransport(tail_server, delay_s=lambda r: 0.2 if r.request_id == "slow" else 0.0)
    assert fake.infer(_request(tiny_bundle, head, "conv2"), 1.0).outputs["logits"].shape == (1, 5)
    with pytest.raises(OffloadUnavailable, match="deadline"):
        fake.infer(_request(tiny_bundle, head, "conv2", "slow"), 0.05)
    fake.down = True
    assert not fake.healthy(1.0)
    with pytest.raises(OffloadUnavailable):
        fake.infer(_request(tiny_bundle, head, "conv2"), 1.0)
