#!/usr/bin/env bash
# Several "hosts" on one machine: Linux network namespaces joined by veth pairs and a bridge,
# each with its own address, so a cluster runs across them with the same configs (addresses,
# ports) as a real multi-host deployment, and its traffic really crosses network interfaces.
# Needs root (ip netns, ip link).
#
#   deploy/netns/cluster.sh up N            namespaces ${PREFIX}1..N, host i at ${SUBNET}.(10+i),
#                                           a bridge ${PREFIX}br at ${SUBNET}.1 in this namespace
#   deploy/netns/cluster.sh down            removes every namespace and the bridge it made
#   deploy/netns/cluster.sh address I       prints host I's address
#   deploy/netns/cluster.sh exec I CMD...   runs CMD in host I (with UCX_NET_DEVICES=eth0)
#   deploy/netns/cluster.sh serve CONFIG    starts `switchyard serve` for every [[node]] of CONFIG
#                                           in the host whose address is the node's `host`, and
#                                           waits (Ctrl-C/SIGTERM stops them all)
#
# Environment: SY_NETNS_PREFIX (default "sy"; at most 8 characters, names interfaces too),
# SY_NETNS_SUBNET (default "10.77.0", a /24), SWITCHYARD (the binary; default build/apps/switchyard).
set -euo pipefail

prefix=${SY_NETNS_PREFIX:-sy}
subnet=${SY_NETNS_SUBNET:-10.77.0}
[ "${#prefix}" -le 8 ] || { echo "cluster.sh: SY_NETNS_PREFIX must be at most 8 characters"; exit 2; }
bridge="${prefix}br"

die() { echo "cluster.sh: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"; }
address() { echo "$subnet.$((10 + $1))"; }

up() {
  need_root
  local n=$1
  [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "up N: N must be in 1..200"
  ip link add "$bridge" type bridge
  ip addr add "$subnet.1/24" dev "$bridge"
  ip link set "$bridge" up
  for i in $(seq 1 "$n"); do
    local ns="$prefix$i" outer="${prefix}v$i"
    ip netns add "$ns"
    ip link add "$outer" type veth peer name eth0 netns "$ns"
    ip link set "$outer" master "$bridge"
    ip link set "$outer" up
    ip -n "$ns" addr add "$(address "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$subnet.1"
  done
  echo "cluster.sh: $n hosts up: $(for i in $(seq 1 "$n"); do printf '%s=%s ' "$prefix$i" "$(address "$i")"; done)"
}

down() {
  need_root
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${prefix}[0-9]+$" || true); do
    ip netns del "$ns"
  done
  # The outer veth ends go with their namespaces, unless a process still holds one: remove them.
  for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^${prefix}v[0-9]+$" || true); do
    ip link del "$link" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
}

host_of_address() {  # ADDRESS -> I
  local last=${1##*.}
  [ "${1%.*}" = "$subnet" ] && [ "$last" -gt 10 ] || die "$1 is not a host address of $subnet.0/24"
  echo $((last - 10))
}

run_in() {
  need_root
  local i=$1; shift
  # A host reaches its peers through eth0 (its veth); loopback would reach only itself. exec: the
  # caller's pid becomes the command's (signals reach it, nothing is left behind).
  exec ip netns exec "$prefix$i" env UCX_NET_DEVICES=eth0 "$@"
}

serve() {
  need_root
  local config=$1 sy=${SWITCHYARD:-build/apps/switchyard}
  [ -f "$config" ] || die "no config $config"
  local pids=()
  trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait' INT TERM EXIT
  # name and host of every [[node]], in file order.
  while read -r name host; do
    (run_in "$(host_of_address "$host")" "$sy" serve --config "$config" --node "$name") &
    pids+=($!)
  done < <(awk '/^\[\[node\]\]/{n=""; h=""} /^name *=/{gsub(/[" ]/,"",$3); n=$3} /^host *=/{gsub(/[" ]/,"",$3); h=$3}
               n!="" && h!="" {print n, h; n=""; h=""}' "$config")
  wait
}

case "${1:-}" in
  up) up "${2:?up N}" ;;
  down) down ;;
  address) address "${2:?address I}" ;;
  exec) shift; i=${1:?exec I CMD...}; shift; run_in "$i" "$@" ;;
  serve) serve "${2:?serve CONFIG}" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
