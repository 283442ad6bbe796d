"""Which entropy coder and which quantizer for feature codes (issue 13), measured on real activations.

    python -m benchmarks.codec_entropy_coders --bundle ~/.cache/splitinfer/bundles/ssd_codecs_step --cut conv_708 \
        [--calibration bikes.mp4] [--frames ~/.cache/splitinfer/vtest_100] [--count 100] \
        [--out benchmarks/results/codec_entropy_coders_ssd.json]

The plain cut's INT8 head (the bundle's ``<cut>``, whose wire is INT8 codes) runs on calibration
frames (bikes.mp4) and held-out frames; its codes, dequantized, are the activations a codec sees on
the INT8 head. Quantizers: per-channel ``q3`` (``calibrate_lowbit``, what ``q3+zstd`` ships) and
shared-step ``step<pct>`` (``calibrate_shared_step``), fitted on the calibration frames and applied
to the held-out ones, each with its mean squared error. Coders, on each held-out frame's codes
(one byte a code, NCHW), one thread, median ms: zstd level 1 / 3 / 19, zstd with
:func:`protos.codec.zstd_code_parameters` (what the wire uses), zstd over the bit-packed codes
(``q3p+zstd``), bz2, lzma, and, as reference points, OpenCV's lossless PNG / WebP / JPEG 2000 of the
channels tiled into one grey image; plus two bounds no coder here reaches: the codes' entropy with
one histogram for the tensor, and with one histogram per channel (fitted on the held-out codes
themselves). Picking: fewest bytes whose encode + decode stays well under 10 % of the head.
"""
from __future__ import annotations

import argparse
import bz2
import json
import lzma
import math
import os
import pathlib
import sys
import time
from typing import Callable

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "codec_entropy_coders_ssd.json"
STEPS = (70, 100, 130, 160)


def _entropy_bytes(codes: np.ndarray, per_channel: bool) -> float:
    """Mean bytes per frame at the empirical entropy (one histogram, or one per channel)."""
    def bits(values: np.ndarray) -> float:
        p = np.bincount(values.ravel(), minlength=256).astype(np.float64)
        p = p[p > 0] / p.sum()
        return float(-(p * np.log2(p)).sum()) * values.size
    total = sum(bits(codes[:, c]) for c in range(codes.shape[1])) if per_channel else bits(codes)
    return total / 8 / codes.shape[0]


def _tiles(frame: np.ndarray) -> np.ndarray:
    c, h, w = frame.shape
    cols = int(math.ceil(math.sqrt(c)))
    rows = int(math.ceil(c / cols))
    grid = np.zeros((rows * cols, h, w), np.uint8)
    grid[:c] = frame
    return np.ascontiguousarray(grid.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w))


def _untile(img: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    cols = int(math.ceil(math.sqrt(c)))
    rows = img.shape[0] // h
    return img.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(rows * cols, h, w)[:c]


def _coders(bits: int) -> dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes, tuple], np.ndarray]]]:
    import cv2
    import zstandard

    from protos import codec

    def flat(shape: tuple) -> Callable[[bytes], np.ndarray]:
        return lambda raw: np.frombuffer(raw, np.uint8).reshape(shape)

    def zstd_level(level: int):  # noqa: ANN202 - a coder pair
        c, d = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
        return (lambda a: c.compress(a.tobytes()), lambda raw, shape: flat(shape)(d.decompress(raw)))

    def image(ext: str, params: list[int]):  # noqa: ANN202 - a coder pair
        def enc(a: np.ndarray) -> bytes:
            return cv2.imencode(ext, _tiles(a), params)[1].tobytes()

        def dec(raw: bytes, shape: tuple) -> np.ndarray:
            return _untile(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE), shape)
        return enc, dec

    def wire(packed: int):  # noqa: ANN202 - a coder pair
        return (lambda a: codec.encode_tensor(a, packed_bits=packed, compression="zstd")[0],
                lambda raw, shape: codec.decode_tensor(raw, {"compression": "zstd", **(
                    {codec.PACKED_BITS_PARAMETER: packed} if packed != 8 else {})}, shape))

    out = {
        "zstd1": zstd_level(1), "zstd3": zstd_level(3), "zstd19": zstd_level(19),
        "zstd_code_parameters (wire)": wire(8),
        "bz2": (lambda a: bz2.compress(a.tobytes()), lambda raw, shape: flat(shape)(bz2.decompress(raw))),
        "lzma": (lambda a: lzma.compress(a.tobytes()), lambda raw, shape: flat(shape)(lzma.decompress(raw))),
        "png9 (tiled)": image(".png", [cv2.IMWRITE_PNG_COMPRESSION, 9]),
        "webp lossless (tiled)": image(".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
        "jpeg2000 lossless (tiled)": image(".jp2", [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 1000]),
    }
    if bits < 8:
        out[f"packed {bits}-bit + zstd_code_parameters (wire q{bits}p)"] = wire(bits)
    return out


def _measure(codes: np.ndarray, bits: int) -> dict:
    rows: dict = {"entropy_bound_bytes": _entropy_bytes(codes, False),
                  "per_channel_entropy_bound_bytes": _entropy_bytes(codes, True)}
    for name, (enc, dec) in _coders(bits).items():
        sizes, te, td = [], [], []
        for frame in codes:
            t0 = time.perf_counter()
            raw = enc(frame)
            t1 = time.perf_counter()
            back = dec(raw, frame.shape)
            t2 = time.perf_counter()
            if not np.array_equal(back, frame):
                raise AssertionError(f"{name} does not round-trip the codes")
            sizes.append(len(raw))
            te.append((t1 - t0) * 1e3)
            td.append((t2 - t1) * 1e3)
        rows[name] = {"bytes": float(np.mean(sizes)), "encode_ms": float(np.median(te)),
                      "decode_ms": float(np.median(td))}
    return rows


def run(args: argparse.Namespace) -> dict:
    import onnxruntime as ort

    from partitioner.calibration import read_frames
    from partitioner.codec_fit import calibrate_lowbit, calibrate_shared_step
    from protos import bundle as bundle_io
    from protos.preprocess import preprocess_bgr

    bundle = bundle_io.read_bundle(args.bundle)
    cut = bundle.cut(args.cut)
    enc = cut.tensors[0].encoding
    if enc.codec != "int8":
        raise SystemExit(f"cut {args.cut!r} has wire codec {enc.codec!r}; expected a plain cut with INT8 codes")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    head = ort.InferenceSession(str(bundle.path(cut.head)), so, providers=["CPUExecutionProvider"])
    spec = bundle.manifest.input

    def activations(frames: list[np.ndarray]) -> np.ndarray:
        name = head.get_inputs()[0].name
        codes = np.concatenate([head.run(None, {name: preprocess_bgr(f, spec)})[0] for f in frames])
        return ((codes.astype(np.float32) - float(enc.zero_point)) * float(enc.scale)).astype(np.float32)

    calib = read_frames(args.calibration).frames
    calib = [calib[i] for i in np.linspace(0, len(calib) - 1, args.calibration_count).astype(int)]
    x_cal, x_eval = activations(calib), activations(read_frames(args.frames).frames[: args.count])
    feed = {head.get_inputs()[0].name: preprocess_bgr(calib[0], spec)}
    head_ms = []
    for _ in range(21):
        t0 = time.perf_counter()
        head.run(None, feed)
        head_ms.append((time.perf_counter() - t0) * 1e3)
    quantizers = {"q3": calibrate_lowbit([x_cal], 3)}
    quantizers.update({f"step{pct}": calibrate_shared_step([x_cal], pct) for pct in args.steps})
    result: dict = {"command": "python -m benchmarks.codec_entropy_coders " + " ".join(args.argv),
                    "bundle": str(args.bundle), "cut": cut.id, "shape": list(x_eval.shape[1:]),
                    "frames": {"calibration": len(calib), "evaluation": len(x_eval)},
                    "load_average_start": list(os.getloadavg()), "threads": 1, "quantizers": {}}
    for name, params in quantizers.items():
        codes = params.quantize(x_eval)
        mse = float(np.mean((params.dequantize(codes) - x_eval) ** 2))
        rows = _measure(codes, params.bits)
        result["quantizers"][name] = {"mse": mse, "coders": rows}
        best = min((k for k in rows if isinstance(rows[k], dict)), key=lambda k: rows[k]["bytes"])
        wire_bytes = rows["zstd_code_parameters (wire)"]["bytes"]
        print(f"{name}: mse {mse:.4f}; zstd1 {rows['zstd1']['bytes']:.0f} B, wire {wire_bytes:.0f} B, smallest {best} {rows[best]['bytes']:.0f} B ({rows[best]['encode_ms']:.2f} ms encode); entropy bounds "
              f"{rows['entropy_bound_bytes']:.0f} / per channel {rows['per_channel_entropy_bound_bytes']:.0f} B",
              flush=True)
    result["plain_int8_head_ms_median"] = float(np.median(head_ms))  # one thread, this host
    result["load_average_end"] = list(os.getloadavg())
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=pathlib.Path, required=True)
    parser.add_argument("--cut", required=True, help="a plain cut whose wire is INT8 codes, e.g. conv_708")
    parser.add_argument("--calibration", type=pathlib.Path, default=None, help="default: the sample bikes.mp4")
    parser.add_argument("--calibration-count", type=int, default=32)
    parser.add_argument("--frames", type=pathlib.Path, default=pathlib.Path.home() / ".cache/splitinfer/vtest_100")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--steps", type=lambda s: tuple(int(v) for v in s.split(",")), default=STEPS)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.calibration is None:
        from partitioner.calibration import default_calibration_path

        args.calibration = default_calibration_path()
    args.argv = argv
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
