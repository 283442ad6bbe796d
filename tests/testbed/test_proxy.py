from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from benchmarks.testbed.proxy import DelayProxy
from benchmarks.testbed.schedule import LinkSchedule, Segment, fixed


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A real TCP echo server on loopback."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()
    stop.set()
    srv.close()
    t.join(2)


def _proxy(upstream: tuple[str, int], schedule: LinkSchedule, **kw: object) -> DelayProxy:
    proxy = DelayProxy(("127.0.0.1", 0), upstream, schedule, **kw)  # type: ignore[arg-type]
    proxy.port = proxy.start()  # type: ignore[attr-defined]
    return proxy


def _round_trip(port: int, payload: bytes, timeout_s: float = 5.0) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        c.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
        return got, time.monotonic() - start


def test_forwards_bytes_with_added_delay(echo_server: tuple[str, int]) -> None:
    base = _proxy(echo_server, fixed())
    slow = _proxy(echo_server, fixed(delay_ms=80))
    try:
        payload = bytes(range(256)) * 40
        got, fast_s = _round_trip(base.port, payload)  # type: ignore[attr-defined]
        assert got == payload
        got, slow_s = _round_trip(slow.port, payload)  # type: ignore[attr-defined]
        assert got == payload
        # 80 ms each way
        assert slow_s >= 0.16
        assert slow_s > fast_s
        # the writer counts right after its send returns: give it a moment
        deadline = time.monotonic() + 2
        while slow.stats.bytes_down < len(payload) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slow.stats.bytes_up == len(payload) and slow.stats.bytes_down == len(payload)
        assert slow.stats.connections == 1
    finally:
        base.stop()
        slow.stop()


def test_outage_holds_bytes_until_the_link_returns(echo_server: tuple[str, int]) -> None:
    schedule = LinkSchedule((Segment(at_s=0), Segment(at_s=0.0001, up=False), Segment(at_s=0.6)))
    proxy = _proxy(echo_server, schedule, origin_monotonic=time.monotonic())
    try:
        got, took_s = _round_trip(proxy.port, b"hello")  # type: ignore[attr-defined]
        assert got == b"hello"
        assert took_s >= 0.45
    finally:
        proxy.stop()


def test_user_space_shaping_limits_the_uplink(echo_server: tuple[str, int]) -> None:
    proxy = _proxy(echo_server, fixed(uplink_kbps=8_000), shape_uplink=True)  # 1 MB/s
    try:
        payload = b"x" * 300_000
        got, took_s = _round_trip(proxy.port, payload)  # type: ignore[attr-defined]
        assert got == payload
        assert took_s >= 0.25
    finally:
        proxy.stop()


def test_unreachable_upstream_closes_the_client() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    dead = spare.getsockname()
    spare.close()  # nothing listens there now
    proxy = _proxy(dead, fixed())
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=3) as c:  # type: ignore[attr-defined]
            c.sendall(b"ping")
            assert c.recv(10) == b""
        deadline = time.monotonic() + 2
        while proxy.stats.upstream_failures == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.stats.upstream_failures == 1
    finally:
        proxy.stop()


def test_command_line_proxy_prints_ready_and_forwards(echo_server: tuple[str, int], tmp_path) -> None:
    schedule = tmp_path / "link.json"
    schedule.write_text(fixed(delay_ms=20).to_json())
    stats = tmp_path / "stats.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.testbed.proxy", "--listen", "127.0.0.1:0",
         "--upstream", f"{echo_server[0]}:{echo_server[1]}", "--schedule", str(schedule), "--stats", str(stats)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("ready ")
        got, took_s = _round_trip(int(line.split()[1]), b"abc" * 1000)
        assert got == b"abc" * 1000 and took_s >= 0.04
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert '"bytes_up": 3000' in stats.read_text()
