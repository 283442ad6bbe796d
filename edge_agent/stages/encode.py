"""The encode stage: each cut tensor through its wire codec (:mod:`protos.wire`, :mod:`protos.codec`).

``compression`` is ``server.compression``: "none" sends raw tensors, "zlib" compresses
every tensor (only splitinfer's server inflates it; stock Triton does not), "auto" follows
the bundle: each tensor's ``encoding.compression``, and for a ``lowbit`` feature codec also
its bit packing (``encoding.packed_bits``) and level, through :func:`protos.codec.encode_tensor`
(zstd with the parameters it picks for codes). A packed or compressed tensor
announces itself with the tensor parameters ``packed_bits`` and ``compression``, so the
server needs no manifest to undo them. Under "none" a lowbit cut still sends its UINT8
codes, one byte each: what a stock Triton tail takes. BYTES tensors (the "input" cut's
JPEG) are never compressed. Another codec is another :class:`Encoder`.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from edge_agent.head import HeadOutput
from edge_agent.types import WireTensor
from protos import codec, wire
from protos.bundle import Bundle
from protos.bundle_pb2 import WireEncoding

SETTINGS = ("auto", "none", "zlib")


class Encoder(Protocol):
    def encode(self, head: HeadOutput) -> HeadOutput:
        """The same head output with its wire tensors encoded for sending."""
        ...


class WireEncoder:
    def __init__(self, compression: str, bundle: Bundle) -> None:
        if compression not in SETTINGS:
            raise ValueError(f"compression {compression!r}: expected one of {list(SETTINGS)}")
        self.compression = compression
        self._encodings: dict[str, dict[str, WireEncoding]] = {  # cut id -> tensor name -> encoding
            cut.id: {t.name: t.encoding for t in cut.tensors} for cut in bundle.manifest.cuts
        }

    def method_for(self, cut_id: str, tensor: WireTensor) -> str:
        if tensor.datatype == "BYTES":
            return "none"
        if self.compression != "auto":
            return self.compression
        enc = self._encodings.get(cut_id, {}).get(tensor.name)
        return (enc.compression if enc is not None else "") or "none"

    def packed_bits_for(self, cut_id: str, tensor: WireTensor) -> int:
        """Bits per code on the wire for a lowbit tensor under "auto" (8: one byte each)."""
        if not self._is_lowbit(cut_id, tensor):
            return 8
        return int(self._encodings[cut_id][tensor.name].packed_bits) or 8

    def encode(self, head: HeadOutput) -> HeadOutput:
        tensors = tuple(self._encode(head.cut_id, t) for t in head.tensors)
        return dataclasses.replace(head, tensors=tensors)

    def _is_lowbit(self, cut_id: str, tensor: WireTensor) -> bool:
        enc = self._encodings.get(cut_id, {}).get(tensor.name)
        return self.compression == "auto" and enc is not None and enc.codec == codec.LOWBIT_CODEC \
            and tensor.datatype == "UINT8"

    def _encode(self, cut_id: str, tensor: WireTensor) -> WireTensor:
        method = self.method_for(cut_id, tensor)
        bits = self.packed_bits_for(cut_id, tensor)
        if self._is_lowbit(cut_id, tensor):  # packed or not, codes go through protos.codec (its zstd settings)
            enc = self._encodings[cut_id][tensor.name]
            codes = np.frombuffer(tensor.raw, dtype=np.uint8)
            raw, announced = codec.encode_tensor(codes, packed_bits=bits, compression=method,
                                                 level=int(enc.compression_level) or 1)
            return dataclasses.replace(tensor, raw=raw, parameters={**tensor.parameters, **announced})
        if method in ("", "none"):
            return tensor
        level = 1
        enc = self._encodings.get(cut_id, {}).get(tensor.name)
        if self.compression == "auto" and enc is not None and enc.compression_level:
            level = int(enc.compression_level)
        params = {**tensor.parameters, "compression": method}
        return dataclasses.replace(tensor, raw=wire.compress(tensor.raw, method, level=level), parameters=params)
