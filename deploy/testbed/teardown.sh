#!/usr/bin/env bash
# Undo setup.sh: kill what still runs inside the testbed namespaces, delete them
# (which deletes the veth pair and its qdisc), move stray tasks out of the edge
# cgroups and remove them. Idempotent: safe to run when nothing is set up.
set -uo pipefail

EDGE_NS=si-edge
CLOUD_NS=si-cloud
EDGE_IF=si-e0
CGROUP=/sys/fs/cgroup/cpu/si-edge
CLOUD_CGROUP=/sys/fs/cgroup/cpu/si-cloud

[ "$(id -u)" = 0 ] || { echo "teardown.sh: must run as root" >&2; exit 1; }

for ns in "$EDGE_NS" "$CLOUD_NS"; do
  if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      sleep 1
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      # shellcheck disable=SC2086
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$ns"
  fi
done
# an interrupted setup may have left the pair in the root namespace
ip link del "$EDGE_IF" >/dev/null 2>&1 || true

for group in "$CGROUP" "$CLOUD_CGROUP"; do
  if [ -d "$group" ]; then
    while read -r pid; do
      [ -n "$pid" ] && echo "$pid" > /sys/fs/cgroup/cpu/cgroup.procs 2>/dev/null || true
    done < "$group/cgroup.procs"
    rmdir "$group"
  fi
done
echo "testbed down"
