#!/bin/sh
# Sets the network faults of one node of docker-compose.replication.yml, in
# the network namespace it runs in: inside the container (docker exec, as
# root, with NET_ADMIN), or from the Docker host through nsenter when the
# image has no iptables. The test backend (testcluster/compose.go) runs it
# after every change and after every start, since a container gets a fresh
# network namespace each time it starts.
#
#   faults.sh PARTITION DELAY_US
#
# PARTITION=1 black-holes the server's port (5432) on every interface but
# loopback: packets of connections to it, old and new, are dropped in both
# directions, so clients hang (nothing is refused or reset) and replicas
# streaming from this node stall. Connections this node makes (its own
# walreceiver) are untouched. Connections to port 5433 are redirected to
# 5432 and exempt: the backend's way past the partition.
#
# DELAY_US>0 delays every packet the node sends on its interfaces by that
# many microseconds (tc netem); 0 removes the delay.
set -eu

[ $# -eq 2 ] || { echo "usage: faults.sh PARTITION DELAY_US" >&2; exit 2; }
partition=$1
delay=$2
pg=5432
direct=5433

# Exit status 3: this namespace lacks the tools (the backend then runs it
# from the host). Both are needed even to undo: faults set from the host
# are invisible without them.
for tool in iptables tc; do
	command -v $tool >/dev/null 2>&1 || { echo "faults.sh: no $tool here" >&2; exit 3; }
done

ipt() { iptables -w 5 "$@"; }

# Our own chains, created once and flushed on every call, so the script is
# idempotent.
chain() { # TABLE CHAIN HOOK
	ipt -t "$1" -N "$2" 2>/dev/null || true
	ipt -t "$1" -F "$2"
	ipt -t "$1" -C "$3" -j "$2" 2>/dev/null || ipt -t "$1" -I "$3" -j "$2"
}

if [ "$partition" = 1 ] || ipt -L PGXHA_IN >/dev/null 2>&1; then
	chain nat PGXHA_DIRECT PREROUTING
	chain filter PGXHA_IN INPUT
	chain filter PGXHA_OUT OUTPUT
	if [ "$partition" = 1 ]; then
		ipt -t nat -A PGXHA_DIRECT -p tcp --dport $direct -j REDIRECT --to-ports $pg
		ipt -A PGXHA_IN ! -i lo -p tcp --dport $pg -m conntrack ! --ctorigdstport $direct -j DROP
		ipt -A PGXHA_OUT ! -o lo -p tcp --sport $pg -m conntrack ! --ctorigdstport $direct -j DROP
	fi
fi

# The interfaces of this network namespace (/sys shows the mounter's, so ask
# the kernel through ip when there is one).
if command -v ip >/dev/null 2>&1; then
	devs=$(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }')
else
	devs=$(ls /sys/class/net)
fi
for dev in $devs; do
	[ "$dev" != lo ] || continue
	if [ "$delay" -gt 0 ]; then
		tc qdisc replace dev "$dev" root netem delay "${delay}us"
	else
		tc qdisc del dev "$dev" root 2>/dev/null || true
	fi
done
