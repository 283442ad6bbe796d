"""protos.wire: raw and typed tensors, compression and parameters, as tables."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from protos import inference_pb2, wire
from protos.errors import DatatypeError, WireError


@pytest.mark.parametrize("arr", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(6, dtype=np.uint8).reshape(1, 2, 3),
    np.array([[-1, 2]], dtype=np.int64),
    np.array([1.5, -2.25], dtype=np.float16),
    np.array([True, False]),
])
def test_raw_round_trip_keeps_dtype_shape_and_values(arr: np.ndarray) -> None:
    datatype, raw = wire.array_to_raw(arr)
    back = wire.array_from_raw(datatype, arr.shape, raw)
    assert isinstance(back, np.ndarray)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_bytes_tensor_round_trip() -> None:
    datatype, raw = wire.array_to_raw(np.array([b"hello", b"", b"\xff\xd8"], dtype=object))
    assert datatype == "BYTES"
    assert wire.array_from_raw("BYTES", (3,), raw) == [b"hello", b"", b"\xff\xd8"]


@pytest.mark.parametrize("datatype, shape, raw, compression, fragment", [
    ("FP32", (2, 2), b"\0" * 15, "", "has 15 raw bytes; expected 16 ([2, 2] x 4 bytes of FP32)"),
    ("BYTES", (2,), b"\x05\0\0\0abc", "", "bad BYTES framing"),
    ("BYTES", (2,), b"\x01\0\0\0a", "", "holds 1 BYTES elements; expected 2 for shape [2]"),
    ("FP32", (2,), b"not zlib", "zlib", "are not valid zlib data"),
    ("FP32", (2,), zlib.compress(b"\0" * 64), "zlib", "inflates beyond 8 bytes"),
    ("FP32", (2,), zlib.compress(b"\0" * 8)[:-3], "zlib", "truncated"),
    ("FP32", (2,), b"\0" * 8, "lz4", "has compression 'lz4'; expected 'zlib' or 'none'"),
    ("FP99", (2,), b"\0" * 8, "", "datatype 'FP99' has no fixed-size numpy dtype"),
])
def test_bad_raw_tensors_raise_wire_errors_quoting_the_value(datatype, shape, raw, compression, fragment) -> None:
    with pytest.raises(WireError) as info:
        wire.array_from_raw(datatype, shape, raw, compression=compression)
    assert fragment in str(info.value)


def test_compressed_round_trip_and_unknown_method() -> None:
    arr = np.zeros((4, 8), dtype=np.float32)
    packed = wire.compress(arr.tobytes(), "zlib")
    assert len(packed) < arr.nbytes
    np.testing.assert_array_equal(wire.array_from_raw("FP32", arr.shape, packed, compression="zlib"), arr)
    assert wire.compress(b"abc", "none") == b"abc"
    with pytest.raises(WireError, match="'brotli'"):
        wire.compress(b"abc", "brotli")


@pytest.mark.parametrize("datatype, contents, shape, expected", [
    ("FP32", {"fp32_contents": [1.0, 2.0]}, (2,), np.array([1.0, 2.0], np.float32)),
    ("INT8", {"int_contents": [-3, 4]}, (1, 2), np.array([[-3, 4]], np.int8)),
    ("UINT64", {"uint64_contents": [7]}, (1,), np.array([7], np.uint64)),
])
def test_typed_contents_decode(datatype, contents, shape, expected) -> None:
    got = wire.array_from_contents(datatype, shape, contents)
    assert isinstance(got, np.ndarray) and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("datatype, contents, shape, fragment", [
    ("FP16", {"fp32_contents": [1.0]}, (1,), "FP16/BF16 travel only as raw bytes"),
    ("FP32", {"int_contents": [1]}, (1,), "fills contents ['int_contents']; expected only 'fp32_contents'"),
    ("FP32", {"fp32_contents": [1.0]}, (2,), "has 1 values in fp32_contents; expected 2"),
    ("UINT8", {"uint_contents": [300]}, (1,), "does not fit UINT8"),
])
def test_bad_typed_contents_name_the_problem(datatype, contents, shape, fragment) -> None:
    with pytest.raises(WireError) as info:
        wire.array_from_contents(datatype, shape, contents)
    assert fragment in str(info.value)


def test_contents_from_proto_lists_only_filled_fields() -> None:
    msg = inference_pb2.InferTensorContents(fp32_contents=[1.0], bytes_contents=[b"x"])
    assert wire.contents_from_proto(msg) == {"fp32_contents": [1.0], "bytes_contents": [b"x"]}


@pytest.mark.parametrize("value, field", [
    (True, "bool_param"), (7, "int64_param"), (2.5, "double_param"), ("zlib", "string_param"),
])
def test_parameters_round_trip_through_the_matching_oneof(value, field) -> None:
    request = inference_pb2.ModelInferRequest()
    wire.set_parameters(request.parameters, {"k": value})
    assert request.parameters["k"].WhichOneof("parameter_choice") == field
    assert wire.parameters_from_proto(request.parameters) == {"k": value}
    assert wire.parameter_value(inference_pb2.InferParameter()) is None


def test_datatype_error_is_a_wire_error() -> None:
    assert issubclass(DatatypeError, WireError) and issubclass(WireError, ValueError)
