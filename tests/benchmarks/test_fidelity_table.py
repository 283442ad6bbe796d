from __future__ import annotations

import pathlib
import re

import pytest

from benchmarks.fidelity_table import (
    FidelityTableError,
    best_codec,
    citer,
    classifier_rows,
    detector_rows,
    format_key,
    lookup,
    render_markdown,
    write_outputs,
)

DOC = {"models": [{"model": "m", "cuts": [{"id": "input", "v": 0.9}, {"id": "output", "v": 0.8}]}],
       "cuts": {"c1": {"codecs": {"q4+zstd": {"bytes": 10, "f1": 0.95}}}}}


@pytest.mark.parametrize("path, key, value", [
    (["models", 0, "cuts", ("id", "output"), "v"], "models[0].cuts[id=output].v", 0.8),
    (["models", ("model", "m"), "cuts", 0, "id"], "models[model=m].cuts[0].id", "input"),
    (["cuts", "c1", "codecs", "q4+zstd", "bytes"], 'cuts.c1.codecs["q4+zstd"].bytes', 10),
])
def test_lookup_reads_the_value_its_key_names(path: list, key: str, value: object) -> None:
    assert lookup(DOC, path) == value
    assert format_key(path) == key
    cited = citer({"f.json": DOC}, "f.json")(*path)
    assert (cited.value, cited.source) == (value, f"f.json: {key}")


@pytest.mark.parametrize("path, message", [
    (["models", 0, "cuts", ("id", "middle"), "v"], "no element with id = 'middle' at models[0].cuts; there: ['input', 'output']"),
    (["models", 3], "no index 3 at models (list of 1)"),
    (["cuts", "c2"], "no key 'c2' at cuts; there: ['c1']"),
])
def test_lookup_names_the_missing_segment(path: list, message: str) -> None:
    with pytest.raises(FidelityTableError, match="^" + re.escape("f.json: " + message)):
        lookup(DOC, path, "f.json")


def test_citer_rejects_a_file_not_loaded() -> None:
    with pytest.raises(FidelityTableError, match="'g.json' is not loaded; loaded: \\['f.json'\\]"):
        citer({"f.json": DOC}, "g.json")


CODECS = {"q8": {"bytes": 300, "f1": 0.99}, "q4": {"bytes": 100, "f1": 0.96}, "q2": {"bytes": 50, "f1": 0.90},
          "broken": {"bytes": 10, "f1": None}}


@pytest.mark.parametrize("floor, name, reached", [
    (0.95, "q4", True),     # the fewest bytes at or above the floor
    (0.96, "q4", True),     # equal counts as reaching
    (0.97, "q8", True),
    (0.995, "q8", False),   # nothing reaches it: the highest fidelity, marked
    (0.5, "q2", True),
])
def test_best_codec_is_the_fewest_bytes_at_the_jpeg_fidelity(floor: float, name: str, reached: bool) -> None:
    assert best_codec(CODECS, "f1", floor) == (name, reached)


def test_best_codec_without_scores_says_so() -> None:
    with pytest.raises(FidelityTableError, match="no codec carries both 'f1' and 'bytes'"):
        best_codec({"x": {"bytes": 1}}, "f1", 0.5)


def _docs() -> dict:
    frames = {"evaluation": 100, "evaluation_sources": ["vtest_100"]}
    return {
        "codecs_ssd.json": {"frames": frames, "jpeg": {"full_frame_f1": 0.98, "full_frame_bytes": 1000.0,
                                                       "input_size_f1": 0.9, "input_size_bytes": 300.0},
                            "cuts": {"conv_1": {"head_flops_fraction": 0.1, "codecs": {
                                "q8+zstd": {"bytes": 400.0, "detection_f1": 0.99},
                                "q4+zstd": {"bytes": 200.0, "detection_f1": 0.97}}}}},
        "detector.json": {"evaluation": {"sources": ["vtest_40"], "frames": 40, "jpeg_baseline_detection_f1": 0.97},
                          "cuts": [{"cut": "input", "head_precision": "", "wire_bytes": 1000, "detection_f1_vs_fp32": 0.97},
                                   {"cut": "conv_1", "head_precision": "int8", "wire_bytes": 500,
                                    "detection_f1_vs_fp32": 0.96},
                                   {"cut": "output", "head_precision": "fp32", "wire_bytes": 0,
                                    "detection_f1_vs_fp32": 1.0}]},
        "fidelity.json": {"models": [{"model": "mobilenet_v2", "int8_full_model_shipped": True,
                                      "evaluation": {"evaluation_sources": ["a.mp4"], "evaluation_frames": 200,
                                                     "baseline": 0.9},
                                      "cuts": [{"id": "input", "head_precision": "", "remedy": "none", "top1_agreement": 0.9},
                                               {"id": "output", "head_precision": "int8", "remedy": "none",
                                                "top1_agreement": 0.88}]}]},
        "codecs.json": {"frames": {"evaluation": 200, "evaluation_sources": ["a.mp4"]},
                        "jpeg": {"full_frame_top1": 0.9, "full_frame_bytes": 900.0, "input_size_top1": 0.7,
                                 "input_size_bytes": 100.0},
                        "cuts": {"f14": {"codecs": {"q4p+zstd": {"bytes": 50.0, "top1": 0.93}}}}},
        "gate_exit.json": {"clips": [{"clip": "idle", "source": "held frames", "policy_run": {
            "frames": 650, "cut": "output", "share": {"gated": 0.69}, "fidelity_top1_all_frames": 0.86,
            "jpeg_baseline_top1_all_frames": 0.89}}]},
    }


def test_rows_compare_each_strategy_with_the_jpeg_on_its_own_frames() -> None:
    everything = detector_rows(_docs()) + classifier_rows(_docs())
    rows = {(r.group.split(" ")[0], r.strategy, r.wire): r for r in everything}
    rows.update({(g, s): r for (g, s, _), r in rows.items()})
    cut = rows[("codecs_ssd.json", "cut conv_1", "q8+zstd")]  # the smallest codec at the frame JPEG's 0.98
    assert (cut.fidelity.value, cut.jpeg.value, cut.at_least_jpeg, cut.at_least_model_jpeg) == (0.99, 0.98, True, True)
    assert cut.bytes_per_frame is not None and cut.bytes_per_frame.key == 'cuts.conv_1.codecs["q8+zstd"].bytes'
    small = rows[("codecs_ssd.json", "cut conv_1", "q4+zstd")]  # the smallest at the model-input JPEG's 0.9
    assert (small.at_least_jpeg, small.at_least_model_jpeg, small.note) == (
        False, True, "smallest >= the model-input JPEG; head 10% of the FLOPs")
    one = [r for r in everything if r.group.startswith("codecs.json") and r.strategy == "cut f14"]
    assert [r.wire for r in one] == ["q4p+zstd"]  # the same codec for both JPEGs: one row, both reasons
    assert one[0].note == "smallest >= the model-input JPEG; smallest >= the frame's JPEG"
    shipped = rows[("detector.json", "cut conv_1")]
    assert (shipped.fidelity.value, shipped.jpeg.value, shipped.at_least_jpeg) == (0.96, 0.97, False)
    assert rows[("detector.json", "edge-only")].wire.startswith("fp32 full model")
    edge = rows[("fidelity.json", "edge-only")]
    assert edge.wire.startswith("int8 full model") and edge.at_least_jpeg is False
    assert edge.fidelity.key == "models[model=mobilenet_v2].cuts[id=output].top1_agreement"
    gate = rows[("gate_exit.json", "edge-only + gate")]
    assert (gate.fidelity.value, gate.jpeg.value, gate.note) == (0.86, 0.89, "gated 69% of frames")
    assert gate.tag == "gate_exit/idle"


def test_markdown_marks_misses_and_cites_keys() -> None:
    text = "\n".join(render_markdown(detector_rows(_docs())))
    assert "| cut conv_1 | int8 head, the bundle's wire | 0.9600 | 0.9700 | **no** | - | - | 500 |" in text
    assert ("| cut conv_1 | q4+zstd | 0.9700 | 0.9800 | **no** | 0.9000 | yes | 200 | smallest >= the model-input "
            "JPEG; head 10% of the FLOPs |") in text
    assert "`cuts[cut=conv_1].detection_f1_vs_fp32; evaluation.jpeg_baseline_detection_f1; cuts[cut=conv_1].wire_bytes`" in text
    assert "| _detector.json (vtest_40, 40 frames)_ |" in text


def test_a_missing_key_in_a_results_file_fails_loudly() -> None:
    docs = _docs()
    del docs["codecs.json"]["jpeg"]["full_frame_top1"]
    with pytest.raises(FidelityTableError, match="codecs.json: no key 'full_frame_top1' at jpeg"):
        classifier_rows(docs)


def test_the_committed_results_render_with_every_figure_cited(tmp_path: pathlib.Path) -> None:
    rows = write_outputs(pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "results", tmp_path)
    assert {r.model for r in rows} == {"SSD-MobileNetV2", "MobileNetV2"}
    assert (tmp_path / "fidelity.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "fidelity.md").read_text()
    assert all(r.fidelity.key in text for r in rows)
