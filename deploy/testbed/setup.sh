#!/usr/bin/env bash
# Emulated edge testbed: two network namespaces joined by a veth pair, the edge's
# uplink shaped by tc tbf, and a cgroup v1 CPU quota that slows the edge down.
#
# Idempotent: running it again with other settings changes the shaping and quota
# in place. Undo everything with teardown.sh. Needs root, iproute2 and cgroup v1 cpu.
#
# Settings (environment):
#   SI_UPLINK_MBIT   edge -> cloud rate in Mbit/s (tbf)             default 10
#   SI_EDGE_SLOWDOWN edge CPU = one core / this factor (cfs quota)   default 4
#   SI_PERIOD_US     cfs period in microseconds                      default 20000
#
# Layout (traffic stays between the two namespaces on this machine):
#   si-edge: si-e0 10.77.0.1/30, lo up; root qdisc tbf on si-e0 (edge uplink)
#   si-cloud: si-c0 10.77.0.2/30, lo up
#   /sys/fs/cgroup/cpu/si-edge: cpu.cfs_quota_us = SI_PERIOD_US / SI_EDGE_SLOWDOWN
#   /sys/fs/cgroup/cpu/si-cloud: no quota
#   both with cpu.shares 8192 (8x the default) so that other work on this machine
#   disturbs the measurements less; the quota still caps the edge
set -euo pipefail

EDGE_NS=si-edge
CLOUD_NS=si-cloud
EDGE_IF=si-e0
CLOUD_IF=si-c0
EDGE_ADDR=10.77.0.1/30
CLOUD_ADDR=10.77.0.2/30
CGROUP=/sys/fs/cgroup/cpu/si-edge
CLOUD_CGROUP=/sys/fs/cgroup/cpu/si-cloud
SHARES=8192

UPLINK_MBIT=${SI_UPLINK_MBIT:-10}
SLOWDOWN=${SI_EDGE_SLOWDOWN:-4}
PERIOD_US=${SI_PERIOD_US:-20000}

die() { echo "setup.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, tc and cgroups need it)"
command -v ip >/dev/null || die "iproute2 'ip' not found"
command -v tc >/dev/null || die "iproute2 'tc' not found"
[ -d /sys/fs/cgroup/cpu ] || die "cgroup v1 cpu controller not mounted at /sys/fs/cgroup/cpu"
awk -v r="$UPLINK_MBIT" 'BEGIN{exit !(r > 0)}' || die "SI_UPLINK_MBIT=$UPLINK_MBIT; expected a rate > 0"
awk -v s="$SLOWDOWN" 'BEGIN{exit !(s >= 1)}' || die "SI_EDGE_SLOWDOWN=$SLOWDOWN; expected a factor >= 1"

# --- namespaces and veth
for ns in "$EDGE_NS" "$CLOUD_NS"; do
  ip netns list | awk '{print $1}' | grep -qx "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
done
if ! ip -n "$EDGE_NS" link show "$EDGE_IF" >/dev/null 2>&1; then
  # a half-made pair left in the root namespace by an interrupted run
  ip link del "$EDGE_IF" >/dev/null 2>&1 || true
  ip -n "$CLOUD_NS" link del "$CLOUD_IF" >/dev/null 2>&1 || true
  ip link add "$EDGE_IF" type veth peer name "$CLOUD_IF"
  ip link set "$EDGE_IF" netns "$EDGE_NS"
  ip link set "$CLOUD_IF" netns "$CLOUD_NS"
fi
ip -n "$EDGE_NS" addr replace "$EDGE_ADDR" dev "$EDGE_IF"
ip -n "$CLOUD_NS" addr replace "$CLOUD_ADDR" dev "$CLOUD_IF"
ip -n "$EDGE_NS" link set "$EDGE_IF" up
ip -n "$CLOUD_NS" link set "$CLOUD_IF" up
# no offloads: tbf should see real packet sizes
ip netns exec "$EDGE_NS" ethtool -K "$EDGE_IF" tso off gso off gro off >/dev/null 2>&1 || true

# --- uplink shaping (edge egress)
RATE_KBIT=$(awk -v r="$UPLINK_MBIT" 'BEGIN{printf "%d", r * 1000}')
# burst: two full-size packets, or 4 ms worth of the rate; a bigger bucket would let a
# whole frame's activation leave at line speed and hide the rate from small messages
BURST_B=$(awk -v k="$RATE_KBIT" 'BEGIN{b = k * 1000 / 8 * 0.004; if (b < 3100) b = 3100; printf "%d", b}')
ip netns exec "$EDGE_NS" tc qdisc replace dev "$EDGE_IF" root tbf rate "${RATE_KBIT}kbit" burst "$BURST_B" latency 300ms

# --- edge CPU throttle
mkdir -p "$CGROUP"
QUOTA_US=$(awk -v p="$PERIOD_US" -v s="$SLOWDOWN" 'BEGIN{printf "%d", p / s}')
echo "$PERIOD_US" > "$CGROUP/cpu.cfs_period_us"
echo "$QUOTA_US" > "$CGROUP/cpu.cfs_quota_us"
echo "$SHARES" > "$CGROUP/cpu.shares"
mkdir -p "$CLOUD_CGROUP"
echo "$SHARES" > "$CLOUD_CGROUP/cpu.shares"

echo "testbed up: $EDGE_NS ${EDGE_ADDR%/*} -> $CLOUD_NS ${CLOUD_ADDR%/*}, uplink ${UPLINK_MBIT} Mbit/s (tbf), edge CPU quota ${QUOTA_US}/${PERIOD_US} us (${SLOWDOWN}x slower than one core) in $CGROUP"
