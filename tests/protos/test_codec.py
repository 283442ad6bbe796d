"""protos.codec: bit packing and entropy coding of low-bit codes round-trip exactly, shrink the
bytes, refuse bad input with the value named; the manifest's lowbit encodings are checked."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from protos import bundle as bundle_io
from protos import codec, wire
from protos.errors import ManifestError, WireError
from tests.protos.test_bundle import write_sample_bundle


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("count", [1, 7, 8, 9, 1001])
def test_pack_bits_round_trips_every_width_and_length(bits: int, count: int) -> None:
    rng = np.random.default_rng(bits * 1000 + count)
    codes = rng.integers(0, 1 << bits, size=count, dtype=np.uint8)
    packed = codec.pack_bits(codes, bits)
    assert len(packed) == codec.packed_size(count, bits) == (count * bits + 7) // 8
    assert np.array_equal(codec.unpack_bits(packed, bits, count), codes)


def test_packing_is_msb_first_and_zero_padded() -> None:
    assert codec.pack_bits(np.array([1, 2, 3], np.uint8), 4) == bytes([0x12, 0x30])
    assert codec.pack_bits(np.array([0b101, 0b011, 0b110], np.uint8), 3) == bytes([0b10101111, 0b00000000])


@pytest.mark.parametrize(
    ("codes", "bits", "match"),
    [
        (np.array([16], np.uint8), 4, "a code is 16; expected codes below 16 for 4-bit packing"),
        (np.array([1], np.uint8), 9, "packed_bits 9 is not an integer in 1..8"),
        (np.array([1], np.uint8), True, "packed_bits True"),
    ],
)
def test_pack_bits_refuses_bad_input(codes: np.ndarray, bits, match: str) -> None:
    with pytest.raises(WireError, match=match):
        codec.pack_bits(codes, bits)


@pytest.mark.parametrize(
    ("packed_bits", "compression"),
    [(8, "none"), (4, "none"), (8, "zstd"), (4, "zstd"), (3, "zlib"), (5, "zstd")],
)
def test_encode_decode_tensor_round_trip_table(packed_bits: int, compression: str) -> None:
    rng = np.random.default_rng(7)
    codes = np.clip(rng.normal(8, 2, size=(1, 6, 14, 14)), 0, (1 << min(packed_bits, 8)) - 1).astype(np.uint8)
    codes &= np.uint8((1 << packed_bits) - 1)
    raw, params = codec.encode_tensor(codes, packed_bits=packed_bits, compression=compression)
    if packed_bits != 8:
        assert params[codec.PACKED_BITS_PARAMETER] == packed_bits
    if compression != "none":
        assert params["compression"] == compression
    back = codec.decode_tensor(raw, params, codes.shape)
    assert back.dtype == np.uint8 and np.array_equal(back, codes)


def test_low_bit_codes_travel_in_fewer_bytes_than_one_byte_each() -> None:
    rng = np.random.default_rng(3)
    codes = np.clip(np.rint(rng.normal(7.5, 2.0, size=(1, 24, 56, 56))), 0, 15).astype(np.uint8)
    raw_packed, _ = codec.encode_tensor(codes, packed_bits=4)
    raw_zstd, _ = codec.encode_tensor(codes, compression="zstd")
    assert len(raw_packed) == codes.size // 2
    # a normal with sigma 2 holds about 3 bits of entropy per code: zstd gets below half a byte
    assert len(raw_zstd) < 0.5 * codes.size


@pytest.mark.parametrize(("size", "window_log"), [(1, 10), (1024, 10), (1025, 11), (23104, 15), (75264, 17),
                                                  (1 << 30, 22)])
def test_zstd_code_window_holds_the_tensor(size: int, window_log: int) -> None:
    params = codec.zstd_code_parameters(size)
    assert params.window_log == window_log and params.min_match == codec.CODE_MIN_MATCH


@pytest.mark.parametrize("count", [1, 500, 23104, 200_000])
def test_compress_codes_is_plain_zstd_that_wire_decompresses(count: int) -> None:
    rng = np.random.default_rng(count)
    data = np.clip(np.rint(rng.normal(128, 3, count)), 0, 255).astype(np.uint8).tobytes()
    packed = codec.compress_codes(data, "zstd", level=1)
    assert wire.decompress(packed, "zstd", count) == data
    # levels above 1 are zstd's own (wire.compress); zlib is untouched
    assert codec.compress_codes(data, "zstd", level=3) == wire.compress(data, "zstd", level=3)
    assert codec.compress_codes(data, "zlib", level=1) == wire.compress(data, "zlib", level=1)


def test_code_parameters_beat_zstd_level_1_on_centred_codes() -> None:
    rng = np.random.default_rng(11)  # 64 channels of Laplacian codes around 128, spreads 1..6 codes
    spread = rng.uniform(1, 6, size=(1, 64, 1, 1))
    codes = np.clip(np.rint(128 + rng.laplace(0, 1, (1, 64, 19, 19)) * spread), 0, 255).astype(np.uint8)
    tuned = codec.compress_codes(codes.tobytes(), "zstd", level=1)
    assert len(tuned) < len(wire.compress(codes.tobytes(), "zstd", level=1))


@pytest.mark.parametrize(
    ("raw", "params", "shape", "match"),
    [
        (b"\x00" * 3, {"packed_bits": 4}, (1, 8), "has 3 packed bytes; expected 4 \\(8 codes x 4 bits\\)"),
        (b"\x00" * 4, {"packed_bits": 0}, (1, 8), "packed_bits 0 is not an integer in 1..8"),
        (b"junk", {"compression": "zstd"}, (4,), "not a complete zstd frame"),
        (wire.compress(b"\x00" * 5000, "zstd"), {"compression": "zstd"}, (10,), "declares 5000 bytes"),
        (wire.compress(b"\x00" * 5000, "zlib"), {"compression": "zlib"}, (10,), "inflates beyond 10 bytes"),
        (b"\x00" * 4, {"compression": "lzma"}, (4,), "compression 'lzma'"),
    ],
)
def test_decode_tensor_names_the_bad_value(raw: bytes, params: dict, shape: tuple, match: str) -> None:
    with pytest.raises(WireError, match=match):
        codec.decode_tensor(raw, params, shape)


def test_lowbit_params_quantize_per_channel_and_saturate() -> None:
    p = codec.LowBitParams(bits=2, scales=(0.5, 1.0), zero_points=(1, 0))
    x = np.array([[[-0.5, 0.0, 0.5, 9.0]], [[-1.0, 0.0, 1.0, 9.0]]], np.float32)[None]  # (1, 2, 1, 4)
    q = p.quantize(x)
    assert q.tolist() == [[[[0, 1, 2, 3]], [[0, 0, 1, 3]]]]
    assert p.dequantize(q)[0, 0, 0].tolist() == [-0.5, 0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 1, "scales": (1.0,), "zero_points": (0,)}, "bits: 1 is not an integer in 2..8"),
        ({"bits": 4, "scales": (0.0,), "zero_points": (0,)}, r"scales: \[0.0\] are not finite numbers > 0"),
        ({"bits": 4, "scales": (1.0, 1.0), "zero_points": (0,)}, "zero_points: has 1 values; expected 2"),
        ({"bits": 4, "scales": (1.0,), "zero_points": (16,)}, r"zero_points: \[16\] are outside 0..15 for 4 bits"),
    ],
)
def test_lowbit_params_refuse_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codec.LowBitParams(**kwargs)


# --------------------------------------------------------------------------- the manifest


def _lowbit(data: dict, **encoding) -> None:
    tensor = data["cuts"][1]["tensors"][0]
    tensor["encoding"] = {"codec": "lowbit", "compression": "zstd", "bits": 4, "scales": [0.1] * 4,
                          "zero_points": [8] * 4, "axis": 1, **encoding}


def _rewrite(root: pathlib.Path, edit) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_lowbit_cut_reads_back(tmp_path: pathlib.Path) -> None:
    write_sample_bundle(tmp_path / "b")
    _rewrite(tmp_path / "b", lambda d: _lowbit(d, packed_bits=4))
    enc = bundle_io.read_bundle(tmp_path / "b").cut("conv1").tensors[0].encoding
    assert (enc.codec, enc.bits, enc.packed_bits, enc.compression) == ("lowbit", 4, 4, "zstd")
    assert list(enc.zero_points) == [8, 8, 8, 8]


@pytest.mark.parametrize(
    ("encoding", "field", "match"),
    [
        ({"bits": 9}, "encoding.bits", "9 is not an integer in 2..8"),
        ({"scales": [0.1, 0.1, -1.0, 0.1]}, "encoding.scales", r"\[-1.0\] are not finite numbers > 0"),
        ({"scales": [0.1] * 3, "zero_points": [8] * 3}, "encoding.scales", "has 3 values; expected 4"),
        ({"zero_points": [8, 8, 8, 20]}, "encoding.zero_points", r"\[20\] are outside 0..15"),
        ({"axis": 7}, "encoding.axis", "7 is not a dimension of shape"),
        ({"packed_bits": 3}, "encoding.packed_bits", "expected 0 \\(unpacked\\) or bits = 4"),
        ({"compression": "brotli"}, "encoding.compression", "'brotli' is not one of"),
        ({"codec": "int8", "scale": 0.5}, "encoding.bits", "takes no bits/scales/packed_bits"),
    ],
)
def test_bad_lowbit_encoding_names_the_field(tmp_path: pathlib.Path, encoding: dict, field: str, match: str) -> None:
    write_sample_bundle(tmp_path / "b")
    _rewrite(tmp_path / "b", lambda d: _lowbit(d, **encoding))
    with pytest.raises(ManifestError, match=match) as info:
        bundle_io.read_bundle(tmp_path / "b")
    assert f"cuts[1].tensors[0].{field}" in str(info.value)
