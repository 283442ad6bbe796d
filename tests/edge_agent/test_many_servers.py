"""One agent, three real servers (``splitinfer serve`` subprocesses on loopback) behind one
``server.address`` list: gRPC's round_robin spreads the offloads over all three; one server killed
(SIGKILL) mid-run costs no frame (gRPC retries the failed call on a survivor) and the two survivors
take the load. Figures (distribution, recovery) come from benchmarks/scaleout_bench.py."""
from __future__ import annotations

import time

import pytest
import tritonclient.grpc as grpcclient

from edge_agent.agent import EdgeAgent
from edge_agent.channels import channel_target
from edge_agent.types import Path
from tests.cloud_server.test_cli_lifecycle import ServeProcess
from tests.edge_agent.conftest import agent_config
from tests.triton.conftest import TimedSink
from tests.waiting import wait_for


def _served(address: str, model: str) -> int:
    stats = grpcclient.InferenceServerClient(address).get_inference_statistics(model, "1")
    return int(sum(s.inference_count for s in stats.model_stats))



def test_address_list_and_dns_targets() -> None:
    assert channel_target("127.0.0.1:1").balanced is False
    listed = channel_target("127.0.0.1:1, 127.0.0.1:2,localhost:3")
    assert listed.balanced and listed.target.startswith("ipv") and "127.0.0.1:1,127.0.0.1:2," in listed.target
    assert channel_target("dns:///tails.default.svc.cluster.local:8001").balanced
    for bad, named in (("127.0.0.1", "'127.0.0.1'"), ("127.0.0.1:1,b", "'b'"), (",", "','"),
                       ("127.0.0.1:1,no-such-host.invalid:2", "'no-such-host.invalid'")):
        with pytest.raises(ValueError, match=named):
            channel_target(bad)


def test_three_servers_round_robin_and_one_killed_mid_run(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    servers = [ServeProcess(["--bundle", str(tiny_bundle.root), "--port", "0", "--metrics-port", "0", "--no-discovery",
                             "--log-format", "json", "--max-queue-delay-us", "0"]) for _ in range(3)]
    try:
        addresses = [f"127.0.0.1:{s.wait_for_log('listening on')['port']}" for s in servers]
        sink = TimedSink()
        cfg = agent_config(tiny_bundle, server__address=",".join(addresses), server__discovery=False,
                           policy__pinned_cut="conv1", source__fps_cap=30.0, source__loop=True,
                           runtime__deadline_ms=3000.0)
        agent = EdgeAgent(cfg, sink=sink).start()
        try:
            assert wait_for(lambda: len(sink.snapshot()) >= 45, 60)
            before = [_served(a, "tiny_net.conv1") for a in addresses]
            servers[1].kill()
            killed = time.monotonic()
            assert wait_for(lambda: sum(t > killed for t, _ in sink.snapshot()) >= 60, 60)
        finally:
            agent.stop(10)
        after = [_served(a, "tiny_net.conv1") for a in (addresses[0], addresses[2])]
    finally:
        for server in servers:
            server.kill()
    results = [r for _, r in sink.snapshot()]
    # every server took a share while all three ran
    assert all(n > 0 for n in before), before
    # no frame lost: every frame, also around the kill, was answered by a server
    assert {r.path for r in results} == {Path.SPLIT}, [r.fallback_reason for r in results if r.path is not Path.SPLIT]
    assert sum(agent.offload_failures.values()) == 0, agent.offload_failures
    # the survivors took the load: both served more after the kill
    assert after[0] > before[0] and after[1] > before[2], (before, after)
