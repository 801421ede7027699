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
# A service from elsewhere (the full dnsmasq package) must not run: it would
# hold port 53 and may rewrite the system resolver's configuration.
"$(dirname "$0")/apt-install-quiet.sh" --stop dnsmasq dnsmasq-base
have_dnsmasq || { echo "dnsmasq-base installed but dnsmasq was not found" >&2; exit 1; }
