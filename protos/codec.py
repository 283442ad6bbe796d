"""Low-bit feature codecs at a cut: the one copy the edge (encoder) and the server (decoder) share.

A ``lowbit`` cut tensor is computed by the head as UINT8 codes ``q`` in ``0 .. 2**bits - 1``
(per-channel affine: ``real = (q - zero_point[c]) * scale[c]`` along ``axis``, undone by
the tail's DequantizeLinear). On the wire:

1. **packing** (tensor parameter ``packed_bits`` = b, 1..7): the codes, row-major, each
   in ``b`` bits, most significant bit first, the last byte padded with zero bits
   (:func:`pack_bits` / :func:`unpack_bits`);
2. **entropy coding** (tensor parameter ``compression``: ``zstd`` or ``zlib``) of those
   bytes (:func:`compress_codes`). zstd at level <= 1 runs with parameters chosen for feature
   codes (:func:`zstd_code_parameters`): codes hold few long repeats, and the 3..6-byte matches
   of zstd's fast levels cost more than coding those bytes as literals; matches of 7 bytes or
   more only carry 3-5 % fewer bytes than level 1 at the same speed (SSD conv_708, q3 and
   step codes). Any zstd decoder reads the result.

Both steps are optional and announced per tensor, so a receiver needs nothing from the
manifest to undo them; stock Triton undoes neither (an unpacked, uncompressed UINT8 tensor
is what a Triton-exported tail accepts). :func:`codec_problems` checks a manifest's
``WireEncoding`` of the ``lowbit`` codec and names each bad value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import zstandard

from protos import wire
from protos.errors import WireError

__all__ = [
    "PACKED_BITS_PARAMETER",
    "LowBitParams",
    "codec_problems",
    "compress_codes",
    "decode_tensor",
    "encode_tensor",
    "pack_bits",
    "packed_size",
    "unpack_bits",
    "zstd_code_parameters",
]

#: Tensor parameter announcing bit packing (an int, 1..7).
PACKED_BITS_PARAMETER = "packed_bits"
LOWBIT_CODEC = "lowbit"
MIN_BITS, MAX_BITS = 2, 8


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take once packed."""
    return (count * bits + 7) // 8


def _check_bits(bits: object, expected: str = "an integer in 1..8") -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 8:
        raise WireError(f"packed_bits {bits!r} is not {expected}")
    return int(bits)


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Codes (uint8, each < 2**bits) packed ``bits`` bits each, MSB first; 8 returns them as they are."""
    bits = _check_bits(bits)
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return flat.tobytes()
    if flat.size and int(flat.max()) >> bits:
        raise WireError(f"a code is {int(flat.max())}; expected codes below {1 << bits} for {bits}-bit packing")
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte, shift-and-or in numpy
        per = 8 // bits
        padded = np.zeros(-(-flat.size // per) * per, dtype=np.uint8)
        padded[: flat.size] = flat
        groups = padded.reshape(-1, per)
        out = np.zeros(groups.shape[0], dtype=np.uint8)
        for k in range(per):
            out |= groups[:, k] << np.uint8(bits * (per - 1 - k))
        return out.tobytes()
    planes = np.unpackbits(flat[:, None], axis=1)[:, 8 - bits:]  # (n, bits) MSB first
    return np.packbits(planes.reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """The ``count`` codes :func:`pack_bits` packed into ``data`` (uint8, flat)."""
    bits = _check_bits(bits)
    need = packed_size(count, bits)
    if len(data) != need:
        raise WireError(f"has {len(data)} packed bytes; expected {need} ({count} codes x {bits} bits)")
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw.copy()
    if 8 % bits == 0:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        shifts = np.array([bits * (per - 1 - k) for k in range(per)], dtype=np.uint8)
        return ((raw[:, None] >> shifts[None, :]) & mask).reshape(-1)[:count]
    planes = np.unpackbits(raw)[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint8)
    return (planes * weights).sum(axis=1, dtype=np.uint16).astype(np.uint8)


#: zstd's shortest match for feature codes (its maximum; level 1 uses 6).
CODE_MIN_MATCH = 7
#: A small match table: fewer (mostly short, costly) matches are found (8 vs 15: ~1 % fewer bytes, 2x faster).
CODE_HASH_LOG = 8


def zstd_code_parameters(size_bytes: int) -> zstandard.ZstdCompressionParameters:
    """zstd's fast strategy with long minimum matches and a window that holds the whole tensor."""
    window_log = max(10, min(22, (max(size_bytes, 1) - 1).bit_length()))
    return zstandard.ZstdCompressionParameters(
        strategy=zstandard.STRATEGY_FAST, window_log=window_log, hash_log=CODE_HASH_LOG, chain_log=6,
        search_log=1, min_match=CODE_MIN_MATCH, target_length=0, write_content_size=True)


def compress_codes(data: bytes, method: str, *, level: int = 1) -> bytes:
    """Code bytes entropy coded with ``method``: zstd at ``level`` <= 1 with :func:`zstd_code_parameters`,
    otherwise :func:`protos.wire.compress` (whose :func:`~protos.wire.decompress` undoes both)."""
    if method == "zstd" and level <= 1:
        return zstandard.ZstdCompressor(compression_params=zstd_code_parameters(len(data))).compress(data)
    return wire.compress(data, method, level=level)


def encode_tensor(codes: np.ndarray, *, packed_bits: int = 8, compression: str = "none",
                  level: int = 1) -> tuple[bytes, dict[str, Any]]:
    """(raw bytes, tensor parameters) of UINT8 codes: packed, then entropy coded; the parameters announce both."""
    data = pack_bits(codes, packed_bits)
    params: dict[str, Any] = {}
    if packed_bits != 8:
        params[PACKED_BITS_PARAMETER] = int(packed_bits)
    if compression not in ("", "none"):
        data = compress_codes(data, compression, level=level)
        params["compression"] = compression
    return data, params


def decode_tensor(raw: bytes, parameters: Mapping[str, Any], shape: Sequence[int]) -> np.ndarray:
    """UINT8 codes of ``shape`` from a tensor :func:`encode_tensor` made (inflation bounded by the shape)."""
    count = math.prod(shape)
    bits = _check_bits(parameters.get(PACKED_BITS_PARAMETER, 8), "an integer in 1..8 (codes per bit width)")
    data = wire.decompress(raw, str(parameters.get("compression", "") or ""), packed_size(count, bits))
    return unpack_bits(data, bits, count).reshape(tuple(shape))


# --------------------------------------------------------------------------- quantization


@dataclass(frozen=True)
class LowBitParams:
    """Per-channel affine quantization to ``bits`` bits: real = (q - zero_point[c]) * scale[c] along ``axis``."""

    bits: int
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int = 1

    def __post_init__(self) -> None:
        problems = _param_problems(self.bits, self.scales, self.zero_points)
        if problems:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in problems))

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def _broadcast(self, values: Sequence[float] | Sequence[int], ndim: int, dtype: Any) -> np.ndarray:
        shape = [1] * ndim
        shape[self.axis] = len(values)
        return np.asarray(values, dtype=dtype).reshape(shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """What the head's QuantizeLinear + Clip compute (round half to even, saturate)."""
        x = np.asarray(x, np.float32)
        s = self._broadcast(self.scales, x.ndim, np.float32)
        z = self._broadcast(self.zero_points, x.ndim, np.float32)
        return np.clip(np.rint(x / s) + z, 0, self.levels - 1).astype(np.uint8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q)
        s = self._broadcast(self.scales, q.ndim, np.float32)
        z = self._broadcast(self.zero_points, q.ndim, np.float32)
        return ((q.astype(np.float32) - z) * s).astype(np.float32)


def _param_problems(bits: int, scales: Sequence[float], zero_points: Sequence[int]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        out.append(("bits", f"{bits!r} is not an integer in {MIN_BITS}..{MAX_BITS}"))
        return out
    if not scales:
        out.append(("scales", "empty; expected one scale per channel"))
    bad = [s for s in scales if not (math.isfinite(s) and s > 0)]
    if bad:
        out.append(("scales", f"{bad[:3]} are not finite numbers > 0"))
    if len(zero_points) != len(scales):
        out.append(("zero_points", f"has {len(zero_points)} values; expected {len(scales)} like scales"))
    top = (1 << bits) - 1
    off = [z for z in zero_points if not 0 <= z <= top]
    if off:
        out.append(("zero_points", f"{off[:3]} are outside 0..{top} for {bits} bits"))
    return out


def codec_problems(encoding: Any, tensor: Any) -> list[tuple[str, str]]:
    """(field under the tensor spec, problem) for a ``WireEncoding`` that cannot be decoded as it says."""
    out: list[tuple[str, str]] = []
    if encoding.codec == "int8" and not encoding.scale > 0:
        out.append(("encoding.scale", f"{encoding.scale} must be > 0 for the int8 codec"))
    if encoding.codec != LOWBIT_CODEC:
        if encoding.bits or encoding.scales or encoding.packed_bits:
            out.append(("encoding.bits", f"codec {encoding.codec!r} takes no bits/scales/packed_bits; "
                        f"expected them only with {LOWBIT_CODEC!r}"))
        return out
    if tensor.datatype != "UINT8":
        out.append(("datatype", f"{tensor.datatype!r}; the {LOWBIT_CODEC} codec travels as 'UINT8'"))
    for key, problem in _param_problems(int(encoding.bits), list(encoding.scales), list(encoding.zero_points)):
        out.append((f"encoding.{key}", problem))
    rank = len(tensor.shape)
    if not 0 <= encoding.axis < max(rank, 1):
        out.append(("encoding.axis", f"{encoding.axis} is not a dimension of shape {list(tensor.shape)}"))
    elif rank and tensor.shape[encoding.axis] > 0 and encoding.scales and \
            tensor.shape[encoding.axis] != len(encoding.scales):
        out.append(("encoding.scales", f"has {len(encoding.scales)} values; expected {tensor.shape[encoding.axis]} "
                    f"(dimension {encoding.axis} of shape {list(tensor.shape)})"))
    if encoding.packed_bits and encoding.packed_bits != encoding.bits:
        out.append(("encoding.packed_bits", f"{encoding.packed_bits}; expected 0 (unpacked) or bits = {encoding.bits}"))
    return out
