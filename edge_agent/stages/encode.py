"""The encode stage: each cut tensor through its wire codec (:func:`protos.wire.compress`).

``compression`` is ``server.compression``: "none" sends raw tensors, "zlib" compresses
every tensor (only splitinfer's server inflates it; stock Triton does not), "auto" follows
the bundle's per-tensor ``encoding.compression``. A compressed tensor announces itself
with the tensor parameter ``compression``. Another codec is another :class:`Encoder`
(or another method in :mod:`protos.wire`). BYTES tensors (the "input" cut's JPEG) are
never compressed.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

from edge_agent.head import HeadOutput
from edge_agent.types import WireTensor
from protos import wire
from protos.bundle import Bundle

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
        self._methods = {  # cut id -> tensor name -> method
            cut.id: {t.name: (t.encoding.compression or "none") for t in cut.tensors} for cut in bundle.manifest.cuts
        }

    def method_for(self, cut_id: str, tensor: WireTensor) -> str:
        if tensor.datatype == "BYTES":
            return "none"
        if self.compression != "auto":
            return self.compression
        return self._methods.get(cut_id, {}).get(tensor.name, "none")

    def encode(self, head: HeadOutput) -> HeadOutput:
        tensors = tuple(self._encode(head.cut_id, t) for t in head.tensors)
        return dataclasses.replace(head, tensors=tensors)

    def _encode(self, cut_id: str, tensor: WireTensor) -> WireTensor:
        method = self.method_for(cut_id, tensor)
        if method in ("", "none"):
            return tensor
        params = {**tensor.parameters, "compression": method}
        return dataclasses.replace(tensor, raw=wire.compress(tensor.raw, method), parameters=params)
