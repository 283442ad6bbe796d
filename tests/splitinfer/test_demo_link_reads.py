"""benchmarks.demo_link_reads: the agent's per-phase link reads from a headless demo log.

The excerpt is verbatim from a real ``splitinfer demo --headless --verbose`` run (run d2-s1 in benchmarks/results/demo_runs.json, commit edbc29c):
the link line, the table header, an INFO line between rows, and rows from four phases."""
from __future__ import annotations

import pytest

from benchmarks.demo_link_reads import LogFormatError, _phase_names, parse_log

EXCERPT = "\n".join((  # noqa: E501 - verbatim rows
    'link: emulated (5 phases over ~83 s: fast from 0 s: 100000 kbps, +2 ms one-way; slow from 16.667 s: 400 kbps, +40 ms one-way; medium from 33.333 s: 8000 kbps, +1 ms one-way; outage from 51.667 s: down; fast again from 65 s: 100000 kbps, +2 ms one-way)',
    'frame  top-1 / detections         cut [codec]                    ran on    total   pre  head  wire  srv  local   uplink est  link now           reason',
    '2026-12-03 02:19:54,596 INFO edge_agent.agent: split -> output (auto): initial choice: uplink 5000 kbps (prior): output 20 mJ < flatten_output_0 110 mJ (-81%); rtt 30 ms (prior); objective energy',
    '    2  electrical switch    0.96  features_2_conv_2 [q4p+zstd]   edge+cloud   48.7   2.7  27.9   9.9  4.7    0.0  40,521 kbps  100 Mbps +2ms      first measurements replace the priors: uplink 40521 kbps: features_2_conv_2_q4p_zstd 261 mJ < output 602 mJ (-57%); rtt 5 ms; objective energy',
    '    3  electrical switch    0.96  features_2_conv_2 [q4p+zstd]   edge+cloud   29.0   7.6  10.0   6.2  3.9    0.0  39,026 kbps  100 Mbps +2ms      uplink 39026 kbps: features_2_conv_2_q4p_zstd 249 mJ < input 274 mJ (-9%); rtt 5 ms; objective energy',
    '   60  car mirror           0.15  output                         edge*      87.4   3.4  83.3   0.0  0.0    0.0     383 kbps  400 kbps +40ms     cloud unavailable: running output locally (113 ms)',
    '   61  odometer             0.12  output                         edge      177.0   1.9  24.3   0.0  0.0    0.0     383 kbps  400 kbps +40ms     uplink 383 kbps: output 396 mJ < flatten_output_0 597 mJ (-34%); rtt 53 ms; objective energy',
    '  112  automated teller mac 0.33  features_4_conv_2 [q4p+zstd]   edge+cloud   60.4   2.7  31.6  16.5  8.6    0.0   6,214 kbps  8 Mbps +1ms        uplink 6214 kbps: features_4_conv_2_q4p_zstd 219 mJ < output 301 mJ (-27%); rtt 3 ms; objective energy',
    '  113  automated teller mac 0.33  features_4_conv_2 [q4p+zstd]   edge+cloud   46.2   2.4  25.6  11.1  3.6    0.0   6,281 kbps  8 Mbps +1ms        uplink 6281 kbps: features_4_conv_2_q4p_zstd 243 mJ < input 268 mJ (-9%); rtt 3 ms; objective energy',
    '  155  turnstile            0.33  features_4_conv_2 [q4p+zstd]   edge*      43.0   2.4  12.5   0.0  0.0   27.0   9,875 kbps  down               uplink 9875 kbps: features_2_conv_2_q4p_zstd 271 mJ < features_4_conv_2_q4p_zstd 284 mJ (-5%); rtt 3 ms; objective energy; keeping features_4_conv_2_q4p_zstd, gain 5% within hysteresis 15%',
))


def test_rows_are_grouped_by_the_link_they_ran_on() -> None:
    phases = parse_log(EXCERPT, _phase_names(EXCERPT))
    assert [(p["phase"], p["link_now"], p["frames"]) for p in phases] == [
        ("fast", "100 Mbps +2ms", 2), ("slow", "400 kbps +40ms", 2), ("medium", "8 Mbps +1ms", 2),
        ("outage", "down", 1)]
    fast, slow, medium, outage = phases
    assert fast["cuts"] == {"features_2_conv_2 [q4p+zstd]": 2} and fast["ran_on"] == {"edge+cloud": 2}
    assert medium["offloading_uplink_kbps_read"] == {"min": 6214.0, "median": 6247.5, "max": 6281.0, "n": 2}
    assert medium["offloading_rtt_ms_read"] == {"min": 3.0, "median": 3.0, "max": 3.0, "n": 2}
    # a fallback row's reason quotes no RTT; rows that ran on the device are not "offloading"
    assert slow["rtt_ms_read"] == {"min": 53.0, "median": 53.0, "max": 53.0, "n": 1}
    assert slow["offloading_uplink_kbps_read"] is None and slow["ran_on"] == {"edge*": 1, "edge": 1}
    assert outage["uplink_kbps_read"] == {"min": 9875.0, "median": 9875.0, "max": 9875.0, "n": 1}


def test_a_log_without_the_table_is_refused() -> None:
    with pytest.raises(LogFormatError, match="no headless table header"):
        parse_log("server 127.0.0.1:1 serving nothing\n")
