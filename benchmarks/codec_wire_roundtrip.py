"""A codec cut through the real product path (issue 13): what the edge sends vs the JPEG it replaces.

    python -m benchmarks.codec_wire_roundtrip --bundle ~/.cache/splitinfer/bundles/ssd_codecs_step \
        --cut conv_708_step160_zstd [--frames ~/.cache/splitinfer/vtest_100] [--count 100] \
        [--out benchmarks/results/codec_wire_roundtrip_ssd.json]

Per held-out frame: the edge's :class:`~edge_agent.head.HeadRunner` runs the codec cut's head,
:class:`~edge_agent.stages.encode.WireEncoder` ("auto", as the agent) encodes it, our gRPC server
(port 0, in process) decodes it and runs the tail; the answer is compared with the same head's
codes run through the tail locally (the wire must be lossless) and the bytes sent with the JPEG the
agent sends for cloud-only (:func:`protos.preprocess.model_sized`, the bundle's quality). Encode
ms is the WireEncoder's on this host, one thread; the head's ms is HeadRunner's. Fidelity is not
judged here (the partitioner did, on the same footage); this checks that the product carries the
bytes the partitioner measured, losslessly.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "codec_wire_roundtrip_ssd.json"


def run(args: argparse.Namespace) -> dict:
    import cv2
    import onnxruntime as ort

    from cloud_server.server import create_server
    from cloud_server.settings import ServerSettings
    from edge_agent.head import HeadRunner
    from edge_agent.stages.encode import WireEncoder
    from edge_agent.transport_grpc import GrpcTransport
    from edge_agent.types import OffloadRequest
    from partitioner.calibration import read_frames
    from protos import bundle as bundle_io
    from protos.bundle import BUNDLE_HASH_PARAMETER, bundle_hash, tail_model_name, tail_model_version
    from protos.preprocess import model_sized

    bundle = bundle_io.read_bundle(args.bundle)
    cut = bundle.cut(args.cut)
    if not cut.codec_of:
        raise SystemExit(f"cut {args.cut!r} is not a codec variant; codec cuts: "
                         f"{[c.id for c in bundle.manifest.cuts if c.codec_of]}")
    frames = read_frames(args.frames).frames[: args.count]
    outputs = tuple(t.name for t in bundle.manifest.output.tensors)
    quality = int(bundle.manifest.input.jpeg_quality) or 90
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    tail = ort.InferenceSession(str(bundle.path(cut.tail)), so, providers=["CPUExecutionProvider"])
    running = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(bundle.root,), metrics_port=None,
                                           discovery=False, max_queue_delay_us=0))
    runner = HeadRunner(bundle, threads=1)
    encoder = WireEncoder("auto", bundle)
    transport = GrpcTransport(running.address)
    sent_bytes, code_bytes, jpeg_bytes, encode_ms, head_ms, max_err = [], [], [], [], [], 0.0
    try:
        runner.activate(cut.id)
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            out = runner.run_head(cut.id, frame)
            t1 = time.perf_counter()
            sent = encoder.encode(out).tensors[0]
            t2 = time.perf_counter()
            head_ms.append((t1 - t0) * 1e3)
            encode_ms.append((t2 - t1) * 1e3)
            sent_bytes.append(len(sent.raw))
            code_bytes.append(len(out.tensors[0].raw))
            ok, jpeg = cv2.imencode(".jpg", model_sized(frame, bundle.manifest.input),
                                    [cv2.IMWRITE_JPEG_QUALITY, quality])
            jpeg_bytes.append(len(jpeg))
            request = OffloadRequest(tail_model_name(bundle.manifest, cut.id), tail_model_version(bundle.manifest),
                                     f"rt-{i}", (sent,), outputs,
                                     {"splitinfer_cut": cut.id, BUNDLE_HASH_PARAMETER: bundle_hash(bundle.manifest)})
            answer = transport.infer(request, timeout_s=30.0)
            codes = np.frombuffer(out.tensors[0].raw, np.uint8).reshape(out.tensors[0].shape)
            local = dict(zip(outputs, tail.run(list(outputs), {cut.tensors[0].name: codes})))
            for name in outputs:
                err = float(np.max(np.abs(np.asarray(answer.outputs[name], np.float64) - local[name]))) \
                    if local[name].size else 0.0
                max_err = max(max_err, err)
    finally:
        transport.close()
        running.stop(0)
    sent_mean, jpeg_mean = float(np.mean(sent_bytes)), float(np.mean(jpeg_bytes))
    return {
        "command": "python -m benchmarks.codec_wire_roundtrip " + " ".join(args.argv),
        "bundle": str(args.bundle), "content_hash": bundle.manifest.content_hash, "cut": cut.id,
        "codec": cut.codec.name, "frames": len(frames), "frames_source": str(args.frames),
        "load_average": list(os.getloadavg()),
        "sent_bytes_mean": sent_mean, "sent_bytes_max": int(np.max(sent_bytes)),
        "codes_bytes": int(np.mean(code_bytes)), "jpeg_quality": quality, "jpeg_bytes_mean": jpeg_mean,
        "x_jpeg": sent_mean / jpeg_mean, "x_jpeg_per_frame_max": float(np.max(np.divide(sent_bytes, jpeg_bytes))),
        "manifest_wire_bytes": int(cut.wire_bytes), "manifest_fidelity": cut.fidelity.value,
        "manifest_jpeg_baseline": bundle.manifest.evaluation.baseline_fidelity.value,
        "encode_ms_median": float(np.median(encode_ms)), "head_ms_median": float(np.median(head_ms)),
        "encode_vs_head": float(np.median(encode_ms) / np.median(head_ms)),
        "manifest_decode_ms": cut.codec.decode_ms,
        "max_abs_difference_server_vs_local_tail": max_err,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=pathlib.Path, required=True)
    parser.add_argument("--cut", required=True, help="a codec variant cut id, e.g. conv_708_step160_zstd")
    parser.add_argument("--frames", type=pathlib.Path, default=pathlib.Path.home() / ".cache/splitinfer/vtest_100",
                        help="held-out footage (video, image or folder); default the vtest frames")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.argv = argv
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
