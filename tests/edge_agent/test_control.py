"""The control endpoint: socket permissions, token auth on TCP, status mapping, conversion, Watch."""
from __future__ import annotations

import os
import socket
import stat
import threading

import grpc
import pytest

from edge_agent.control import (
    objective_from_pb,
    policy_from_pb,
    snapshot_to_pb,
    start_control_server,
)
from edge_agent.errors import ConfigError
from edge_agent.types import Objective
from protos import control_pb2, control_pb2_grpc
from tests.edge_agent.control_target import CUTS, TableTarget


@pytest.fixture()
def target():
    return TableTarget()


@pytest.fixture()
def served(target, tmp_path):
    server = start_control_server(target, socket_path=str(tmp_path / "run" / "control.sock"))
    channel = grpc.insecure_channel(server.addresses[0])
    yield server, control_pb2_grpc.AgentControlStub(channel)
    channel.close()
    server.stop()


def test_socket_is_0600_in_a_0700_directory(served, tmp_path):
    server, stub = served
    mode = os.stat(server.socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
    assert server.advertised == f"unix:{server.socket_path}"
    assert stub.GetStatus(control_pb2.GetStatusRequest(), timeout=5).agent_id == "table"


def test_stop_removes_the_socket_and_a_stale_socket_is_replaced(target, tmp_path):
    path = str(tmp_path / "c.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a crashed agent's socket: the file stays behind, nobody listens
    stale.close()
    assert os.path.exists(path)
    second = start_control_server(target, socket_path=path)
    channel = grpc.insecure_channel(f"unix:{path}")
    assert control_pb2_grpc.AgentControlStub(channel).GetStatus(control_pb2.GetStatusRequest(), timeout=5).results == 9
    channel.close()
    second.stop()
    assert not os.path.exists(path)


def test_refuses_to_steal_a_live_socket(served, target):
    server, stub = served
    with pytest.raises(ConfigError, match="another process is serving"):
        start_control_server(target, socket_path=server.socket_path)
    assert stub.GetStatus(control_pb2.GetStatusRequest(), timeout=5).agent_id == "table"


def test_refuses_to_replace_a_regular_file(target, tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="not a socket"):
        start_control_server(target, socket_path=str(path))
    assert path.read_text() == "keep me"


def test_too_long_socket_path_is_a_clear_error(target, tmp_path):
    with pytest.raises(ConfigError, match="at most 107"):
        start_control_server(target, socket_path=str(tmp_path / ("x" * 120) / "c.sock"))


def test_tcp_requires_a_token(target):
    with pytest.raises(ConfigError, match="needs a bearer token"):
        start_control_server(target, tcp_address="127.0.0.1:0")


def test_tcp_checks_the_bearer_token(target):
    server = start_control_server(target, tcp_address="127.0.0.1:0", token="s3cret")
    try:
        channel = grpc.insecure_channel(server.addresses[0])
        stub = control_pb2_grpc.AgentControlStub(channel)
        ok = stub.GetStatus(control_pb2.GetStatusRequest(), timeout=5, metadata=(("authorization", "Bearer s3cret"),))
        assert ok.agent_id == "table"
        for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)]:
            with pytest.raises(grpc.RpcError) as info:
                stub.SetSplit(control_pb2.SetSplitRequest(cut_id="output"), timeout=5, metadata=metadata)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            next(iter(stub.Watch(control_pb2.WatchRequest(), timeout=5)))
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert target.decision.cut_id == "features_6"  # the rejected pin changed nothing
        channel.close()
    finally:
        server.stop()


def test_status_and_cuts_convert(served):
    _, stub = served
    status = stub.GetStatus(control_pb2.GetStatusRequest(), timeout=5)
    assert status.current.cut_id == "features_6" and status.current.mode == control_pb2.MODE_AUTO
    assert {p.path: p.results for p in status.results_by_path} == {"split": 7, "fallback": 2}
    assert status.telemetry.has_battery and status.telemetry.battery_pct == 77.0
    assert status.slo_ms == 0.0 and status.mean_latency_ms == 33.0
    cuts = stub.ListCuts(control_pb2.ListCutsRequest(), timeout=5).cuts
    assert [c.cut_id for c in cuts] == list(CUTS)
    assert [c.current for c in cuts] == [False, True, False, False]
    assert cuts[0].available is False and cuts[0].unavailable_reason == "cloud unreachable"
    assert cuts[2].predicted_latency_ms == 22.0


def test_unknown_cut_is_not_found_and_lists_valid_cuts(served, target):
    _, stub = served
    with pytest.raises(grpc.RpcError) as info:
        stub.SetSplit(control_pb2.SetSplitRequest(cut_id="features_99"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "features_99" in info.value.details() and "features_13" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.SetSplit(control_pb2.SetSplitRequest(cut_id=""), timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert target.decision.cut_id == "features_6"


def test_pin_auto_and_policy(served, target):
    _, stub = served
    pinned = stub.SetSplit(control_pb2.SetSplitRequest(cut_id="output"), timeout=5).decision
    assert (pinned.cut_id, pinned.mode) == ("output", control_pb2.MODE_PINNED)
    assert stub.SetAuto(control_pb2.SetAutoRequest(), timeout=5).decision.mode == control_pb2.MODE_AUTO
    reply = stub.SetPolicy(control_pb2.SetPolicyRequest(objective=control_pb2.OBJECTIVE_SLO, slo_ms=80), timeout=5)
    assert (reply.objective, reply.slo_ms) == (control_pb2.OBJECTIVE_SLO, 80.0)
    assert (target.objective, target.slo_ms) == (Objective.SLO, 80.0)


@pytest.mark.parametrize(
    "request_, match",
    [
        (control_pb2.SetPolicyRequest(objective=control_pb2.OBJECTIVE_SLO), "needs slo_ms"),
        (control_pb2.SetPolicyRequest(objective=control_pb2.OBJECTIVE_LATENCY, slo_ms=-5), "must be a finite number > 0"),
        (control_pb2.SetPolicyRequest(objective=control_pb2.OBJECTIVE_UNSPECIFIED), "is not one of"),
    ],
)
def test_bad_policy_is_invalid_argument(served, target, request_, match):
    _, stub = served
    with pytest.raises(grpc.RpcError) as info:
        stub.SetPolicy(request_, timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert match in info.value.details()
    assert target.objective is Objective.LATENCY and target.slo_ms is None
    with pytest.raises(ValueError, match=match):
        policy_from_pb(request_)


def test_watch_starts_with_status_then_streams_decisions_and_ends_on_cancel(served, target):
    _, stub = served
    call = stub.Watch(control_pb2.WatchRequest(interval_ms=50))
    first = next(call)
    assert first.WhichOneof("event") == "status"
    threading.Timer(0.1, lambda: target.pin_split("features_13")).start()
    kinds = []
    for event in call:
        kinds.append(event.WhichOneof("event"))
        if event.WhichOneof("event") == "decision":
            assert event.decision.cut_id == "features_13"
            break
        assert len(kinds) < 200
    assert "status" in kinds  # a fresh status every interval
    call.cancel()
    for _ in range(100):
        if not target.streams:
            break
        threading.Event().wait(0.02)
    assert not target.streams  # cancelling closed the agent-side subscription


def test_uptime_clock_anchors_agent_time_to_wall_time(target):
    from edge_agent.control import UptimeClock

    clock = UptimeClock(wall_ms=lambda: 1_700_000_100_000.0)
    clock.sync(target.snapshot())  # uptime 12.5 s -> the agent started at ...087_500
    assert clock(0) == 1_700_000_087_500 and clock(1_000) == 1_700_000_088_500


def test_objective_and_snapshot_conversion_units(target):
    assert objective_from_pb(control_pb2.OBJECTIVE_ENERGY) is Objective.ENERGY
    pb = snapshot_to_pb(target.snapshot(), lambda at_ms: at_ms + 1_700_000_000_000)
    assert pb.telemetry.at_unix_ms == 1_700_000_001_000
    assert pb.telemetry.uplink_kbps == 850.0 and pb.telemetry.cpu_temp_c == 0.0
