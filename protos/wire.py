"""Wire tensors of the Open Inference Protocol: the one copy every side uses.

* raw tensors (little-endian, row-major) to and from numpy, BYTES framing included
  (:func:`array_to_raw`, :func:`array_from_raw`);
* typed ``InferTensorContents`` to numpy (:data:`CONTENTS_FIELD`, :func:`array_from_contents`);
* optional compression of a raw tensor, announced by the tensor parameter
  ``compression`` ("zlib" or "zstd"; :func:`compress`, :func:`decompress`; only
  splitinfer's server understands it, stock Triton does not);
* ``InferParameter`` values to and from plain Python values.

Every decoding failure raises :class:`~protos.errors.WireError` whose message quotes
the bad value and what was expected; callers add the model and tensor names.
"""
from __future__ import annotations

import math
import zlib
from typing import Any, Mapping, MutableMapping, Sequence, Union

import numpy as np
import zstandard

from protos import datatypes, inference_pb2
from protos.errors import WireError

__all__ = [
    "COMPRESSIONS",
    "CONTENTS_FIELD",
    "CONTENT_FIELDS",
    "array_from_contents",
    "array_from_raw",
    "array_to_raw",
    "compress",
    "contents_from_proto",
    "decompress",
    "parameter_value",
    "parameters_from_proto",
    "set_parameter",
    "set_parameters",
]

#: Which InferTensorContents field carries each datatype (FP16/BF16 travel only as raw bytes).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: Every field of InferTensorContents, in field-number order.
CONTENT_FIELDS = (
    "bool_contents", "int_contents", "int64_contents", "uint_contents",
    "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents",
)
#: Values of the ``compression`` tensor parameter ("" and "none" mean uncompressed).
COMPRESSIONS = ("", "none", "zlib", "zstd")

Decoded = Union[np.ndarray, "list[bytes]"]


def shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


# --------------------------------------------------------------------------- parameters


def parameter_value(param: inference_pb2.InferParameter) -> Any:
    """The value an InferParameter holds (bool, int, str or float); None when unset."""
    which = param.WhichOneof("parameter_choice")
    return getattr(param, which) if which is not None else None


def parameters_from_proto(params: Mapping[str, inference_pb2.InferParameter]) -> dict[str, Any]:
    """InferParameter map -> plain Python values; unset ones are skipped."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        value = parameter_value(param)
        if value is not None:
            out[key] = value
    return out


def set_parameter(param: inference_pb2.InferParameter, value: Any) -> None:
    """Store ``value`` in the oneof field that fits it (bool before int: bool is an int)."""
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)


def set_parameters(target: MutableMapping[str, inference_pb2.InferParameter], values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        set_parameter(target[key], value)


# --------------------------------------------------------------------------- compression


def compress(raw: bytes, method: str, *, level: int = 1) -> bytes:
    """``raw`` compressed with ``method`` ("zlib" or "zstd"), or unchanged for "" / "none"."""
    if method in ("", "none"):
        return raw
    if method == "zlib":
        return zlib.compress(raw, level)
    if method == "zstd":
        return zstandard.ZstdCompressor(level=level).compress(raw)
    raise WireError(f"compression {method!r} is not one of {list(COMPRESSIONS[1:])}")


def decompress(raw: bytes, method: str, limit_bytes: int) -> bytes:
    """Undo :func:`compress`; never inflates beyond ``limit_bytes`` (a zip bomb is an error)."""
    if method in ("", "none"):
        return raw
    if method == "zstd":
        return _zstd_decompress(raw, limit_bytes)
    if method != "zlib":
        raise WireError(f"has compression {method!r}; expected 'zlib' or 'none' or 'zstd'")
    decompressor = zlib.decompressobj()
    try:
        data = decompressor.decompress(raw, limit_bytes + 1)
    except zlib.error as exc:
        raise WireError(
            f"{len(raw)} bytes are not valid zlib data ({exc}); expected zlib-compressed raw tensor bytes"
        ) from None
    if len(data) > limit_bytes or decompressor.unconsumed_tail:
        raise WireError(f"zlib data inflates beyond {limit_bytes} bytes; expected at most the tensor's size")
    if not decompressor.eof:
        raise WireError("zlib stream is truncated; expected a complete stream")
    return data


def _zstd_decompress(raw: bytes, limit_bytes: int) -> bytes:
    """One zstd frame that declares its size (as :func:`compress` writes it), inflated only when that fits."""
    try:
        declared = zstandard.frame_content_size(raw)
        if declared < 0:
            raise WireError("zstd frame does not declare its content size; expected a frame written with it")
        if declared > limit_bytes:
            raise WireError(f"zstd data declares {declared} bytes; expected at most the tensor's {limit_bytes}")
        return zstandard.ZstdDecompressor().decompress(raw)
    except zstandard.ZstdError as exc:
        raise WireError(
            f"{len(raw)} bytes are not a complete zstd frame ({exc}); expected zstd-compressed raw tensor bytes"
        ) from None


# --------------------------------------------------------------------------- raw tensors


def array_to_raw(arr: np.ndarray) -> tuple[str, bytes]:
    """(datatype, raw bytes) of an array; strings and objects become a BYTES tensor."""
    arr = np.asarray(arr)
    if arr.dtype.kind in ("O", "S", "U"):
        items = [x if isinstance(x, bytes) else str(x).encode() for x in arr.reshape(-1)]
        return "BYTES", datatypes.serialize_bytes_tensor(items)
    datatype = datatypes.from_numpy_dtype(arr.dtype)
    return datatype, np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def array_from_raw(
    datatype: str, shape: Sequence[int], raw: bytes, *, compression: str = "", limit_bytes: int | None = None
) -> Decoded:
    """A raw tensor -> numpy array of ``shape`` (BYTES -> list of elements).

    ``compression`` is the tensor's ``compression`` parameter; ``limit_bytes`` bounds what a
    compressed BYTES tensor may inflate to (fixed-size tensors are bounded by their shape).
    """
    count = math.prod(shape)
    if datatype == "BYTES":
        limit = limit_bytes if limit_bytes is not None else max(len(raw), 1) * 1024
        data = decompress(raw, compression, limit)
        try:
            items = datatypes.deserialize_bytes_tensor(data)
        except WireError as exc:
            raise WireError(
                f"bad BYTES framing: {exc}; expected each element prefixed by a 4-byte little-endian length"
            ) from None
        if len(items) != count:
            raise WireError(f"holds {len(items)} BYTES elements; expected {count} for shape {shape_str(shape)}")
        return items
    dtype = datatypes.to_numpy_dtype(datatype)
    expected = count * dtype.itemsize
    data = decompress(raw, compression, expected)
    if len(data) != expected:
        raise WireError(
            f"has {len(data)} raw bytes; expected {expected} "
            f"({shape_str(shape)} x {dtype.itemsize} bytes of {datatype})"
        )
    return np.frombuffer(data, dtype=dtype).reshape(tuple(shape))


# --------------------------------------------------------------------------- typed contents


def contents_from_proto(contents: inference_pb2.InferTensorContents) -> dict[str, list[Any]]:
    """The non-empty typed-contents fields of a tensor, by field name."""
    return {name: list(getattr(contents, name)) for name in CONTENT_FIELDS if len(getattr(contents, name))}


def array_from_contents(datatype: str, shape: Sequence[int], contents: Mapping[str, Sequence[Any]]) -> Decoded:
    """Typed contents (``{field: values}``) -> numpy array of ``shape`` (BYTES -> list of elements)."""
    if datatype not in CONTENTS_FIELD:
        raise WireError(
            f"of datatype {datatype} came in 'contents'; expected raw contents (FP16/BF16 travel only as raw bytes)"
        )
    expected_field = CONTENTS_FIELD[datatype]
    fields = sorted(contents)
    if fields != [expected_field]:
        raise WireError(f"of datatype {datatype} fills contents {fields}; expected only {expected_field!r}")
    values = contents[expected_field]
    count = math.prod(shape)
    if len(values) != count:
        raise WireError(
            f"has {len(values)} values in {expected_field}; expected {count} for shape {shape_str(shape)}"
        )
    if datatype == "BYTES":
        return [bytes(v) for v in values]
    dtype = datatypes.to_numpy_dtype(datatype)
    try:
        return np.asarray(values, dtype=dtype).reshape(tuple(shape))
    except OverflowError as exc:
        raise WireError(f"a value in {expected_field} does not fit {datatype} ({exc})") from None
