"""A small user-space TCP proxy that adds latency, loss-like stalls and outages.

netem is not available on the testbed machine, so the kernel only shapes the
rate (tc tbf); everything else a real uplink does comes from this proxy,
following a :class:`~benchmarks.testbed.schedule.LinkSchedule`. All timing
decisions are made by the pure :class:`~benchmarks.testbed.schedule.ChunkScheduler`;
this module only moves bytes and sleeps.

Each accepted connection gets an upstream connection (made once the link is up)
and two pumps (client->upstream = uplink, upstream->client = downlink), each a
reader thread that stamps chunks with their release time and a writer thread
that sends them when due. Optionally (``shape_uplink``) the proxy also enforces
the schedule's uplink rate itself, for runs without root and tc; and with a
``rate_applier`` it re-shapes a kernel qdisc when the schedule's rate changes.

Command line (used by the bench inside the edge namespace)::

    python -m benchmarks.testbed.proxy --listen 127.0.0.1:8101 --upstream 10.77.0.2:8001 \
        --schedule link.json [--origin-unix T] [--tc-dev si-e0] [--shape-uplink] [--stats stats.json]

It prints ``ready PORT`` on stdout once it accepts connections, and runs until SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from benchmarks.testbed.schedule import ChunkScheduler, LinkSchedule, TokenBucket

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
_EOF = object()


@dataclass
class ProxyStats:
    connections: int = 0
    upstream_failures: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class DelayProxy:
    """Forward TCP from ``listen`` to ``upstream`` under a link schedule.

    ``origin_monotonic`` is the ``time.monotonic()`` value that schedule time 0
    refers to (default: when :meth:`start` is called). ``seed`` fixes the loss draws.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        schedule: LinkSchedule,
        *,
        origin_monotonic: Optional[float] = None,
        shape_uplink: bool = False,
        seed: int = 0,
        rate_applier: Optional[Callable[[Optional[float]], None]] = None,
        connect_timeout_s: float = 3.0,
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        self.schedule = schedule
        self.origin = origin_monotonic
        self.stats = ProxyStats()
        self._bucket = TokenBucket() if shape_uplink else None
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._rate_applier = rate_applier
        self._connect_timeout_s = connect_timeout_s
        self._stop = threading.Event()
        self._sock: Optional[socket.socket] = None
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Bind, start accepting, and return the bound port."""
        if self.origin is None:
            self.origin = time.monotonic()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.listen)
        sock.listen(64)
        sock.settimeout(0.2)
        self._sock = sock
        self._spawn(self._accept_loop, "proxy-accept")
        if self._rate_applier is not None:
            self._spawn(self._rate_loop, "proxy-rate")
        return sock.getsockname()[1]

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        with self._open_lock:
            for s in list(self._open):
                _close(s)
            self._open.clear()
        for t in self._threads:
            t.join(timeout=2.0)

    def now_s(self) -> float:
        """Schedule time: seconds since the origin."""
        assert self.origin is not None
        return time.monotonic() - self.origin

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        self._threads = [x for x in self._threads if x.is_alive()]

    def _sleep_until(self, when_s: float) -> bool:
        """Sleep until schedule time ``when_s``; False if stopped first."""
        while not self._stop.is_set():
            left = when_s - self.now_s()
            if left <= 0:
                return True
            self._stop.wait(min(left, 0.2))
        return False

    # ------------------------------------------------------------------ kernel shaping

    def _rate_loop(self) -> None:
        assert self._rate_applier is not None
        for at_s, kbps in self.schedule.rate_steps():
            if not self._sleep_until(at_s):
                return
            try:
                self._rate_applier(kbps)
            except Exception as exc:  # keep forwarding even if shaping fails
                logger.warning("could not apply uplink %s kbit/s: %s", kbps, exc)

    # ------------------------------------------------------------------ forwarding

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._stats_lock:
                self.stats.connections += 1
            self._track(client)
            self._spawn(self._serve, "proxy-conn", client)

    def _track(self, s: socket.socket) -> None:
        with self._open_lock:
            self._open.add(s)

    def _serve(self, client: socket.socket) -> None:
        # a black-holed link: the connection waits until the link is back
        if not self._sleep_until(self.schedule.next_up_s(self.now_s())):
            _close(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=self._connect_timeout_s)
        except OSError as exc:
            logger.info("upstream %s:%d unreachable: %s", *self.upstream, exc)
            with self._stats_lock:
                self.stats.upstream_failures += 1
            _close(client)
            return
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(upstream)
        pair = (client, upstream)
        self._pump(client, upstream, ChunkScheduler(self.schedule, self._bucket), "bytes_up", pair)
        self._pump(upstream, client, ChunkScheduler(self.schedule, None), "bytes_down", pair)

    def _pump(self, src: socket.socket, dst: socket.socket, sched: ChunkScheduler, counter: str,
              pair: tuple[socket.socket, socket.socket]) -> None:
        chunks: "queue.Queue[object]" = queue.Queue()

        def read() -> None:
            while not self._stop.is_set():
                try:
                    data = src.recv(CHUNK_BYTES)
                except OSError:
                    data = b""
                if not data:
                    chunks.put(_EOF)
                    return
                with self._rng_lock:
                    draw = self._rng.random()
                chunks.put((sched.release_s(self.now_s(), len(data), draw), data))

        def write() -> None:
            while not self._stop.is_set():
                item = chunks.get()
                if item is _EOF:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                release_s, data = item  # type: ignore[misc]
                if math.isinf(release_s) or not self._sleep_until(release_s):
                    break
                try:
                    dst.sendall(data)
                except OSError:
                    break
                with self._stats_lock:
                    setattr(self.stats, counter, getattr(self.stats, counter) + len(data))
            for s in pair:  # the other side is gone: end both directions
                _close(s)

        self._spawn(read, f"proxy-{counter}-read")
        self._spawn(write, f"proxy-{counter}-write")


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


# --------------------------------------------------------------------------- tc adapter


def tbf_burst_bytes(rate_kbit: int) -> int:
    """Two full-size packets or 4 ms of the rate: small enough that a frame's payload is paced
    at the rate instead of leaving as one burst (as setup.sh does)."""
    return max(3100, int(rate_kbit * 1000 / 8 * 0.004))


def tbf_applier(dev: str) -> Callable[[Optional[float]], None]:
    """A rate applier that re-shapes ``dev``'s root tbf qdisc (run inside the edge namespace)."""

    def apply(kbps: Optional[float]) -> None:
        rate_kbit = int(kbps) if kbps is not None else 10_000_000
        burst = tbf_burst_bytes(rate_kbit)
        subprocess.run(
            ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate_kbit}kbit",
             "burst", str(burst), "latency", "300ms"],
            check=True, capture_output=True, text=True,
        )
        logger.info("uplink now %s kbit/s on %s", rate_kbit, dev)

    return apply


# --------------------------------------------------------------------------- CLI


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.testbed.proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=_hostport, required=True)
    parser.add_argument("--upstream", type=_hostport, required=True)
    parser.add_argument("--schedule", help="LinkSchedule JSON file (default: a plain unshaped link)")
    parser.add_argument("--origin-unix", type=float, help="wall time (s) of schedule time 0 (default: now)")
    parser.add_argument("--tc-dev", help="re-shape this device's tbf qdisc when the schedule's rate changes")
    parser.add_argument("--shape-uplink", action="store_true", help="enforce the uplink rate in user space")
    parser.add_argument("--stats", help="write byte counters here as JSON (every second and at exit)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="proxy %(levelname)s %(message)s", stream=sys.stderr)

    schedule = LinkSchedule()
    if args.schedule:
        with open(args.schedule, encoding="utf-8") as fh:
            schedule = LinkSchedule.from_json(fh.read())
    origin = None
    if args.origin_unix is not None:
        origin = time.monotonic() - (time.time() - args.origin_unix)
    proxy = DelayProxy(args.listen, args.upstream, schedule, origin_monotonic=origin,
                       shape_uplink=args.shape_uplink, seed=args.seed,
                       rate_applier=tbf_applier(args.tc_dev) if args.tc_dev else None)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    port = proxy.start()
    print(f"ready {port}", flush=True)

    def write_stats() -> None:
        if args.stats:
            tmp = f"{args.stats}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(asdict(proxy.stats), fh)
            os.replace(tmp, args.stats)

    while not done.wait(1.0):
        write_stats()
    proxy.stop()
    write_stats()
    return 0


if __name__ == "__main__":
    sys.exit(main())
