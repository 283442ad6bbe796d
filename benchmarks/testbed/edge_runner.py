"""Run the edge agent in-process from an ``edge.toml``, for the bench.

``python -m benchmarks.testbed.edge_runner --config edge.toml`` builds the real
:class:`edge_agent.agent.EdgeAgent` from the validated config, plays the source to
its end (``runtime.max_frames``) and exits once every frame has its result. The
bench launches it inside the edge namespace and CPU cgroup; it is the same agent
``splitinfer edge`` runs, without the daemon's signal handling and control socket.
Prints ``loaded UNIX_S`` once the bundle and sessions are loaded, ``started UNIX_S`` when the agent has started and ``done N`` at the end.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.testbed.edge_runner")
    parser.add_argument("--config", required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--start-at-unix", type=float, help="load now, start capturing at this wall time (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="edge %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from edge_agent.agent import EdgeAgent
    from edge_agent.config import load_config

    config = load_config(args.config)
    logging.getLogger().setLevel(config.agent.log_level)
    agent = EdgeAgent(config)
    print(f"loaded {time.time():.3f}", flush=True)
    if args.start_at_unix is not None:
        late_s = time.time() - args.start_at_unix
        if late_s > 0:
            logging.warning("agent loaded %.2fs after the schedule origin; starting now", late_s)
        else:
            time.sleep(-late_s)
    agent.start()
    print(f"started {time.time():.3f}", flush=True)
    finished = agent.run_until_done(args.timeout)
    if not finished:
        agent.stop(10.0)
    print(f"done {agent.results} captured {agent.frames_captured} dropped {agent.frames_dropped}", flush=True)
    return 0 if finished else 3


if __name__ == "__main__":
    sys.exit(main())
