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
"$(dirname "$0")/apt-install-quiet.sh" --stop pgbouncer pgbouncer
have || { echo "pgbouncer installed but not found" >&2; exit 1; }
