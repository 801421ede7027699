#!/usr/bin/env bash
# Makes sure dnsmasq is installed, for the discovery tests' DNS server; installs
# Debian's dnsmasq-base when it is missing. dnsmasq-base is the program alone:
# it has no service, so nothing starts at install time and nothing holds port
# 53 or touches the system resolver. Tests run their own dnsmasq on a
# loopback port, with their own configuration. Should the full dnsmasq
# package be installed instead, its service is kept from starting as
# scripts/ensure-patroni.sh does.
set -euo pipefail

have_dnsmasq() {
	command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ]
}

if have_dnsmasq; then
	exit 0
fi

echo "dnsmasq not found; installing Debian's dnsmasq-base" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
		echo "need root (or sudo) to install dnsmasq-base" >&2
		exit 1
	fi
fi

# invoke-rc.d and deb-systemd-invoke ask policy-rc.d whether a service may
# start; 101 means "no". dnsmasq-base has no service, but a policy costs
# nothing and holds should apt pull in the full package.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
	printf '#!/bin/sh\n# installed by pgxha scripts/ensure-dnsmasq.sh for one apt-get install\nexit 101\n' |
		$SUDO tee "$POLICY" >/dev/null
	$SUDO chmod 755 "$POLICY"
	own_policy=1
fi
cleanup() {
	if [ "$own_policy" = 1 ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends dnsmasq-base >/dev/null

# A service from elsewhere (the full dnsmasq package) must not run: it would
# hold port 53 and may rewrite the system resolver's configuration.
if [ -x /etc/init.d/dnsmasq ] && /etc/init.d/dnsmasq status >/dev/null 2>&1; then
	echo "stopping the dnsmasq service the package started" >&2
	$SUDO /etc/init.d/dnsmasq stop >/dev/null 2>&1 || true
fi

have_dnsmasq || { echo "dnsmasq-base installed but dnsmasq was not found" >&2; exit 1; }
