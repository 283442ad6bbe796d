"""TLS, mutual TLS and bearer token against a real server: accepted and rejected cases,
with tritonclient and with raw grpc stubs. Certificates are generated per test session."""
from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import pathlib
from typing import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from cloud_server.security import ClientNameInterceptor, TLSConfigError, TokenAuthInterceptor, bearer_metadata, load_server_credentials
from cloud_server.server import RunningServer, create_server
from cloud_server.settings import ServerSettings
from protos import inference_pb2, inference_pb2_grpc

MODEL = "tiny_net.pool"
TOKEN = "correct-horse-battery-staple"


# --------------------------------------------------------------------------- throwaway PKI


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path
    rogue_ca: pathlib.Path
    rogue_client_cert: pathlib.Path
    rogue_client_key: pathlib.Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> pathlib.Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _write_cert(path: pathlib.Path, cert: x509.Certificate) -> pathlib.Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(cn: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("splitinfer test CA")
    server, server_key = _leaf("localhost", ca, ca_key, server=True)
    client, client_key = _leaf("edge-device-1", ca, ca_key, server=False)
    rogue, rogue_key = _ca("rogue CA")
    rogue_client, rogue_client_key = _leaf("edge-device-1", rogue, rogue_key, server=False)
    return Pki(
        ca=_write_cert(d / "ca.pem", ca),
        server_cert=_write_cert(d / "server.pem", server),
        server_key=_write_key(d / "server.key", server_key),
        client_cert=_write_cert(d / "client.pem", client),
        client_key=_write_key(d / "client.key", client_key),
        rogue_ca=_write_cert(d / "rogue_ca.pem", rogue),
        rogue_client_cert=_write_cert(d / "rogue_client.pem", rogue_client),
        rogue_client_key=_write_key(d / "rogue_client.key", rogue_client_key),
    )


# --------------------------------------------------------------------------- servers


def _settings(bundle, **extra: object) -> ServerSettings:  # type: ignore[no-untyped-def]
    return ServerSettings(port=0, bundles=(bundle.root,), metrics_port=None, discovery=False, grpc_workers=8,
                          **extra)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_server(tiny_bundle, pki: Pki) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    settings = _settings(tiny_bundle, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    creds = load_server_credentials(pki.server_cert, pki.server_key)
    running = create_server(settings, server_credentials=creds)
    yield running
    running.stop(0.5)


@pytest.fixture(scope="module")
def mtls_server(tiny_bundle, pki: Pki) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    settings = _settings(tiny_bundle, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                         tls_client_ca_file=pki.ca)
    creds = load_server_credentials(pki.server_cert, pki.server_key, pki.ca)
    running = create_server(settings, server_credentials=creds)
    yield running
    running.stop(0.5)


@pytest.fixture(scope="module")
def token_server(tiny_bundle) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    running = create_server(_settings(tiny_bundle, auth_token=TOKEN), interceptors=[TokenAuthInterceptor(TOKEN)])
    yield running
    running.stop(0.5)


def _infer(client: grpcclient.InferenceServerClient, headers: dict[str, str] | None = None) -> np.ndarray:
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(1, 8)
    inp = grpcclient.InferInput("pooled", [1, 8], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(MODEL, [inp], headers=headers)
    return result.as_numpy("logits")


def _status(exc: InferenceServerException) -> str:
    return str(exc.status())


# --------------------------------------------------------------------------- TLS


def test_tls_client_trusting_the_ca_is_served(tls_server: RunningServer, pki: Pki) -> None:
    client = grpcclient.InferenceServerClient(f"localhost:{tls_server.port}", ssl=True, root_certificates=str(pki.ca))
    try:
        assert client.is_server_live()
        assert _infer(client).shape == (1, 5)
    finally:
        client.close()


def test_tls_raw_grpc_secure_channel(tls_server: RunningServer, pki: Pki) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    with grpc.secure_channel(f"localhost:{tls_server.port}", creds) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(inference_pb2.ServerLiveRequest(), timeout=10).live


def test_tls_rejects_plaintext_client(tls_server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tls_server.port}") as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ServerLive(inference_pb2.ServerLiveRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_rejects_client_trusting_another_ca(tls_server: RunningServer, pki: Pki) -> None:
    client = grpcclient.InferenceServerClient(
        f"localhost:{tls_server.port}", ssl=True, root_certificates=str(pki.rogue_ca)
    )
    try:
        with pytest.raises(InferenceServerException) as info:
            client.is_server_live(client_timeout=5)
        assert "UNAVAILABLE" in _status(info.value)
    finally:
        client.close()


# --------------------------------------------------------------------------- mutual TLS


def test_mtls_client_with_certificate_from_the_ca_is_served(mtls_server: RunningServer, pki: Pki) -> None:
    client = grpcclient.InferenceServerClient(
        f"localhost:{mtls_server.port}", ssl=True, root_certificates=str(pki.ca),
        private_key=str(pki.client_key), certificate_chain=str(pki.client_cert),
    )
    try:
        assert client.is_server_ready()
        assert _infer(client).shape == (1, 5)
    finally:
        client.close()


def test_mtls_rejects_client_without_certificate(mtls_server: RunningServer, pki: Pki) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    with grpc.secure_channel(f"localhost:{mtls_server.port}", creds) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ServerLive(inference_pb2.ServerLiveRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_rejects_client_certificate_from_another_ca(mtls_server: RunningServer, pki: Pki) -> None:
    client = grpcclient.InferenceServerClient(
        f"localhost:{mtls_server.port}", ssl=True, root_certificates=str(pki.ca),
        private_key=str(pki.rogue_client_key), certificate_chain=str(pki.rogue_client_cert),
    )
    try:
        with pytest.raises(InferenceServerException) as info:
            client.is_server_live(client_timeout=5)
        assert "UNAVAILABLE" in _status(info.value)
    finally:
        client.close()


@pytest.mark.parametrize("allowed, served", [(("edge-device-1", "edge-device-9"), True), (("edge-device-2",), False)])
def test_mtls_client_names_restrict_which_certificates_are_served(
    tiny_bundle, pki: Pki, allowed: tuple[str, ...], served: bool  # type: ignore[no-untyped-def]
) -> None:
    """A certificate the CA signed is served only when its name is listed; health stays open."""
    settings = _settings(tiny_bundle, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                         tls_client_ca_file=pki.ca, tls_client_names=allowed)
    creds = load_server_credentials(pki.server_cert, pki.server_key, pki.ca)
    running = create_server(settings, server_credentials=creds, interceptors=[ClientNameInterceptor(allowed)])
    client = grpcclient.InferenceServerClient(
        f"localhost:{running.port}", ssl=True, root_certificates=str(pki.ca),
        private_key=str(pki.client_key), certificate_chain=str(pki.client_cert),
    )
    try:
        if served:
            assert _infer(client).shape == (1, 5)
        else:
            with pytest.raises(InferenceServerException) as info:
                _infer(client)
            assert "PERMISSION_DENIED" in _status(info.value)
            assert "edge-device-1" in info.value.message() and "tls_client_names" in info.value.message()
            channel_creds = grpc.ssl_channel_credentials(
                pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
            )
            with grpc.secure_channel(f"localhost:{running.port}", channel_creds) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        client.close()
        running.stop(0.5)


def test_client_names_need_mutual_tls(tiny_bundle, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="tls_client_names .*needs tls_client_ca_file"):
        _settings(tiny_bundle, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                  tls_client_names=("edge-device-1",))


# --------------------------------------------------------------------------- bearer token


@pytest.fixture(scope="module")
def token_client(token_server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{token_server.port}")
    yield client
    client.close()


def test_token_accepted_with_tritonclient_headers(token_client: grpcclient.InferenceServerClient) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    assert token_client.is_server_live(headers=headers)
    assert token_client.get_model_metadata(MODEL, headers=headers).name == MODEL
    assert _infer(token_client, headers).shape == (1, 5)


@pytest.mark.parametrize(
    "headers, reason",
    [
        (None, "missing 'authorization'"),
        ({"authorization": "Bearer wrong-token"}, "not valid"),
        ({"authorization": f"Bearer {TOKEN}x"}, "not valid"),
        ({"authorization": f"Bearer {TOKEN[:-1]}"}, "not valid"),
        ({"authorization": f"Basic {TOKEN}"}, "does not start with 'Bearer '"),
        ({"authorization": TOKEN}, "expected 'Bearer <token>'"),
    ],
)
def test_token_rejected_with_unauthenticated(
    token_client: grpcclient.InferenceServerClient, headers: dict[str, str] | None, reason: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(token_client, headers)
    assert "UNAUTHENTICATED" in _status(info.value)
    assert reason in info.value.message()
    assert TOKEN not in info.value.message()
    assert TOKEN[:8] not in info.value.message()  # not even a prefix (a token sent without 'Bearer ')


def test_token_raw_grpc_unary_and_stream(token_server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(inference_pb2.ServerLiveRequest(), metadata=bearer_metadata(TOKEN), timeout=10).live
        with pytest.raises(grpc.RpcError) as info:
            stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        request = inference_pb2.ModelInferRequest(model_name=MODEL)
        tensor = request.inputs.add(name="pooled", datatype="FP32", shape=[1, 8])
        del tensor
        request.raw_input_contents.append(np.ones((1, 8), np.float32).tobytes())
        answers = list(stub.ModelStreamInfer(iter([request]), metadata=bearer_metadata(TOKEN), timeout=10))
        assert answers and not answers[0].error_message
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ModelStreamInfer(iter([request]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_exempt_but_reflection_needs_the_token(token_server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as info:
            list(refl.ServerReflectionInfo(iter([ask]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(refl.ServerReflectionInfo(iter([ask]), metadata=bearer_metadata(TOKEN), timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert "inference.GRPCInferenceService" in names


# --------------------------------------------------------------------------- configuration errors


def test_only_cert_or_only_key_is_refused_naming_the_missing_half(pki: Pki) -> None:
    with pytest.raises(TLSConfigError, match="tls_key_file is missing"):
        load_server_credentials(pki.server_cert, None)
    with pytest.raises(TLSConfigError, match="tls_cert_file is missing"):
        load_server_credentials(None, pki.server_key)
    with pytest.raises(TLSConfigError, match="tls_client_ca_file .* without tls_cert_file"):
        load_server_credentials(None, None, pki.ca)
    assert load_server_credentials(None, None) is None


def test_unreadable_or_non_pem_files_are_named(pki: Pki, tmp_path: pathlib.Path) -> None:
    with pytest.raises(TLSConfigError, match="tls_cert_file .*nope.pem.* cannot be read"):
        load_server_credentials(tmp_path / "nope.pem", pki.server_key)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    with pytest.raises(TLSConfigError, match="tls_key_file .*junk.key.* is not a PEM file"):
        load_server_credentials(pki.server_cert, junk)
    # a key given where the certificate belongs is caught too
    with pytest.raises(TLSConfigError, match="tls_cert_file .*containing -----BEGIN CERTIFICATE-----"):
        load_server_credentials(pki.server_key, pki.server_key)


def test_interceptor_refuses_an_empty_token() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        TokenAuthInterceptor("")
