"""Regenerate the tiny golden bundle at ``tests/data/golden_bundle`` (committed).

    python -m tests.make_golden_bundle            # rewrite it
    python -m tests.make_golden_bundle --check    # exit 1 when the committed copy differs

The golden bundle pins the bundle format: ``tests/protos/test_golden_bundle.py`` reads
the committed copy with today's reader and rebuilds it byte for byte, so a change to
the manifest schema, the writer or the hashing shows up as a failing test until this
script is run on purpose (and the diff reviewed).

The model (deterministic weights): image [N,3,8,8] -> Conv(3->4, 3x3, pad 1) -> Relu
= "feat" [N,4,8,8] -> GlobalAveragePool -> Flatten = "pooled" [N,4] -> Gemm -> logits [N,3].
Cuts: input (JPEG), feat (FP32), pooled (FP32), output.
"""
from __future__ import annotations

import argparse
import filecmp
import pathlib
import sys
import tempfile

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from protos.bundle import Bundle
from tests.bundles import FULL, BundleSpec, CutSpec, InputSpec, Profile, Tensor, write_test_bundle

GOLDEN_DIR = pathlib.Path(__file__).resolve().parent / "data" / "golden_bundle"
LABELS = ("cat", "dog", "bike")
SIZE = 8

_SHAPES = {"image": ["N", 3, SIZE, SIZE], "feat": ["N", 4, SIZE, SIZE], "pooled": ["N", 4], "logits": ["N", 3]}


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261202)
    return {
        "conv_w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "fc_w": rng.normal(0, 0.5, (3, 4)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, (3,)).astype(np.float32),
    }


_NODES = [
    helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
    helper.make_node("Relu", ["conv"], ["feat"], name="relu"),
    helper.make_node("GlobalAveragePool", ["feat"], ["gap"], name="gap"),
    helper.make_node("Flatten", ["gap"], ["pooled"], axis=1, name="flatten"),
    helper.make_node("Gemm", ["pooled", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
]


def golden_model(first: str = "image", last: str = "logits") -> bytes:
    """The model from tensor ``first`` to tensor ``last`` (serialized, deterministic)."""
    produced = {out: i for i, node in enumerate(_NODES) for out in node.output}
    start = 0 if first == "image" else produced[first] + 1
    nodes = _NODES[start: produced[last] + 1]
    weights = _weights()
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        nodes, f"golden_{first}_{last}",
        [helper.make_tensor_value_info(first, TensorProto.FLOAT, _SHAPES[first])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, _SHAPES[last])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items() if k in used],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="splitinfer-tests",
                              producer_version="1")
    model.ir_version = 8
    return model.SerializeToString()


def golden_spec() -> BundleSpec:
    logits = Tensor("logits", "FP32", (-1, 3))
    return BundleSpec(
        model_name="golden_net", model_version="1", created_by="tests/make_golden_bundle.py", opset=17,
        full_model=golden_model(), labels=LABELS, top_k=2, outputs=(logits,),
        input=InputSpec(Tensor("image", "FP32", (-1, 3, SIZE, SIZE)), SIZE, SIZE, resize_shorter_px=10),
        cuts=(
            CutSpec("input", (Tensor("image_jpeg", "BYTES", (-1,), codec="jpeg"),), tail=FULL, wire_bytes=700,
                    cloud_profile=Profile(tail_ms=0.2)),
            CutSpec("feat", (Tensor("feat", "FP32", (-1, 4, SIZE, SIZE)),), head=golden_model("image", "feat"),
                    tail=golden_model("feat", "logits"), wire_bytes=4 * SIZE * SIZE * 4,
                    edge_profile=Profile(head_ms=0.1), cloud_profile=Profile(tail_ms=0.1)),
            CutSpec("pooled", (Tensor("pooled", "FP32", (-1, 4)),), head=golden_model("image", "pooled"),
                    tail=golden_model("pooled", "logits"), wire_bytes=16,
                    edge_profile=Profile(head_ms=0.1), cloud_profile=Profile(tail_ms=0.05)),
            CutSpec("output", (logits,), edge_profile=Profile(head_ms=0.15)),
        ),
    )


def write_golden_bundle(out: pathlib.Path) -> Bundle:
    return write_test_bundle(out, golden_spec())


def differing_files(a: pathlib.Path, b: pathlib.Path) -> list[str]:
    """Relative paths that differ between two bundle directories (missing on either side included)."""
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    diff = sorted(files_a ^ files_b)
    diff += sorted(p for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False))
    return diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed copy; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = pathlib.Path(tmp) / "golden_bundle"
            write_golden_bundle(fresh)
            diff = differing_files(GOLDEN_DIR, fresh)
        if diff:
            print(f"golden bundle differs from a fresh build: {diff}", file=sys.stderr)
            return 1
        print("golden bundle is up to date")
        return 0
    bundle = write_golden_bundle(GOLDEN_DIR)
    print(f"wrote {bundle.root} (content hash {bundle.content_hash[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
