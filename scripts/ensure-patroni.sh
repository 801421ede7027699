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
# The packages' own daemons must not run: they would hold the default ports
# and /var/lib/etcd.
"$(dirname "$0")/apt-install-quiet.sh" --stop etcd --stop patroni patroni python3-etcd etcd-server

have_all || { echo "patroni and etcd-server installed but patroni or etcd was not found in PATH" >&2; exit 1; }
