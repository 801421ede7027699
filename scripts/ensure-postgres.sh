#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries (initdb, postgres, pg_rewind) are
# installed; installs them from Debian's packages when none can be found.
# No cluster is created or started by the package: tests make their own.
set -euo pipefail

have_server() {
	local d
	if [ -n "${PGXHA_PG_BINDIR:-}" ] && [ -x "$PGXHA_PG_BINDIR/initdb" ]; then return 0; fi
	if command -v pg_config >/dev/null 2>&1; then
		d=$(pg_config --bindir 2>/dev/null || true)
		if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_rewind" ]; then return 0; fi
	fi
	if command -v initdb >/dev/null 2>&1 && command -v pg_rewind >/dev/null 2>&1; then return 0; fi
	for d in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
		if [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && [ -x "$d/pg_rewind" ]; then return 0; fi
	done
	return 1
}

if have_server; then
	exit 0
fi

echo "PostgreSQL server binaries not found; installing them from Debian's packages" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
		echo "need root (or sudo) to install postgresql; or set PGXHA_PG_BINDIR" >&2
		exit 1
	fi
fi
# Keep the package from creating and starting its own cluster.
$SUDO mkdir -p /etc/postgresql-common
if ! grep -qs '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf; then
	echo 'create_main_cluster = false' | $SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
have_server || { echo "postgresql installed but its server binaries were not found" >&2; exit 1; }
