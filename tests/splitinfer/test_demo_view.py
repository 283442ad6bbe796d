"""The demo table's cut labels (codec variants show their codec) and the summary's mid-graph phases."""
from __future__ import annotations

from edge_agent.link import EmulatedTransport, LinkEmulator, LinkState, LinkTrace
from edge_agent.results import FrameResult
from edge_agent.transport_fake import FakeTransport
from edge_agent.types import Path
from protos import bundle_pb2
from splitinfer.demo_view import Row, cut_labels, format_row, head_shares, is_mid_graph, render_summary, summarize

PATHS = {"input": Path.CLOUD, "output": Path.LOCAL}


def _manifest() -> bundle_pb2.Manifest:
    m = bundle_pb2.Manifest()
    for cut_id in ("input", "features_14_conv_2", "features_14_conv_2_q4p_zstd", "output"):
        m.cuts.add(id=cut_id)
    for cut, (head, tail) in zip(m.cuts, ((0, 600), (450, 150), (451, 150), (600, 0))):
        cut.head_flops, cut.tail_flops = head, tail
    variant = m.cuts[2]
    variant.codec.name = "q4p+zstd"
    variant.codec_of = "features_14_conv_2"
    return m


def _row(frame_id: int, cut: str, phase: int, path: Path | None = None) -> Row:
    result = FrameResult(frame_id=frame_id, capture_unix_ms=0, source="bikes.mp4", cut=cut,
                         path=path or PATHS.get(cut, Path.SPLIT), stages={}, latency_ms={"total": 40.0},
                         payload={"top_k": [{"index": 3, "label": "bicycle", "score": 0.9}]})
    return Row(result=result, uplink_kbps=2000.0, link="2 Mbps +10ms", reason="", phase=phase, t_s=float(frame_id))


def _summary(rows: list[Row], head_share: dict | None = None) -> dict:
    trace = LinkTrace([LinkState(0.0, up=True, uplink_kbps=100_000.0), LinkState(3.0, up=True, uplink_kbps=2000.0),
                       LinkState(6.0, up=False)])
    link = EmulatedTransport(FakeTransport(lambda request: {}), LinkEmulator(trace))  # only its trace is read
    try:
        return summarize(rows, frames_captured=len(rows), frames_dropped=0, reference={}, phases=["fast", "medium", "outage"],
                         link=link, wall_s=1.0, head_share=head_share)
    finally:
        link.close()


def test_codec_variants_show_the_cut_they_vary_and_their_codec() -> None:
    labels = cut_labels(_manifest())
    assert labels == {"input": "input [jpeg]", "features_14_conv_2": "features_14_conv_2",
                      "features_14_conv_2_q4p_zstd": "features_14_conv_2 [q4p+zstd]", "output": "output"}
    line = format_row(_row(7, "features_14_conv_2_q4p_zstd", 1), 0, labels)
    assert "features_14_conv_2 [q4p+zstd]" in line and "edge+cloud" in line
    assert "features_14_conv_2_q4p_zstd" in format_row(_row(7, "features_14_conv_2_q4p_zstd", 1), 0)
    assert [is_mid_graph(c) for c in labels] == [False, True, True, False]


def test_summary_names_the_phases_a_mid_graph_split_ran() -> None:
    rows = [_row(0, "input", 0), _row(1, "input", 0), _row(2, "input", 0),
            _row(3, "input", 1), _row(4, "features_14_conv_2_q4p_zstd", 1), _row(5, "features_14_conv_2_q4p_zstd", 1),
            _row(6, "output", 2), _row(7, "features_14_conv_2", 2)]  # 1 of 2: not most frames
    s = _summary(rows, head_shares(_manifest()))
    assert s["mid_graph_phases"] == [{"phase": "medium", "cut": "features_14_conv_2_q4p_zstd", "frames": 2, "of": 3,
                                      "cuts": {"features_14_conv_2_q4p_zstd": 2},
                                      "head_flops_share": round(451 / 601, 4)}]
    assert ("mid-graph split chosen in: medium (2 of 3 frames split; most at features_14_conv_2_q4p_zstd, head 75.0% "
            "of the model's FLOPs)") in render_summary(s)
    assert head_shares(_manifest())["input"] == 0.0 and head_shares(_manifest())["output"] == 1.0
    s = _summary([_row(0, "input", 0), _row(1, "output", 1)])
    assert s["mid_graph_phases"] == []
    assert "mid-graph split chosen in: no phase" in render_summary(s)


def test_a_mid_graph_cut_whose_offloads_fell_back_is_not_a_split() -> None:
    """Frames of a codec cut completed on the device (path fallback) do not count as that cut's split."""
    fell_back = [_row(i, "features_14_conv_2_q4p_zstd", 1, Path.FALLBACK) for i in (3, 4)]
    s = _summary([_row(0, "input", 0), *fell_back, _row(5, "features_14_conv_2_q4p_zstd", 1)])
    medium = s["phases"][1]
    assert medium["cuts"] == {"features_14_conv_2_q4p_zstd": 3} and medium["paths"] == {"fallback": 2, "split": 1}
    assert medium["split_cuts"] == {"features_14_conv_2_q4p_zstd": 1}
    assert medium["mean_latency_ms_by_path"] == {"fallback": 40.0, "split": 40.0}
    assert "paths: fallback 2 (40 ms), split 1 (40 ms)" in render_summary(s)
    assert s["mid_graph_phases"] == []  # 1 split of 3 frames: not most
    assert "mid-graph split chosen in: no phase" in render_summary(s)


def test_a_phase_split_over_two_mid_graph_cuts_counts_both() -> None:
    rows = [_row(0, "input", 0), _row(1, "features_14_conv_2", 1), _row(2, "features_14_conv_2_q4p_zstd", 1),
            _row(3, "features_14_conv_2_q4p_zstd", 1), _row(4, "output", 1), _row(5, "output", 1)]
    s = _summary(rows, head_shares(_manifest()))
    (medium,) = s["mid_graph_phases"]  # 3 of 5 split at one of two mid-graph cuts: most frames
    assert (medium["cut"], medium["frames"], medium["of"]) == ("features_14_conv_2_q4p_zstd", 3, 5)
    assert medium["cuts"] == {"features_14_conv_2_q4p_zstd": 2, "features_14_conv_2": 1}
    assert ("medium (3 of 5 frames split; most at features_14_conv_2_q4p_zstd, head 75.0% of the model's FLOPs; "
            "features_14_conv_2_q4p_zstd 2; features_14_conv_2 1)") in render_summary(s)
