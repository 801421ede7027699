#!/usr/bin/env bash
# Makes sure PgBouncer is installed, for testcluster's PgBouncer option
# (Options.PgBouncer) and the tests that put it in front of the nodes;
# installs Debian's package when it is missing. The package's own service
# is kept from starting: tests start their own PgBouncer processes.
set -euo pipefail

have() {
	command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
}

if have; then
	exit 0
fi

echo "pgbouncer not found; installing it from Debian's packages" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
		echo "need root (or sudo) to install pgbouncer" >&2
		exit 1
	fi
fi

# invoke-rc.d asks policy-rc.d whether a service may start; 101 means "no".
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
	printf '#!/bin/sh\n# installed by pgxha scripts/ensure-pgbouncer.sh for one apt-get install\nexit 101\n' |
		$SUDO tee "$POLICY" >/dev/null
	$SUDO chmod 755 "$POLICY"
	own_policy=1
fi
cleanup() {
	if [ "$own_policy" = 1 ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null

if [ -x /etc/init.d/pgbouncer ] && /etc/init.d/pgbouncer status >/dev/null 2>&1; then
	echo "stopping the pgbouncer service the package started" >&2
	$SUDO /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
fi

have || { echo "pgbouncer installed but not found" >&2; exit 1; }
