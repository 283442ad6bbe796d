"""A real running stack for the control/split tests: tiny bundle, cloud server, edge agent, control socket.

Everything is real: the cloud server serves the bundle's tails over gRPC on port 0,
the agent uses its own gRPC transport to it, reads the shipped street video, and the
control endpoint listens on a Unix socket in the test's temporary directory.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Optional

from cloud_server.server import RunningServer, create_server
from cloud_server.settings import ServerSettings
from edge_agent.agent import EdgeAgent
from edge_agent.config import build_config
from edge_agent.control import ControlServer, start_control_server
from edge_agent.results import MemorySink
from edge_agent.sources import TeeSource, open_source
from protos.bundle import Bundle
from partitioner.samples import video_path
from tests.edge_agent.demo_bundle import build_demo_bundle


@dataclass
class Stack:
    bundle: Bundle
    server: RunningServer
    agent: EdgeAgent
    sink: MemorySink
    control: ControlServer

    @property
    def socket_path(self) -> str:
        assert self.control.socket_path is not None
        return self.control.socket_path

    def stop(self) -> None:
        self.control.stop()
        self.agent.stop(timeout_s=10.0)
        self.server.stop(0.5)


def start_stack(
    root: pathlib.Path,
    *,
    fps: Optional[float] = 15.0,
    max_frames: Optional[int] = None,
    loop: bool = True,
    pinned_cut: Optional[str] = None,
    extra: Optional[dict[str, Any]] = None,
) -> Stack:
    bundle = build_demo_bundle(root / "bundle")
    server = create_server(
        ServerSettings(host="127.0.0.1", port=0, bundles=(bundle.root,), metrics_port=None, discovery=False)
    )
    try:
        values: dict[str, Any] = {
            "bundle": str(bundle.root),
            "server.address": server.address,
            "server.discovery": False,
            "source.kind": "video",
            "source.uri": str(video_path("bikes.mp4")),
            "source.fps_cap": fps,
            "source.loop": loop,
            "runtime.max_frames": max_frames,
            "runtime.threads": 1,
            "runtime.deadline_ms": 5000.0,
            "policy.pinned_cut": pinned_cut,
            "battery.source": "none",
            "results.sink": "none",
            "agent.agent_id": "test-agent",
        }
        values.update(extra or {})
        config = build_config({k: v for k, v in values.items() if v is not None})
        sink = MemorySink()
        # TeeSource only serializes close() with read() (CaptureSource.close releases the
        # OpenCV capture under a concurrent read otherwise); the frames are the real video's
        source = TeeSource(open_source(config.source))
        agent = EdgeAgent(config, sink=sink, source=source)
        agent.start()
        control = start_control_server(agent, socket_path=str(root / "run" / "control.sock"), profiles=agent.profiles)
    except BaseException:
        server.stop(0)
        raise
    return Stack(bundle, server, agent, sink, control)
