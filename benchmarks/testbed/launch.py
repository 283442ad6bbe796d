"""Starting and stopping the bench's child processes.

Every child runs in its own session so it can be stopped by its own process
group id (never by name); stdout/stderr go to files in the run's log folder.
"""
from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import time
from typing import Mapping, Optional, Sequence

logger = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """A child process did not start or did not become ready."""


class Proc:
    """One child process with its logs."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: pathlib.Path, *,
                 env: Optional[Mapping[str, str]] = None, cwd: Optional[pathlib.Path] = None) -> None:
        self.name = name
        self.argv = list(argv)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.started_monotonic = time.monotonic()
        self.popen = subprocess.Popen(self.argv, stdout=self._out, stderr=self._err, env=dict(env or os.environ),
                                      cwd=str(cwd) if cwd else None, start_new_session=True)
        logger.debug("started %s pid %d: %s", name, self.popen.pid, " ".join(self.argv))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for_line(self, prefix: str, timeout_s: float) -> str:
        """Wait until stdout has a line starting with ``prefix``; return it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.stdout_path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
            if not self.alive():
                raise LaunchError(f"{self.name} exited with {self.popen.returncode} before printing {prefix!r}; "
                                  f"stderr: {self.stderr_tail()}")
            time.sleep(0.05)
        raise LaunchError(f"{self.name} printed no {prefix!r} line within {timeout_s:g}s; stderr: {self.stderr_tail()}")

    def wait(self, timeout_s: float) -> Optional[int]:
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout_s: float = 8.0) -> Optional[int]:
        """SIGTERM the process group, then SIGKILL after ``timeout_s``."""
        self.signal(signal.SIGTERM)
        code = self.wait(timeout_s)
        if code is None:
            logger.warning("%s did not stop within %gs; killing it", self.name, timeout_s)
            self.signal(signal.SIGKILL)
            code = self.wait(5.0)
        self._out.close()
        self._err.close()
        return code

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(5.0)

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def run_checked(argv: Sequence[str], timeout_s: float) -> str:
    """Run a short command, return stdout; LaunchError quoting stderr on failure."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise LaunchError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout
