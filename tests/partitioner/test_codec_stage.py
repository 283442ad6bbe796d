"""Feature-codec variant cuts through the whole path: ``partition --feature-codecs`` on a tiny real
model ships them with their codec in the manifest; the edge's HeadRunner + WireEncoder pack and
entropy-code the codes, our real gRPC server on port 0 unpacks them before the tail, and the answer
equals the shipped head+tail run locally (the wire is lossless)."""
from __future__ import annotations

import pathlib

import numpy as np
import onnxruntime as ort
import pytest

from cloud_server.server import create_server
from cloud_server.settings import ServerSettings
from edge_agent.head import HeadRunner, cut_profiles
from edge_agent.stages.encode import WireEncoder
from edge_agent.transport_grpc import GrpcTransport
from edge_agent.types import OffloadRequest
from partitioner import codec_stage
from partitioner.codec_fit import parse_codec
from protos import bundle as bundle_io
from protos import codec
from protos.bundle import BUNDLE_HASH_PARAMETER, bundle_hash, tail_model_name, tail_model_version
from tests.edge_agent.conftest import first_video_frame
from tests.partitioner.test_pipeline import build_tiny_bundle

#: One bundle per codec family: bit-packed per-channel codes, and shared-step 8-bit codes.
CODECS = (("q4p+zstd",), ("step60+zstd",))


@pytest.fixture(scope="module", params=CODECS, ids=lambda names: names[0])
def coded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    report, _ = build_tiny_bundle(tmp_path_factory.mktemp("codec"), feature_codecs=request.param, gate="absolute",
                                  threshold=0.6)
    return report.bundle


def _variants(bundle: bundle_io.Bundle) -> list:
    return [c for c in bundle.manifest.cuts if c.codec_of]


def test_variant_cuts_ship_with_their_codec(coded) -> None:
    bundle = bundle_io.read_bundle(coded.root)
    variants = _variants(bundle)
    assert variants, f"no codec variant shipped; cuts {bundle.cut_ids}"
    ids = bundle.cut_ids
    for cut in variants:
        base = bundle.cut(cut.codec_of)
        assert ids.index(cut.id) > ids.index(base.id) and cut.order == base.order
        assert cut.codec.name in {n for names in CODECS for n in names} and cut.id == f"{base.id}_{cut.codec.name.replace('+', '_')}"
        assert cut.fidelity.passed and cut.fidelity.value >= 0.6
        enc = cut.tensors[0].encoding
        assert (enc.codec, cut.tensors[0].datatype, enc.bits) == ("lowbit", "UINT8", cut.codec.bits)
        if cut.codec.name.startswith("step"):  # one step for every channel, 8-bit codes, never packed
            assert len(set(enc.scales)) == 1 and (enc.bits, enc.packed_bits) == (8, 0)
        assert cut.wire_bytes == cut.codec.wire_bytes > 0
        assert cut.wire_bytes < base.wire_bytes_by_codec["fp32"] / 4  # at most 8 bits a value, then zstd
        assert cut.codec.needs_splitinfer_server
        assert cut.codec.encode_ms > 0 and cut.codec.decode_ms > 0
        # the codec's costs are in the profile the edge's cost model reads
        assert cut.edge_profiles[-1].head_ms >= cut.codec.encode_ms
    profiles = {p.cut_id: p for p in cut_profiles(bundle)}
    assert all(profiles[c.id].wire_bytes == c.wire_bytes for c in variants)


def test_edge_to_server_round_trip_of_a_packed_zstd_cut(coded) -> None:
    bundle = bundle_io.read_bundle(coded.root)
    variant = next(c for c in _variants(bundle) if c.tensors[0].encoding.compression == "zstd")
    running = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(bundle.root,), metrics_port=None,
                                           discovery=False, max_queue_delay_us=0))
    runner = HeadRunner(bundle, threads=1)
    transport = GrpcTransport(running.address)
    try:
        runner.activate(variant.id)
        frame = first_video_frame()
        out = runner.run_head(variant.id, frame)
        sent = WireEncoder("auto", bundle).encode(out).tensors[0]
        assert sent.parameters["compression"] == "zstd"
        assert len(sent.raw) < len(out.tensors[0].raw)
        enc = variant.tensors[0].encoding
        if enc.packed_bits:
            assert sent.parameters[codec.PACKED_BITS_PARAMETER] == variant.codec.bits
        # the edge sends the bytes protos.codec makes, which are what the partitioner measured
        made, _ = codec.encode_tensor(np.frombuffer(out.tensors[0].raw, np.uint8), packed_bits=enc.packed_bits or 8,
                                      compression="zstd", level=enc.compression_level or 1)
        assert sent.raw == made
        request = OffloadRequest(tail_model_name(bundle.manifest, variant.id), tail_model_version(bundle.manifest),
                                 "codec-1", (sent,), ("logits",),
                                 {"splitinfer_cut": variant.id, BUNDLE_HASH_PARAMETER: bundle_hash(bundle.manifest)})
        answer = transport.infer(request, timeout_s=10.0)
        tail = ort.InferenceSession(str(bundle.path(variant.tail)), providers=["CPUExecutionProvider"])
        codes = np.frombuffer(out.tensors[0].raw, np.uint8).reshape(out.tensors[0].shape)
        want = tail.run(None, {variant.tensors[0].name: codes})[0]
        np.testing.assert_allclose(answer.outputs["logits"], want, rtol=1e-5, atol=1e-5)
        # the same tensor, uncompressed and one byte a code ("none": what stock Triton takes), gives the same
        plain = WireEncoder("none", bundle).encode(out).tensors[0]
        assert plain.raw == out.tensors[0].raw and "compression" not in plain.parameters
        again = transport.infer(OffloadRequest(request.model_name, request.model_version, "codec-2", (plain,),
                                               ("logits",), request.parameters), timeout_s=10.0)
        np.testing.assert_allclose(again.outputs["logits"], want, rtol=1e-5, atol=1e-5)
    finally:
        transport.close()
        running.stop(0)


def test_a_corrupt_packed_tensor_is_refused_naming_it(coded) -> None:
    bundle = bundle_io.read_bundle(coded.root)
    variant = next(c for c in _variants(bundle) if c.tensors[0].encoding.compression == "zstd")
    running = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(bundle.root,), metrics_port=None,
                                           discovery=False, max_queue_delay_us=0))
    runner = HeadRunner(bundle, threads=1)
    transport = GrpcTransport(running.address)
    try:
        sent = WireEncoder("auto", bundle).encode(runner.run_head(variant.id, first_video_frame())).tensors[0]
        import dataclasses

        broken = dataclasses.replace(sent, raw=sent.raw[:-4])
        request = OffloadRequest(tail_model_name(bundle.manifest, variant.id), tail_model_version(bundle.manifest),
                                 "bad-1", (broken,), ("logits",), {BUNDLE_HASH_PARAMETER: bundle_hash(bundle.manifest)})
        with pytest.raises(Exception) as info:
            transport.infer(request, timeout_s=10.0)
        assert variant.tensors[0].name in str(info.value) and "zstd" in str(info.value)
    finally:
        transport.close()
        running.stop(0)


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("q4+zstd", (4, None, "zstd", False, None)),
        ("pca16+q4p", (4, 16, "none", True, None)),
        ("q8", (8, None, "none", False, None)),
        ("pca3+q2p+zlib", (2, 3, "zlib", True, None)),
        ("step70+zstd", (8, None, "zstd", False, 70)),
        ("pca16+step120", (8, 16, "none", False, 120)),
    ],
)
def test_codec_names_parse(name: str, fields: tuple) -> None:
    spec = parse_codec(name)
    assert (spec.bits, spec.rank, spec.compression, spec.packed, spec.step_pct) == fields
    assert spec.name == name


@pytest.mark.parametrize("name", ["q9", "q4+lz4", "pca+q4", "zstd", "", "step0+zstd", "step+zstd", "q4step50",
                                  "step1001"])
def test_bad_codec_names_are_refused_with_the_form(name: str, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="expected|codec bits|codec step_pct"):
        parse_codec(name)
    from tests.partitioner.test_pipeline import tiny_config

    with pytest.raises(ValueError):
        tiny_config(tmp_path / "m.onnx", tmp_path / "b", feature_codecs=(name,))


def test_auto_tries_the_documented_list() -> None:
    assert [s.name for s in codec_stage.codec_specs(("auto",))] == list(codec_stage.AUTO_CODECS)


def test_export_triton_names_the_codec_cuts_that_need_unpacked_codes(coded, tmp_path) -> None:
    from partitioner import triton_export

    bundle = bundle_io.read_bundle(coded.root)
    triton_export.export_triton(bundle.root, tmp_path / "repo")
    readme = (tmp_path / "repo" / "README.md").read_text(encoding="utf-8")
    for cut in _variants(bundle):
        assert f"`{bundle_io.tail_model_name(bundle.manifest, cut.id)}`: codec `{cut.codec.name}`" in readme
    assert 'server.compression = "none"' in readme
