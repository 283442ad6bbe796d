"""`splitinfer serve` as a real subprocess: start on a free port, infer, SIGTERM while a request is in
flight (it completes, health flips NOT_SERVING, new requests get UNAVAILABLE, exit 0); --help and
configuration errors in-process."""
from __future__ import annotations

import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from cloud_server import cli
from cloud_server.config import KEYS
from tests.cloud_server.ops_bundles import _weights, build_tiny_bundle

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ops_bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    root = tmp_path_factory.mktemp("ops_bundles")
    fast = build_tiny_bundle(root / "fast", model_name="fast", width=16)
    # ~1-3 s per request on one core: long enough to still be running when SIGTERM arrives
    slow = build_tiny_bundle(root / "slow", model_name="slow", width=1024, slow_repeats=48)
    return fast.root, slow.root


class ServeProcess:
    """`python -m splitinfer.cli serve ...` with its JSON log lines collected from stderr."""

    def __init__(self, args: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITINFER_")}
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splitinfer.cli", "serve", *args],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.all_lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.all_lines.append(line)
            self.lines.put(line)

    def wait_for_log(self, fragment: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if fragment in record.get("msg", ""):
                return record
        raise AssertionError(f"no log line with {fragment!r}; stderr so far:\n{''.join(self.all_lines)}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def serve(ops_bundles: tuple[pathlib.Path, pathlib.Path]) -> Iterator[ServeProcess]:
    fast, slow = ops_bundles
    proc = ServeProcess([
        "--bundle", str(fast), "--bundle", str(slow), "--port", "0", "--metrics-port", "0",
        "--no-discovery", "--log-format", "json", "--drain-timeout-s", "60", "--max-batch-size", "1",
        "--grpc-workers", "8",
    ])
    yield proc
    proc.kill()


def _inflight(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("splitinfer_inflight_requests "):
                return float(line.split()[1])
    return 0.0


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def _mid_input(width: int, value: float = 0.5) -> tuple[grpcclient.InferInput, np.ndarray]:
    x = np.full((1, width), value, np.float32)
    inp = grpcclient.InferInput("mid", [1, width], "FP32")
    inp.set_data_from_numpy(x)
    return inp, x


@pytest.mark.slow
def test_sigterm_drains_in_flight_request_then_exits_zero(serve: ServeProcess) -> None:
    listening = serve.wait_for_log("listening on")
    port = listening["port"]
    metrics_url = listening["metrics_url"]
    assert {"fast.mid", "fast.input", "slow.mid", "slow.input"} <= {m.split("@")[0] for m in listening["models"]}
    assert metrics_url.startswith("http://127.0.0.1:")

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        # a normal request first, checked against numpy
        inp, x = _mid_input(16)
        logits = client.infer("fast.mid", [inp]).as_numpy("logits")
        np.testing.assert_allclose(logits, x @ _weights(16)[1], rtol=1e-5, atol=1e-5)
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING

        # a slow request in flight ...
        outcome: dict[str, Any] = {}

        def slow_request() -> None:
            slow_client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            try:
                inp, _ = _mid_input(1024)
                outcome["logits"] = slow_client.infer("slow.mid", [inp], client_timeout=120).as_numpy("logits")
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                slow_client.close()

        worker = threading.Thread(target=slow_request)
        worker.start()
        deadline = time.monotonic() + 30
        while _inflight(metrics_url) < 1:
            assert time.monotonic() < deadline, "the slow request never showed up as in flight"
            assert worker.is_alive(), f"the slow request finished before SIGTERM: {outcome}"
            time.sleep(0.02)

        # ... when SIGTERM arrives
        serve.proc.send_signal(signal.SIGTERM)
        serve.wait_for_log("draining", timeout_s=10)
        deadline = time.monotonic() + 10
        while _health(channel) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health never flipped to NOT_SERVING"
            time.sleep(0.02)
        assert worker.is_alive(), "the slow request should still be running while we look at health"
        # new work is refused while draining
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            client.infer("fast.mid", [_mid_input(16)[0]])
        assert serve.proc.poll() is None, "the server must wait for the in-flight request"

        worker.join(timeout=120)
        assert "error" not in outcome, f"in-flight request failed: {outcome.get('error')}"
        assert outcome["logits"].shape == (1, 3)
    finally:
        channel.close()
        client.close()

    assert serve.proc.wait(timeout=30) == 0
    stopped = serve.wait_for_log("stopped after draining", timeout_s=5)
    assert stopped["drain_s"] >= 0


def test_sigint_with_nothing_in_flight_exits_zero_quickly(ops_bundles: tuple[pathlib.Path, pathlib.Path]) -> None:
    fast, _ = ops_bundles
    proc = ServeProcess(["--bundle", str(fast), "--port", "0", "--metrics-port", "off", "--no-discovery",
                         "--log-format", "json"])
    try:
        listening = proc.wait_for_log("listening on")
        assert listening["metrics_url"] is None
        proc.proc.send_signal(signal.SIGINT)
        assert proc.proc.wait(timeout=20) == 0
    finally:
        proc.kill()


# --------------------------------------------------------------------------- in-process: help and errors


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for key in KEYS.values():
        flag = "--bundle" if key.name == "bundles" else key.flag
        assert flag in text, f"{flag} missing from --help"
    for fragment in ("--config", "--no-discovery", "flags > SPLITINFER_SERVE_* environment > TOML file > defaults",
                     "SIGTERM", "NOT_SERVING"):
        assert fragment in text


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--port", "abc"], ["flag --port", "'abc'", "integer"]),
        (["--bundle", "x", "--tls-cert-file", "server.pem"], ["tls_key_file is missing"]),
        (["--bundle", "/no/such/bundle"], ["/no/such/bundle", "does not exist"]),
        (["--metrics-port", "off"], ["nothing to serve", "--bundle"]),
    ],
)
def test_configuration_errors_exit_2_naming_the_key(
    argv: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("SPLITINFER_")]:
        monkeypatch.delenv(var)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err


def test_environment_error_exits_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITINFER_SERVE_MAX_QUEUE_SIZE", "lots")
    assert cli.main([]) == 2
    assert "SPLITINFER_SERVE_MAX_QUEUE_SIZE" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["not_a_bundle", "metrics_port_in_use"])
def test_start_failures_exit_1_with_one_line(case: str, tmp_path: pathlib.Path,
                                             ops_bundles: tuple[pathlib.Path, pathlib.Path]) -> None:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        if case == "not_a_bundle":
            args = ["--bundle", str(tmp_path), "--metrics-port", "off"]
            expected = str(tmp_path)
        else:
            args = ["--bundle", str(ops_bundles[0]), "--metrics-port", str(holder.getsockname()[1])]
            expected = f"127.0.0.1:{holder.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITINFER_")}
        env["PYTHONPATH"] = str(REPO)
        done = subprocess.run([sys.executable, "-m", "splitinfer.cli", "serve", "--port", "0", "--no-discovery", *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot start" in errors[0] and expected in errors[0]
    assert "Traceback" not in done.stderr
