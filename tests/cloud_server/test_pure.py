"""The pure modules on their own: validation, statistics, conversion and config.pbtxt parsing, with
in-memory models (no ONNX Runtime, no sockets); and the server's import graph has no cycle."""

from __future__ import annotations

import ast
import pathlib
import zlib

import numpy as np
import pytest

from cloud_server import convert
from cloud_server.domain import InferInput, InferRequest, TailModel, TensorSignature
from cloud_server.errors import InvalidInput, RegistryError
from cloud_server.model_config import repository_config_from_text
from cloud_server.stats import StatsBook
from cloud_server.validation import decode_request, requested_outputs

MODEL = TailModel(
    name="m.cut",
    version="1",
    model_path=pathlib.Path("unused.onnx"),
    inputs=(TensorSignature("x", "FP32", (-1, 4)), TensorSignature("ids", "INT64", (-1,))),
    outputs=(TensorSignature("y", "FP32", (-1, 2)),),
    feed_names=("graph_x", "graph_ids"),
)
X = np.arange(8, dtype="<f4").reshape(2, 4)
IDS = np.array([3, 4], dtype="<i8")


def _request(**changes: object) -> InferRequest:
    x = InferInput("x", "FP32", (2, 4), parameters=changes.pop("x_params", {}))  # type: ignore[arg-type]
    ids = InferInput("ids", "INT64", (2,), contents={"int64_contents": IDS.tolist()})
    fields: dict = {"model_name": MODEL.name, "inputs": (x, ids), "raw_input_contents": ()}
    fields.update(changes)
    return InferRequest(**fields)


def test_contents_and_compressed_raw_decode_to_the_graph_feeds() -> None:
    x = InferInput("x", "FP32", (2, 4), parameters={"compression": "zlib"})
    ids = InferInput("ids", "INT64", (2,))
    request = _request(inputs=(x, ids), raw_input_contents=(zlib.compress(X.tobytes()), IDS.tobytes()))
    feeds = decode_request(MODEL, request, limit_bytes=1 << 20)
    assert sorted(feeds) == ["graph_ids", "graph_x"]
    np.testing.assert_array_equal(feeds["graph_x"], X)
    np.testing.assert_array_equal(feeds["graph_ids"], IDS)


BAD = [
    # (request changes, fragments of the InvalidInput message)
    ({"raw_input_contents": (b"\0" * 31, IDS.tobytes())}, ["model 'm.cut' input 'x'", "31 raw bytes", "expected 32"]),
    ({"raw_input_contents": (b"junk", IDS.tobytes()), "x_params": {"compression": "zlib"}},
     ["model 'm.cut' input 'x'", "not valid zlib data"]),
    ({"raw_input_contents": (X.tobytes(), IDS.tobytes()), "x_params": {"compression": "br"}},
     ["input 'x'", "compression 'br'", "expected 'zlib' or 'none'"]),
    ({"inputs": (InferInput("x", "FP32", (2, 4), contents={"fp32_contents": [1.0]}),
                 InferInput("ids", "INT64", (2,), contents={"int64_contents": [1, 2]}))},
     ["input 'x'", "1 values in fp32_contents", "expected 8"]),
    ({"inputs": (InferInput("x", "FP32", (2, 4), contents={"fp32_contents": [1.0] * 8}),
                 InferInput("ids", "INT64", (3,), contents={"int64_contents": [1, 2, 3]}))},
     ["inputs disagree on the batch size: [2, 3]"]),
]


@pytest.mark.parametrize("changes, fragments", BAD)
def test_bad_data_names_the_model_and_input(changes: dict, fragments: list[str]) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_request(MODEL, _request(**changes), limit_bytes=1 << 20)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_requested_outputs_must_exist() -> None:
    assert requested_outputs(MODEL, _request(requested_outputs=("y",))) == {"y"}
    with pytest.raises(InvalidInput, match="no output 'z'; expected one of \\['y'\\]"):
        requested_outputs(MODEL, _request(requested_outputs=("z",)))


def test_stats_book_accounts_requests_and_batches() -> None:
    book = StatsBook()
    book.record_batch(MODEL, 2, 10, 20, 30)
    book.record_success(MODEL, elapsed_ns=100, rows=2, queue_ns=5, compute_input_ns=10, compute_infer_ns=20,
                        compute_output_ns=30, now_ms=1234)
    book.record_failure(MODEL, elapsed_ns=7)
    stats = book.snapshot(MODEL)
    assert (stats.inference_count, stats.execution_count, stats.last_inference_ms) == (2, 1, 1234)
    assert (stats.success.count, stats.success.ns, stats.fail.count, stats.fail.ns) == (1, 100, 1, 7)
    assert stats.batch_stats[2].compute_infer.ns == 20
    stats.inference_count = 99  # a snapshot is a copy
    assert book.snapshot(MODEL).inference_count == 2


def test_config_pbtxt_round_trips_through_the_converter() -> None:
    text = convert.model_config_to_proto(MODEL, max_batch_size=8, max_queue_delay_us=100)
    config = repository_config_from_text(str(text), source="m/config.pbtxt")
    assert config.batched and config.inputs == MODEL.inputs and config.outputs == MODEL.outputs
    with pytest.raises(RegistryError, match="m/config.pbtxt: not a valid ModelConfig"):
        repository_config_from_text('name: "m" max_bach_size: 8', source="m/config.pbtxt")


def test_cloud_server_imports_have_no_cycle() -> None:
    root = pathlib.Path(__file__).resolve().parents[2] / "cloud_server"
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cloud_server."):
                deps.add(node.module.split(".")[1])  # type: ignore[union-attr]
            elif isinstance(node, ast.ImportFrom) and node.module == "cloud_server":
                deps.update(alias.name for alias in node.names)
        graph[path.stem] = deps - {path.stem}
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, " -> ".join(trail + (name,))
        if name in done:
            return
        for dep in graph.get(name, ()):
            visit(dep, trail + (name,))
        done.add(name)

    for name in graph:
        visit(name, ())
