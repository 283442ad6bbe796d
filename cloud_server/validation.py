"""Judge a request against its model and decode it into the arrays the model is fed.

Pure: takes a domain `InferRequest` and a `TailModel`, returns `{graph input: array}` or raises
`InvalidInput` whose message names the model and input, quotes the bad value and the expected one.
No clocks, threads or sockets. Checks, in order: input names (unknown, repeated, missing), the number
of raw entries, each input's datatype and shape, where its data came from (raw entry or typed contents,
exactly one), the data itself (raw byte length, BYTES framing, optional zlib compression announced by
the tensor parameter `compression`, typed contents' field and count; all decoded by `protos.wire`), that
the inputs agree on the batch size, and for the 'input' cut that each element is a JPEG of sane size,
which is then decoded and preprocessed as the bundle's `InputSpec` says.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cloud_server.domain import InferInput, InferRequest, TailModel, TensorSignature
from cloud_server.errors import InvalidInput, Unsupported, shorten
from protos.errors import WireError
from protos.preprocess import decode_jpeg, preprocess_bgr
from protos.wire import array_from_contents, array_from_raw

__all__ = ["decode_request", "requested_outputs", "jpeg_size_px", "MAX_FRAME_PIXELS", "MAX_BYTES_ELEMENTS"]

#: Largest frame the 'input' cut decodes (a JPEG header can claim 65535 x 65535 in a few bytes).
MAX_FRAME_PIXELS = 8192 * 8192

#: Most elements one BYTES tensor may hold (checked from its shape before any element is split out).
MAX_BYTES_ELEMENTS = 65536

#: Tensor parameters of Triton's shared-memory extension, which this server does not serve.
_SHARED_MEMORY_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
#: Request parameters of Triton's sequence batcher, which this server does not serve.
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")

_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def requested_outputs(model: TailModel, request: InferRequest) -> set[str]:
    """The output names the client asked for (empty = all); InvalidInput for a name the model lacks."""
    names = {o.name for o in model.outputs}
    requested = set(request.requested_outputs)
    unknown = sorted(requested - names)
    if unknown:
        raise InvalidInput(f"model {model.name!r} has no output {shorten(unknown[0])}; expected one of {sorted(names)}")
    for name, count in request.output_classes.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidInput(
                f"model {model.name!r} output {name!r} parameter 'classification' is {shorten(count)}; "
                "expected a number of classes >= 1"
            )
    return requested


def decode_request(
    model: TailModel, request: InferRequest, *, limit_bytes: int, max_batch_size: int | None = None
) -> dict[str, np.ndarray]:
    """Check `request` against the model signature; return the arrays to feed, keyed by graph input.

    `limit_bytes` bounds what a compressed BYTES tensor may inflate to (fixed-size tensors are bounded
    by their shape); `max_batch_size` bounds the rows of a batched model's request (None = no bound).
    Element counts are checked from the shapes before any data is decoded. BYTES tensors reach the model
    as text (ONNX Runtime's string tensors), so their elements must be UTF-8."""
    _check_unsupported(model, request)
    by_name = _check_names(model, request)
    raws = request.raw_input_contents
    if raws and len(raws) != len(request.inputs):
        raise InvalidInput(
            f"request has {len(raws)} raw_input_contents for {len(request.inputs)} inputs; "
            "expected one raw entry per input, in input order"
        )
    arrays: dict[str, np.ndarray | list[bytes]] = {}
    batch_sizes = set()
    for i, inp in enumerate(request.inputs):
        sig = by_name[inp.name]
        if inp.datatype != sig.datatype:
            raise InvalidInput(
                f"model {model.name!r} input {inp.name!r} has datatype {shorten(inp.datatype)}; "
                f"expected {sig.datatype!r}"
            )
        _check_shape(model, inp, sig)
        if model.batched:
            batch_sizes.add(inp.shape[0])
            if max_batch_size is not None and inp.shape[0] > max_batch_size:
                raise InvalidInput(
                    f"model {model.name!r} input {inp.name!r} has batch size {inp.shape[0]}; "
                    f"expected at most max_batch_size={max_batch_size}"
                )
        _check_count(model, inp, raws[i] if raws else None)
        arrays[inp.name] = _decode_input(model, inp, raws[i] if raws else None, limit_bytes)
    if len(batch_sizes) > 1:
        raise InvalidInput(
            f"model {model.name!r} inputs disagree on the batch size: {sorted(batch_sizes)}; expected one size"
        )
    shapes = {inp.name: inp.shape for inp in request.inputs}
    feeds: dict[str, np.ndarray] = {}
    reshapes = model.input_reshapes or (None,) * len(model.inputs)
    for sig, feed, reshape in zip(model.inputs, model.feed_names, reshapes):
        value = arrays[sig.name]
        if model.input_spec is not None:
            feeds[feed] = _decode_frames(model, sig.name, list(value))
            continue
        if isinstance(value, list):
            array = np.array(_texts(model, sig.name, value), dtype=object).reshape(shapes[sig.name])
        else:
            array = value
        if reshape is not None:  # config.pbtxt `reshape`: the wire carries `dims`, the model takes `reshape`
            lead = array.shape[:1] if model.batched else ()
            array = array.reshape(lead + reshape)
        feeds[feed] = array
    return feeds


def _texts(model: TailModel, name: str, items: list[bytes]) -> list[str]:
    try:
        return [item.decode("utf-8") for item in items]
    except UnicodeDecodeError:
        bad = next(i for i, item in enumerate(items) if not _is_utf8(item))
        raise InvalidInput(
            f"model {model.name!r} BYTES input {name!r} element {bad} is not UTF-8 text "
            f"(starts with 0x{items[bad][:8].hex()}); expected UTF-8, as ONNX Runtime string tensors hold text"
        ) from None


def _is_utf8(item: bytes) -> bool:
    try:
        item.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_unsupported(model: TailModel, request: InferRequest) -> None:
    """Triton features we do not serve answer UNIMPLEMENTED, naming the feature."""
    for key in _SEQUENCE_PARAMETERS:
        if key in request.parameters:
            raise Unsupported(
                f"model {model.name!r}: request parameter {key!r} asks for sequence batching, which this server "
                "does not serve; expected stateless requests"
            )
    for inp in request.inputs:
        for key in _SHARED_MEMORY_PARAMETERS:
            if key in inp.parameters:
                raise Unsupported(
                    f"model {model.name!r} input {shorten(inp.name)} uses {key!r}: shared memory is not served "
                    "by this server; expected the data in raw_input_contents or contents"
                )


def _check_count(model: TailModel, inp: InferInput, raw: bytes | None) -> None:
    """Element counts implied by the shape, checked before any decoding work."""
    if inp.datatype != "BYTES":
        return
    count = math.prod(inp.shape)
    if count > MAX_BYTES_ELEMENTS:
        raise InvalidInput(
            f"model {model.name!r} BYTES input {inp.name!r} has shape {_shape_str(inp.shape)} = {count} elements; "
            f"expected at most {MAX_BYTES_ELEMENTS}"
        )
    compressed = bool(inp.parameters.get("compression"))
    if raw is not None and not compressed and count * 4 > len(raw):
        raise InvalidInput(
            f"model {model.name!r} BYTES input {inp.name!r} has shape {_shape_str(inp.shape)} = {count} elements "
            f"in {len(raw)} raw bytes; expected at least 4 bytes (the length prefix) per element"
        )


def _check_names(model: TailModel, request: InferRequest) -> dict[str, TensorSignature]:
    by_name = {sig.name: sig for sig in model.inputs}
    seen: set[str] = set()
    for inp in request.inputs:
        if inp.name not in by_name:
            raise InvalidInput(
                f"model {model.name!r} has no input {shorten(inp.name)}; expected inputs {sorted(by_name)}"
            )
        if inp.name in seen:
            raise InvalidInput(f"model {model.name!r} input {inp.name!r} appears twice; expected once")
        seen.add(inp.name)
    missing = sorted(set(by_name) - seen)
    if missing:
        raise InvalidInput(
            f"model {model.name!r} request lacks input {missing[0]!r}; expected inputs {sorted(by_name)}, "
            f"got {sorted(seen)}"
        )
    return by_name


def _check_shape(model: TailModel, inp: InferInput, sig: TensorSignature) -> None:
    shape = inp.shape
    ok = len(shape) == len(sig.shape) and all(d >= 0 and (e == -1 or d == e) for d, e in zip(shape, sig.shape))
    if not ok:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} has shape {_shape_str(shape)}; "
            f"expected {_shape_str(sig.shape)} (-1 = any size)"
        )
    if model.batched and shape and shape[0] < 1:
        raise InvalidInput(f"model {model.name!r} input {inp.name!r} has batch size {shape[0]}; expected at least 1")


def _decode_input(
    model: TailModel, inp: InferInput, raw: bytes | None, limit_bytes: int
) -> np.ndarray | list[bytes]:
    """One input's data from its raw entry or its typed contents (protos.wire decodes; we name it)."""
    if raw is not None and inp.contents:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} carries both contents {sorted(inp.contents)} and "
            "raw_input_contents; expected exactly one of them"
        )
    if raw is None and not inp.contents:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} carries no data; expected raw_input_contents or contents"
        )
    try:
        if raw is not None:
            compression = inp.parameters.get("compression", "")
            return array_from_raw(inp.datatype, inp.shape, raw, compression=compression, limit_bytes=limit_bytes)
        return array_from_contents(inp.datatype, inp.shape, inp.contents)
    except WireError as exc:
        raise InvalidInput(f"model {model.name!r} input {inp.name!r}: {exc}") from exc


# ---------------------------------------------------------------------- the 'input' cut: JPEG frames


def jpeg_size_px(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header, or None when no header is found.
    Reads markers only; decodes nothing."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS and pos + 9 <= len(data):
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _decode_frames(model: TailModel, name: str, items: list[bytes]) -> np.ndarray:
    assert model.input_spec is not None
    frames = []
    for i, item in enumerate(items):
        if not item:
            raise InvalidInput(
                f"model {model.name!r} input {name!r} element {i} is empty (0 bytes); expected a JPEG frame"
            )
        size = jpeg_size_px(item)
        if size is not None and size[0] * size[1] > MAX_FRAME_PIXELS:
            raise InvalidInput(
                f"model {model.name!r} input {name!r} element {i} is a {size[0]}x{size[1]} px JPEG; "
                f"expected at most {MAX_FRAME_PIXELS} pixels"
            )
        try:
            frames.append(preprocess_bgr(decode_jpeg(item), model.input_spec))
        except Exception as exc:  # noqa: BLE001 - OpenCV raises cv2.error for some malformed streams
            raise InvalidInput(
                f"model {model.name!r} input {name!r} element {i}: {_first_line(exc)} (starts with 0x{item[:4].hex()}); "
                "expected a JPEG frame (starts with 0xffd8)"
            ) from None
    return np.concatenate(frames, axis=0)
