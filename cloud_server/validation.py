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

from typing import Sequence

import numpy as np

from cloud_server.domain import InferInput, InferRequest, TailModel, TensorSignature
from cloud_server.errors import InvalidInput
from protos.errors import WireError
from protos.preprocess import decode_jpeg, preprocess_bgr
from protos.wire import array_from_contents, array_from_raw

__all__ = ["decode_request", "requested_outputs", "jpeg_size_px", "MAX_FRAME_PIXELS"]

#: Largest frame the 'input' cut decodes (a JPEG header can claim 65535 x 65535 in a few bytes).
MAX_FRAME_PIXELS = 8192 * 8192

_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def requested_outputs(model: TailModel, request: InferRequest) -> set[str]:
    """The output names the client asked for (empty = all); InvalidInput for a name the model lacks."""
    names = {o.name for o in model.outputs}
    requested = set(request.requested_outputs)
    unknown = sorted(requested - names)
    if unknown:
        raise InvalidInput(f"model {model.name!r} has no output {unknown[0]!r}; expected one of {sorted(names)}")
    return requested


def decode_request(model: TailModel, request: InferRequest, *, limit_bytes: int) -> dict[str, np.ndarray]:
    """Check `request` against the model signature; return the arrays to feed, keyed by graph input.

    `limit_bytes` bounds what a compressed BYTES tensor may inflate to (fixed-size tensors are bounded
    by their shape)."""
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
                f"model {model.name!r} input {inp.name!r} has datatype {inp.datatype!r}; expected {sig.datatype!r}"
            )
        _check_shape(model, inp, sig)
        if model.batched:
            batch_sizes.add(inp.shape[0])
        arrays[inp.name] = _decode_input(model, inp, raws[i] if raws else None, limit_bytes)
    if len(batch_sizes) > 1:
        raise InvalidInput(
            f"model {model.name!r} inputs disagree on the batch size: {sorted(batch_sizes)}; expected one size"
        )
    shapes = {inp.name: inp.shape for inp in request.inputs}
    feeds: dict[str, np.ndarray] = {}
    for sig, feed in zip(model.inputs, model.feed_names):
        value = arrays[sig.name]
        if model.input_spec is not None:
            feeds[feed] = _decode_frames(model, sig.name, list(value))
        elif isinstance(value, list):
            feeds[feed] = np.array(value, dtype=object).reshape(shapes[sig.name])
        else:
            feeds[feed] = value
    return feeds


def _check_names(model: TailModel, request: InferRequest) -> dict[str, TensorSignature]:
    by_name = {sig.name: sig for sig in model.inputs}
    seen: set[str] = set()
    for inp in request.inputs:
        if inp.name not in by_name:
            raise InvalidInput(f"model {model.name!r} has no input {inp.name!r}; expected inputs {sorted(by_name)}")
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


def _decode_frames(model: TailModel, name: str, items: list[bytes]) -> np.ndarray:
    assert model.input_spec is not None
    frames = []
    for i, item in enumerate(items):
        size = jpeg_size_px(item)
        if size is not None and size[0] * size[1] > MAX_FRAME_PIXELS:
            raise InvalidInput(
                f"model {model.name!r} input {name!r} element {i} is a {size[0]}x{size[1]} px JPEG; "
                f"expected at most {MAX_FRAME_PIXELS} pixels"
            )
        try:
            frames.append(preprocess_bgr(decode_jpeg(item), model.input_spec))
        except ValueError as exc:
            raise InvalidInput(
                f"model {model.name!r} input {name!r} element {i}: {exc} (starts with 0x{item[:4].hex()}); "
                "expected a JPEG frame (starts with 0xffd8)"
            ) from None
    return np.concatenate(frames, axis=0)
