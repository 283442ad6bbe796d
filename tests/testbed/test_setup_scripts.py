"""setup.sh / teardown.sh are idempotent and leave nothing behind (root + ip netns only)."""
from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from benchmarks.testbed.netns import CGROUP, CLOUD_CGROUP, SETUP, TEARDOWN, namespaces_available

ok, why = namespaces_available()
pytestmark = pytest.mark.skipif(not ok, reason=f"namespace testbed unavailable: {why}")


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _run(script: pathlib.Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script)], capture_output=True, text=True, env=dict(os.environ, **env), timeout=60)


def test_setup_twice_then_teardown_twice_leaves_nothing() -> None:
    if {"si-edge", "si-cloud"} & _netns():
        pytest.skip("a testbed is already up (a bench may be running); not touching it")
    try:
        assert _run(SETUP, SI_UPLINK_MBIT="5").returncode == 0
        again = _run(SETUP, SI_UPLINK_MBIT="3", SI_EDGE_SLOWDOWN="2")
        assert again.returncode == 0, again.stderr
        assert {"si-edge", "si-cloud"} <= _netns()
        qdisc = subprocess.run(["ip", "netns", "exec", "si-edge", "tc", "qdisc", "show", "dev", "si-e0"],
                               capture_output=True, text=True, check=True).stdout
        assert "tbf" in qdisc and "3Mbit" in qdisc
        assert (CGROUP / "cpu.cfs_quota_us").read_text().strip() == "10000"  # 20000 us / 2
        assert (CLOUD_CGROUP / "cpu.shares").read_text().strip() == "8192"
        # the edge reaches the cloud across the veth, and only there
        probe = subprocess.run(["ip", "netns", "exec", "si-edge", "ip", "route", "get", "10.77.0.2"],
                               capture_output=True, text=True)
        assert probe.returncode == 0 and "si-e0" in probe.stdout
        bad = _run(SETUP, SI_UPLINK_MBIT="0")
        assert bad.returncode != 0 and "SI_UPLINK_MBIT=0" in bad.stderr
    finally:
        first = _run(TEARDOWN)
        second = _run(TEARDOWN)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    assert not ({"si-edge", "si-cloud"} & _netns())
    assert not CGROUP.exists() and not CLOUD_CGROUP.exists()
    links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert "si-e0" not in links and "si-c0" not in links
