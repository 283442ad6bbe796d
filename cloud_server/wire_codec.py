"""Feature codecs before the tail: unpack the bit-packed codes of a ``lowbit`` cut (issue 13).

An input announcing ``packed_bits`` (see :mod:`protos.codec`) carries UINT8 codes packed
that many bits each, possibly entropy coded (``compression``). :func:`unpack_request`
returns the request with those inputs as plain one-byte codes, so validation and the tail
see the tensor the head computed (the tail's DequantizeLinear does the rest). Inputs
without ``packed_bits`` pass unchanged (``compression`` alone is undone by validation).
Inflation is bounded by the declared shape; a bad tensor raises InvalidInput naming the
model, the input and the bad value.
"""
from __future__ import annotations

import dataclasses

from cloud_server.domain import InferRequest
from cloud_server.errors import InvalidInput
from protos import codec
from protos.errors import WireError

__all__ = ["unpack_request"]


def unpack_request(request: InferRequest) -> InferRequest:
    """``request`` with every bit-packed input unpacked to one byte per code (the same object when none is)."""
    packed = [i for i, inp in enumerate(request.inputs) if codec.PACKED_BITS_PARAMETER in inp.parameters]
    if not packed:
        return request
    inputs, raws = list(request.inputs), list(request.raw_input_contents)
    for i in packed:
        inp = inputs[i]
        where = f"model {request.model_name!r} input {inp.name!r}"
        if inp.datatype != "UINT8":
            raise InvalidInput(f"{where} announces packed_bits with datatype {inp.datatype!r}; expected 'UINT8' codes")
        if i >= len(raws):
            raise InvalidInput(f"{where} announces packed_bits but has no raw_input_contents entry; expected raw bytes")
        if any(d < 0 for d in inp.shape):
            raise InvalidInput(f"{where} has shape {list(inp.shape)}; expected non-negative dimensions")
        try:
            codes = codec.decode_tensor(raws[i], inp.parameters, inp.shape)
        except WireError as exc:
            raise InvalidInput(f"{where}: {exc}") from exc
        raws[i] = codes.tobytes()
        rest = {k: v for k, v in inp.parameters.items() if k not in (codec.PACKED_BITS_PARAMETER, "compression")}
        inputs[i] = dataclasses.replace(inp, parameters=rest)
    return dataclasses.replace(request, inputs=tuple(inputs), raw_input_contents=tuple(raws))
