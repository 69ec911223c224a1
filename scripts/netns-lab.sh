#!/usr/bin/env bash
# netns-lab.sh - a throw-away multicast network made of Linux network
# namespaces, for dimg's send/receive tests and `make bench`.
#
#   "<P>tx"   --veth--+
#   "<P>rx1"  --veth--+-- bridge br0 in "<P>hub" (layer 2 only, no uplink:
#   ...               |   nothing in the lab can reach a real network)
#   "<P>rxN"  --veth--+
#
# Usage (root):
#   netns-lab.sh up N [--rate RATE] [--loss PCT] [--prefix P] [--mtu BYTES]
#   netns-lab.sh down [--prefix P]
#   netns-lab.sh env  [--prefix P]    # the KEY=VALUE lines `up` prints
#
#   --rate RATE  shape both directions of every link with tbf (e.g. 400mbit).
#   --loss PCT   drop PCT percent of the frames the bridge forwards, at random
#                and independently per port (an nftables bridge rule: no
#                sch_netem needed).
#   --prefix P   namespace name prefix (up to 8 of [A-Za-z0-9_-]); labs with
#                different prefixes can run side by side.
#   --mtu BYTES  MTU of every link (default 1500).
#
# `up` prints KEY=VALUE lines on stdout (shell-sourceable, easy to parse):
#   LAB_IF  LAB_TX_NS  LAB_TX_ADDR  LAB_RXk_NS  LAB_RXk_ADDR  LAB_N
# Progress and errors go to stderr.
#
# Every namespace the lab creates is marked (an alias on its lo); `up` refuses
# to reuse a namespace of the same name without the mark and `down` deletes
# only marked ones, after ending the processes inside. `up` on a running lab
# rebuilds it; `down` on a missing one does nothing. Run callers under
# `unshare -n` so that a command started outside `ip netns exec` by mistake
# sees only lo.
set -Eeuo pipefail

PROG=${0##*/}
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

CMD=${1:-}
[[ -n $CMD ]] || usage
shift
N=0
if [[ $CMD == up ]]; then
  [[ ${1:-} =~ ^[0-9]+$ ]] || die "up needs the number of receivers, e.g. '$PROG up 3'"
  N=$1
  shift
  (( N >= 1 && N <= 100 )) || die "between 1 and 100 receivers"
fi
PREFIX="" RATE="" LOSS="" MTU=1500 READY=0
while (( $# )); do
  case $1 in
    --rate) RATE=${2:?}; shift 2 ;;
    --loss) LOSS=${2:?}; shift 2 ;;
    --prefix) PREFIX=${2?}; shift 2 ;;
    --mtu) MTU=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    *) die "unknown argument '$1'" ;;
  esac
done
[[ $PREFIX =~ ^[A-Za-z0-9_-]{0,8}$ ]] || die "--prefix: up to 8 of [A-Za-z0-9_-]"
[[ $MTU =~ ^[0-9]+$ ]] && (( MTU >= 576 && MTU <= 65535 )) || die "--mtu: 576 to 65535"
[[ -z $LOSS || $LOSS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--loss wants a percentage such as 0.5"
[[ -z $RATE || $RATE =~ ^[0-9]+(\.[0-9]+)?[kmgKMG]?(bit|bps)$ ]] || die "--rate wants e.g. 100mbit or 1gbit"

SUBNET=10.200.0 IFN=eth0 BR=br0
HUB=${PREFIX}hub TX=${PREFIX}tx
MARK="dimg-netns-lab:${PREFIX:-_}"
rxns() { echo "${PREFIX}rx$1"; }

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
for tool in ip bridge; do command -v $tool >/dev/null || die "$tool not found (iproute2)"; done
if [[ $CMD == up ]]; then
  [[ -z $RATE ]] || command -v tc >/dev/null || die "--rate needs tc (iproute2)"
  [[ -z $LOSS ]] || command -v nft >/dev/null || die "--loss needs nft (nftables)"
fi

# One invocation per prefix at a time.
if command -v flock >/dev/null; then
  mkdir -p /run/dimg-netns-lab
  exec 9>"/run/dimg-netns-lab/${PREFIX:-_}.lock"
  flock -w 60 9 || die "another $PROG holds the lock for prefix '${PREFIX}'"
fi

exists() { [[ -e /run/netns/$1 ]]; }
ours() { [[ $(ip -n "$1" link show lo 2>/dev/null | awk '$1 == "alias" {print $2}') == "$MARK" ]]; }
# sysctl inside a namespace; keys the kernel lacks are skipped.
nsysctl() { ip netns exec "$1" sh -c "[ ! -w /proc/sys/$2 ] || echo $3 > /proc/sys/$2"; }

our_namespaces() {
  local n
  for n in $(ip netns list | awk '{print $1}'); do
    [[ $n =~ ^${PREFIX}(hub|tx|rx[0-9]+)$ ]] && ours "$n" && echo "$n"
  done
  return 0
}

down() {
  local n pids p i
  for n in $(our_namespaces); do
    pids=$(ip netns pids "$n" 2>/dev/null || true)
    if [[ -n $pids ]]; then
      for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
      for i in $(seq 10); do
        pids=$(ip netns pids "$n" 2>/dev/null || true)
        [[ -z $pids ]] && break
        sleep 0.2
      done
      for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    fi
    ip netns del "$n" 2>/dev/null || say "warning: could not delete namespace $n"
  done
}

addr_of() { ip -n "$1" -4 -o addr show scope global | awk '{sub(/\/.*/, "", $4); print $4; exit}'; }

print_env() {
  local n k cnt=0
  exists "$TX" && ours "$TX" || die "no lab with prefix '${PREFIX}' is up"
  echo "LAB_PREFIX=${PREFIX}"
  echo "LAB_IF=${IFN}"
  echo "LAB_TX_NS=${TX}"
  echo "LAB_TX_ADDR=$(addr_of "$TX")"
  for n in $(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}rx[0-9]+$" | sort -V); do
    ours "$n" || continue
    k=${n#"${PREFIX}rx"}
    echo "LAB_RX${k}_NS=$n"
    echo "LAB_RX${k}_ADDR=$(addr_of "$n")"
    cnt=$((cnt + 1))
  done
  echo "LAB_N=$cnt"
}

up() {
  local n i
  for n in "$HUB" "$TX" $(for ((i = 1; i <= N; i++)); do rxns "$i"; done); do
    if exists "$n" && ! ours "$n"; then
      die "namespace '$n' exists and is not this lab's; pick another --prefix"
    fi
  done
  down
  # A lab half built when a step fails is removed again.
  trap '[[ $READY == 1 ]] || { say "setup failed, removing the lab"; down; }' EXIT
  trap 'exit 130' INT TERM HUP

  newns() {
    ip netns add "$1"
    ip -n "$1" link set lo alias "$MARK"
    ip -n "$1" link set lo up
    nsysctl "$1" net/ipv6/conf/all/disable_ipv6 1 # no IPv6 chatter on the links
    nsysctl "$1" net/ipv6/conf/default/disable_ipv6 1
    nsysctl "$1" net/ipv4/conf/all/rp_filter 0
    nsysctl "$1" net/ipv4/conf/default/rp_filter 0
  }
  # plug NS ADDRESS PORT: a veth from namespace NS to bridge port PORT.
  plug() {
    ip link add name "$3" netns "$HUB" mtu "$MTU" type veth peer name "$IFN" netns "$1" mtu "$MTU"
    ip -n "$HUB" link set "$3" master "$BR" up
    ip -n "$1" addr add "$2/24" brd + dev "$IFN"
    ip -n "$1" link set "$IFN" up
    # Multicast goes out of IFN without a default route.
    ip -n "$1" route add 224.0.0.0/4 dev "$IFN"
    nsysctl "$1" "net/ipv4/conf/$IFN/rp_filter" 0
    if [[ -n $RATE ]]; then
      ip netns exec "$1" tc qdisc replace dev "$IFN" root tbf rate "$RATE" burst 256kb latency 20ms
      ip netns exec "$HUB" tc qdisc replace dev "$3" root tbf rate "$RATE" burst 256kb latency 20ms
    fi
  }

  newns "$HUB"
  # No IGMP snooping: the bridge floods multicast to every port.
  ip -n "$HUB" link add "$BR" type bridge stp_state 0 mcast_snooping 0
  ip -n "$HUB" link set "$BR" mtu "$MTU" up
  newns "$TX"
  plug "$TX" "$SUBNET.1" p-tx
  for ((i = 1; i <= N; i++)); do
    newns "$(rxns "$i")"
    plug "$(rxns "$i")" "$SUBNET.$((10 + i))" "p-rx$i"
  done
  if [[ -n $LOSS ]]; then
    local per100k
    per100k=$(awk -v p="$LOSS" 'BEGIN { printf "%d", p * 1000 + 0.5 }')
    (( per100k <= 100000 )) || die "--loss is a percentage: at most 100"
    ip netns exec "$HUB" nft -f - <<EOF
table bridge dimg_lab {
  chain loss {
    type filter hook forward priority 0; policy accept;
    numgen random mod 100000 < $per100k drop
  }
}
EOF
  fi
  for ((i = 0; i < 50; i++)); do
    (( $(bridge -n "$HUB" link show | grep -c 'state forwarding') == N + 1 )) && break
    sleep 0.1
  done
  (( i < 50 )) || die "the bridge ports did not start forwarding"
  READY=1
  say "lab '${PREFIX}' up: $TX ($SUBNET.1) and $N receivers, mtu $MTU, rate ${RATE:-unlimited}, loss ${LOSS:-0}%"
  print_env
}

case $CMD in
  up) up ;;
  down) down ;;
  env) print_env ;;
  *) usage ;;
esac
