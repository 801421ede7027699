#!/usr/bin/env bash
# Makes sure Patroni and etcd are installed, for testcluster's Patroni backend;
# installs Debian's packages (patroni, etcd-server) when either is missing.
# The packages' services are kept from starting: tests start their own etcd
# and Patroni processes, and nothing may rely on an init system.
set -euo pipefail

# have_all: patroni and etcd in PATH, and patroni's own interpreter (from its
# #! line, which may not be the python3 first in PATH) has the etcd client.
have_all() {
	local patroni py
	patroni=$(command -v patroni 2>/dev/null) || return 1
	command -v etcd >/dev/null 2>&1 || return 1
	py=$(head -n 1 "$patroni" | sed -n 's/^#! *\([^ ]*\).*/\1/p')
	[ -n "$py" ] || py=python3
	"$py" -c 'import etcd, psycopg2, yaml' >/dev/null 2>&1
}

if have_all; then
	exit 0
fi

echo "patroni or etcd not found; installing them from Debian's packages" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
		echo "need root (or sudo) to install patroni and etcd-server" >&2
		exit 1
	fi
fi

# invoke-rc.d and deb-systemd-invoke ask policy-rc.d whether a service may
# start; 101 means "no". Install one for the duration of the install unless
# the machine already has its own, and remove it afterwards.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
	printf '#!/bin/sh\n# installed by pgxha scripts/ensure-patroni.sh for one apt-get install\nexit 101\n' |
		$SUDO tee "$POLICY" >/dev/null
	$SUDO chmod 755 "$POLICY"
	own_policy=1
fi
cleanup() {
	if [ "$own_policy" = 1 ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
	patroni python3-etcd etcd-server >/dev/null

# The packages' own daemons must not run: they would hold the default ports
# and /var/lib/etcd. A policy from elsewhere may have let them start.
for svc in etcd patroni; do
	if [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
		echo "stopping the $svc service the package started" >&2
		$SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
	fi
done

have_all || { echo "patroni and etcd-server installed but patroni or etcd was not found in PATH" >&2; exit 1; }
