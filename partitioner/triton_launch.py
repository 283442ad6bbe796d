"""Run the real Triton server bundled in ``nvidia-pytriton`` on an exported repository.

``nvidia-pytriton`` (0.7.0: Triton 2.51, CPU, only the Python backend) pins packages ours do not
(numpy < 2), so it lives in its own virtualenv (``make test-triton`` creates ``.venv-triton``).
:class:`TritonServer` starts its ``tritonserver`` binary directly on a repository written by
``splitinfer export-triton --backend python``: the backend directory is copied into a work
directory with the Python-backend stub of that virtualenv's Python version (what pytriton itself
does), ``LD_LIBRARY_PATH`` gets pytriton's libraries and the Python's own ``lib/`` (the stub
embeds libpython), and ``PYTHONPATH`` the virtualenv's site-packages (``model.py`` imports numpy,
onnxruntime and OpenCV from there).

Command line (a server for trying the edge agent against real Triton)::

    python -m partitioner.triton_launch REPO --python .venv-triton/bin/python --grpc-port 8001
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

log = logging.getLogger(__name__)

_PROBE = (
    "import json, pathlib, sys, sysconfig, site, pytriton; "
    "print(json.dumps({'version': f'{sys.version_info[0]}.{sys.version_info[1]}', "
    "'libdir': sysconfig.get_config_var('LIBDIR'), 'site': site.getsitepackages(), "
    "'pytriton': str(pathlib.Path(pytriton.__file__).parent)}))"
)


class TritonUnavailable(RuntimeError):
    """The pytriton virtualenv is missing or broken, or Triton did not become ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _inspect(python: pathlib.Path) -> dict:
    if not python.is_file():
        raise TritonUnavailable(f"python {str(python)!r} does not exist; expected a virtualenv with nvidia-pytriton "
                                "(make test-triton creates .venv-triton)")
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True)
    if probe.returncode != 0:
        raise TritonUnavailable(f"{python} cannot import pytriton: {probe.stderr.strip()[-500:]}")
    return dict(json.loads(probe.stdout))


class TritonServer:
    """``tritonserver`` on ``repository``, gRPC on ``grpc_port`` (0 = a free port), until :meth:`stop`.

    ``start()`` blocks until the server answers ServerReady (or raises :class:`TritonUnavailable`
    with the end of its log). ``stop()`` then ``start()`` again restarts it on the same port.
    """

    def __init__(self, repository: pathlib.Path, python: pathlib.Path, work_dir: pathlib.Path, *,
                 grpc_port: int = 0, ready_timeout_s: float = 120.0) -> None:
        self.repository = pathlib.Path(repository).resolve()
        self.python = pathlib.Path(python)
        self.work_dir = pathlib.Path(work_dir)
        self.grpc_port = grpc_port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.work_dir / "tritonserver.log"
        info = _inspect(self.python)
        dist = pathlib.Path(info["pytriton"]) / "tritonserver"
        stub = dist / "python_backend_stubs" / info["version"] / "triton_python_backend_stub"
        if not stub.is_file():
            raise TritonUnavailable(f"pytriton has no Python-backend stub for Python {info['version']} ({stub})")
        self._binary = dist / "bin" / "tritonserver"
        self._backends = self.work_dir / "backends"
        if not self._backends.exists():
            shutil.copytree(dist / "backends", self._backends)
            shutil.copy(stub, self._backends / "python" / "triton_python_backend_stub")
        libs = pathlib.Path(info["pytriton"]).parent / "nvidia_pytriton.libs"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(x for x in (str(libs), info["libdir"], env.get("LD_LIBRARY_PATH", "")) if x)
        env["PYTHONPATH"] = ":".join(info["site"])
        env["PATH"] = f"{self.python.parent}:{env.get('PATH', '')}"
        self._env = env

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> "TritonServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        cmd = [str(self._binary), f"--model-repository={self.repository}", f"--backend-directory={self._backends}",
               f"--grpc-port={self.grpc_port}", "--allow-http=false", "--allow-metrics=false",
               "--exit-on-error=true", "--log-verbose=0"]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(cmd, env=self._env, stdout=log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import grpc

        from protos import inference_pb2, inference_pb2_grpc

        deadline = time.monotonic() + self.ready_timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    break
                try:
                    if stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=1.0).ready:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise TritonUnavailable(f"tritonserver on {self.repository} did not become ready: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (Triton unloads its models and exits), SIGKILL after ``timeout_s``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m partitioner.triton_launch",
                                description="Serve an exported repository with the Triton bundled in nvidia-pytriton.")
    p.add_argument("repository", type=pathlib.Path)
    p.add_argument("--python", type=pathlib.Path, default=pathlib.Path(".venv-triton/bin/python"),
                   help="python of a virtualenv with nvidia-pytriton (default %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8001)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with tempfile.TemporaryDirectory(prefix="triton-") as work:
        try:
            server = TritonServer(args.repository, args.python, pathlib.Path(work), grpc_port=args.grpc_port).start()
        except TritonUnavailable as exc:
            print(f"triton_launch: {exc}", file=sys.stderr)
            return 2
        print(f"Triton ready on {server.address} (log {server.log_path}); Ctrl-C stops it", flush=True)
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
