"""Open Inference Protocol datatypes <-> numpy dtypes, and raw tensor (de)serialization.

Raw tensors are little-endian and row-major; BYTES elements are each prefixed by a
4-byte little-endian length.
"""
from __future__ import annotations

import struct

import numpy as np

from protos.errors import DatatypeError, WireError

_TO_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_FROM_NUMPY = {dtype.newbyteorder("="): name for name, dtype in _TO_NUMPY.items()}

# ONNX TensorProto element types, for code that only has onnxruntime's type strings.
ORT_TYPE_TO_DATATYPE = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def to_numpy_dtype(datatype: str) -> np.dtype:
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise DatatypeError(
            f"datatype {datatype!r} has no fixed-size numpy dtype; expected one of {sorted(_TO_NUMPY)}"
        ) from None


def from_numpy_dtype(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _FROM_NUMPY[dtype.newbyteorder("=")]
    except KeyError:
        raise DatatypeError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def element_size(datatype: str) -> int:
    return to_numpy_dtype(datatype).itemsize


def serialize_bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def deserialize_bytes_tensor(raw: bytes) -> list[bytes]:
    """Split a raw BYTES tensor; WireError if a length prefix runs past the end."""
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise WireError(f"BYTES tensor truncated: {len(raw) - pos} bytes left at offset {pos}, need a 4-byte length")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise WireError(f"BYTES element at offset {pos - 4} claims {size} bytes but only {len(raw) - pos} remain")
        items.append(raw[pos : pos + size])
        pos += size
    return items


def numpy_dtype_for_ort_type(ort_type: str) -> np.dtype | None:
    """numpy dtype of an onnxruntime type string such as ``tensor(float)``; None for strings and unknowns."""
    datatype = ORT_TYPE_TO_DATATYPE.get(ort_type)
    if datatype is None or datatype == "BYTES":
        return None
    return _TO_NUMPY[datatype]
