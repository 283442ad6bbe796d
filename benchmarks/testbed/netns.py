"""Where the bench's processes run: inside the namespace testbed, or plainly on loopback.

:class:`NamespaceTestbed` drives ``deploy/testbed/setup.sh``/``teardown.sh`` (root,
iproute2, cgroup v1) and wraps commands so that the edge runs in ``si-edge`` under
the CPU quota pinned to one core, and the cloud side runs in ``si-cloud`` pinned to
the other. :class:`LoopbackTestbed` is the fallback without root: everything on
127.0.0.1, the proxy shapes the uplink in user space, and the edge is not throttled
(the results say so).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass
from typing import Optional, Sequence

from benchmarks.testbed.proxy import tbf_burst_bytes

REPO = pathlib.Path(__file__).resolve().parents[2]
SETUP = REPO / "deploy" / "testbed" / "setup.sh"
TEARDOWN = REPO / "deploy" / "testbed" / "teardown.sh"

EDGE_NS = "si-edge"
CLOUD_NS = "si-cloud"
EDGE_IF = "si-e0"
EDGE_ADDR = "10.77.0.1"
CLOUD_ADDR = "10.77.0.2"
CGROUP = pathlib.Path("/sys/fs/cgroup/cpu/si-edge")
CLOUD_CGROUP = pathlib.Path("/sys/fs/cgroup/cpu/si-cloud")


def namespaces_available() -> tuple[bool, str]:
    """Whether the namespace testbed can run here, and why not."""
    if os.geteuid() != 0:
        return False, "not running as root"
    for tool in ("ip", "tc", "taskset"):
        if shutil.which(tool) is None:
            return False, f"{tool!r} is not installed"
    if not pathlib.Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists():
        return False, "cgroup v1 cpu controller is not mounted at /sys/fs/cgroup/cpu"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return False, f"'ip netns' does not work: {probe.stderr.strip()}"
    return True, ""


@dataclass(frozen=True)
class TestbedSettings:
    edge_slowdown: float = 4.0
    edge_cpu: int = 0
    cloud_cpu: int = 1
    period_us: int = 20000


class NamespaceTestbed:
    """The real-kernel testbed: netns + veth + tbf + cgroup quota + taskset."""

    kind = "namespaces"
    cloud_host = CLOUD_ADDR  # where the edge side reaches the server (through the veth)
    bind_host = "0.0.0.0"

    def __init__(self, settings: TestbedSettings = TestbedSettings()) -> None:
        self.settings = settings

    def setup(self, uplink_kbps: Optional[float] = 10_000.0) -> None:
        env = dict(os.environ, SI_UPLINK_MBIT=str((uplink_kbps or 10_000_000) / 1000.0),
                   SI_EDGE_SLOWDOWN=str(self.settings.edge_slowdown), SI_PERIOD_US=str(self.settings.period_us))
        subprocess.run([str(SETUP)], check=True, env=env, capture_output=True, text=True)

    def teardown(self) -> None:
        subprocess.run([str(TEARDOWN)], check=False, capture_output=True, text=True)

    def set_uplink(self, uplink_kbps: Optional[float]) -> None:
        rate_kbit = int(uplink_kbps) if uplink_kbps is not None else 10_000_000
        burst = tbf_burst_bytes(rate_kbit)
        subprocess.run(["ip", "netns", "exec", EDGE_NS, "tc", "qdisc", "replace", "dev", EDGE_IF, "root", "tbf",
                        "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", "300ms"],
                       check=True, capture_output=True, text=True)

    @property
    def tc_dev(self) -> Optional[str]:
        return EDGE_IF

    def edge_command(self, argv: Sequence[str]) -> list[str]:
        """Run in si-edge, in the throttled cgroup, on the edge core."""
        # join the cgroup before entering the namespace: `ip netns exec` remounts /sys,
        # which hides /sys/fs/cgroup; children inherit the cgroup
        inner = " ".join(_quote(a) for a in argv)
        script = (f"echo $$ > {CGROUP}/cgroup.procs && "
                  f"exec ip netns exec {EDGE_NS} taskset -c {self.settings.edge_cpu} {inner}")
        return ["sh", "-c", script]

    def edge_command_unthrottled(self, argv: Sequence[str]) -> list[str]:
        """Run in si-edge on the edge core, outside the quota until :meth:`throttle` moves it in
        (``ip netns exec`` and ``taskset`` exec in place: the child's pid is the program's)."""
        return ["ip", "netns", "exec", EDGE_NS, "taskset", "-c", str(self.settings.edge_cpu), *argv]

    def throttle(self, pid: int) -> None:
        """Move a running process and its descendants (every thread of each) into the throttled edge
        cgroup, so that it does not matter whether a wrapper exec'd or forked the program."""
        for each in [pid, *_descendants(pid)]:
            try:
                (CGROUP / "cgroup.procs").write_text(f"{each}\n")
            except ProcessLookupError:
                pass  # exited meanwhile

    def throttled_pids(self) -> set[int]:
        return {int(x) for x in (CGROUP / "cgroup.procs").read_text().split()}

    def edge_helper_command(self, argv: Sequence[str]) -> list[str]:
        """Run in si-edge without the throttle (the link proxy), on the cloud core."""
        return ["ip", "netns", "exec", EDGE_NS, "taskset", "-c", str(self.settings.cloud_cpu), *argv]

    def cloud_command(self, argv: Sequence[str]) -> list[str]:
        """Run in si-cloud, in the cloud cgroup (priority, no quota), on the cloud core."""
        inner = " ".join(_quote(a) for a in argv)
        script = (f"echo $$ > {CLOUD_CGROUP}/cgroup.procs && "
                  f"exec ip netns exec {CLOUD_NS} taskset -c {self.settings.cloud_cpu} {inner}")
        return ["sh", "-c", script]

    def link_bytes(self) -> int:
        """Bytes that crossed the edge's veth (both directions, headers included)."""
        total = 0
        for name in ("tx_bytes", "rx_bytes"):
            out = subprocess.run(["ip", "netns", "exec", EDGE_NS, "cat", f"/sys/class/net/{EDGE_IF}/statistics/{name}"],
                                 check=True, capture_output=True, text=True)
            total += int(out.stdout.strip())
        return total

    def describe(self) -> dict:
        return {"kind": self.kind, "edge_namespace": EDGE_NS, "cloud_namespace": CLOUD_NS,
                "edge_addr": EDGE_ADDR, "cloud_addr": CLOUD_ADDR, "uplink_shaping": "tc tbf on si-e0",
                "edge_cpu_quota": f"{self.settings.period_us / self.settings.edge_slowdown:.0f}/"
                                  f"{self.settings.period_us} us ({self.settings.edge_slowdown:g}x slower than one core)",
                "edge_cpu": self.settings.edge_cpu, "cloud_cpu": self.settings.cloud_cpu,
                "cpu_shares": "8192 for si-edge and si-cloud (8x default), to shield them from other work"}


class LoopbackTestbed:
    """No root: loopback, user-space shaping in the proxy, no CPU throttle."""

    kind = "loopback"
    cloud_host = "127.0.0.1"
    bind_host = "127.0.0.1"

    def __init__(self, settings: TestbedSettings = TestbedSettings()) -> None:
        self.settings = settings

    def setup(self, uplink_kbps: Optional[float] = None) -> None:
        pass

    def teardown(self) -> None:
        pass

    def set_uplink(self, uplink_kbps: Optional[float]) -> None:
        pass  # the proxy shapes from its schedule

    @property
    def tc_dev(self) -> Optional[str]:
        return None

    def edge_command(self, argv: Sequence[str]) -> list[str]:
        return _taskset(self.settings.edge_cpu, argv)

    def edge_command_unthrottled(self, argv: Sequence[str]) -> list[str]:
        return _taskset(self.settings.edge_cpu, argv)

    def throttle(self, pid: int) -> None:
        pass  # no quota on loopback

    def edge_helper_command(self, argv: Sequence[str]) -> list[str]:
        return _taskset(self.settings.cloud_cpu, argv)

    def cloud_command(self, argv: Sequence[str]) -> list[str]:
        return _taskset(self.settings.cloud_cpu, argv)

    def link_bytes(self) -> Optional[int]:
        return None

    def describe(self) -> dict:
        return {"kind": self.kind, "uplink_shaping": "user-space token bucket in the proxy",
                "edge_cpu_quota": "none (not root): the edge runs at full speed",
                "edge_cpu": self.settings.edge_cpu, "cloud_cpu": self.settings.cloud_cpu}


def _descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` from /proc/PID/task/*/children (empty when it is gone)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in pathlib.Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            stack += kids
    return out


def _taskset(cpu: int, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else list(argv)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
