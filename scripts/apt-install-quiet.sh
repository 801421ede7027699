#!/usr/bin/env bash
# apt-install-quiet.sh [--stop SERVICE]... PACKAGE... installs Debian
# packages without letting
# their services start: tests start their own processes (PostgreSQL,
# PgBouncer, dnsmasq, etcd, Patroni), and nothing may rely on an init
# system or hold a default port. Used by the ensure-*.sh scripts.
#
# invoke-rc.d and deb-systemd-invoke ask policy-rc.d whether a service may
# start; 101 means "no". One is installed for the duration of the install
# unless the machine already has its own, and removed afterwards; a service
# a policy from elsewhere let start is stopped.
set -euo pipefail
stop=()
while [ $# -gt 0 ] && [ "$1" = --stop ]; do
	[ $# -ge 2 ] || { echo "usage: $0 [--stop SERVICE]... PACKAGE..." >&2; exit 2; }
	stop+=("$2")
	shift 2
done
[ $# -gt 0 ] || { echo "usage: $0 [--stop SERVICE]... PACKAGE..." >&2; exit 2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
		echo "need root (or sudo) to install $*" >&2
		exit 1
	fi
fi

POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
	printf '#!/bin/sh\n# installed by pgxha scripts/apt-install-quiet.sh for one apt-get install\nexit 101\n' |
		$SUDO tee "$POLICY" >/dev/null
	$SUDO chmod 755 "$POLICY"
	own_policy=1
fi
cleanup() {
	if [ "$own_policy" = 1 ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null

for s in ${stop[@]+"${stop[@]}"}; do
	if [ -x "/etc/init.d/$s" ] && "/etc/init.d/$s" status >/dev/null 2>&1; then
		echo "stopping the $s service the package started" >&2
		$SUDO "/etc/init.d/$s" stop >/dev/null 2>&1 || true
	fi
done
