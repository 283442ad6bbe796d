"""The edge agent against a real Triton (2.51, bundled in nvidia-pytriton) serving the repository
``export-triton --backend python`` writes: pinned offloads at a mid-graph cut and at the JPEG
'input' cut are answered by Triton; Triton restarted on the same port while the agent runs ->
offloading resumes by itself. Recovery times are measured by benchmarks/triton_bench.py."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from cloud_server.server import create_server
from cloud_server.settings import ServerSettings
from edge_agent.agent import EdgeAgent
from edge_agent.types import Path
from partitioner.triton_launch import TritonServer
from protos.bundle import Bundle, bundle_hash
from protos.preprocess import encode_jpeg
from tests.edge_agent.conftest import agent_config, first_video_frame
from tests.triton.conftest import TimedSink
from tests.waiting import wait_for


def _agent(bundle: Bundle, address: str, cut: str, **values: Any) -> tuple[EdgeAgent, TimedSink]:
    sink = TimedSink()
    cfg = agent_config(bundle, server__address=address, server__discovery=False, policy__pinned_cut=cut,
                       runtime__deadline_ms=3000.0, **values)
    return EdgeAgent(cfg, sink=sink).start(), sink



def test_triton_serves_the_exported_tails_with_the_bundle_hash(triton: TritonServer, triton_bundle: Bundle) -> None:
    client = grpcclient.InferenceServerClient(triton.address)
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert index == {"tiny_net.input": "READY", "tiny_net.conv1": "READY", "tiny_net.conv2": "READY"}
    config = client.get_model_config("tiny_net.conv1", "1").config
    assert config.backend == "python"
    assert config.parameters["splitinfer_bundle_hash"].string_value == bundle_hash(triton_bundle.manifest)


def test_jpeg_cut_on_triton_answers_as_our_server(triton: TritonServer, triton_bundle: Bundle) -> None:
    """The same JPEG to Triton's decode-in-model.py 'input' model and to our server: same logits."""
    ours = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(triton_bundle.root,),
                                        metrics_port=None, discovery=False, max_queue_delay_us=0))
    try:
        jpeg = np.array([encode_jpeg(first_video_frame(), 80)], dtype=object)
        answers = []
        for address in (triton.address, ours.address):
            inp = grpcclient.InferInput("input_jpeg", [1], "BYTES")
            inp.set_data_from_numpy(jpeg)
            answers.append(grpcclient.InferenceServerClient(address).infer("tiny_net.input", [inp], model_version="1")
                           .as_numpy("logits"))
    finally:
        ours.stop(0)
    assert answers[0].shape == answers[1].shape == (1, 5)
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-5, atol=1e-5)


def test_pinned_offloads_at_a_mid_graph_cut_and_the_jpeg_cut(triton: TritonServer, triton_bundle: Bundle) -> None:
    for cut, path in (("conv1", Path.SPLIT), ("conv2", Path.SPLIT), ("input", Path.CLOUD)):
        agent, sink = _agent(triton_bundle, triton.address, cut, runtime__max_frames=10)
        try:
            assert agent.run_until_done(60), cut
        finally:
            agent.stop(10)
        results = [r for _, r in sink.snapshot()]
        assert len(results) == 10, cut
        assert [r.path for r in results] == [path] * 10, (cut, [r.fallback_reason for r in results])
        assert sum(agent.offload_failures.values()) == 0, (cut, agent.offload_failures)
        assert all(r.payload.get("top_k") for r in results)


def test_offloading_resumes_after_triton_restarts_on_the_same_port(triton: TritonServer, triton_bundle: Bundle) -> None:
    agent, sink = _agent(triton_bundle, triton.address, "conv1", source__fps_cap=20.0, source__loop=True)
    try:
        assert wait_for(lambda: sum(r.path is Path.SPLIT for _, r in sink.snapshot()) >= 10, 30)
        triton.stop()
        stopped = time.monotonic()
        assert wait_for(lambda: any(r.path is Path.FALLBACK and t > stopped for t, r in sink.snapshot()), 30)
        triton.start()
        ready = time.monotonic()
        assert wait_for(lambda: sum(r.path is Path.SPLIT and t > ready for t, r in sink.snapshot()) >= 10, 30), \
            f"no offload after the restart; breaker {agent.breaker.state}, failures {agent.offload_failures}"
    finally:
        agent.stop(10)
    after = [r for t, r in sink.snapshot() if t > ready]
    first_split = next(i for i, r in enumerate(after) if r.path is Path.SPLIT)
    # once back, it stays back: every frame after the first offload is offloaded
    assert {r.path for r in after[first_split:]} == {Path.SPLIT}
