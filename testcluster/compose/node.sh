#!/bin/sh
# One PostgreSQL node of docker-compose.replication.yml. It is the containers'
# entrypoint (mounted at /pgxha) and relies only on PostgreSQL's own programs,
# so it works on the official postgres image and on the Debian-built one
# (testcluster/compose/build-image.sh). It starts as root, prepares the
# directories, and runs every PostgreSQL program as the postgres user.
#
#   node.sh master  NAME [SYNCHRONOUS_STANDBY_NAMES]  first start: initdb; then run
#   node.sh replica NAME PRIMARY                      first start: pg_basebackup from PRIMARY; then run
#   node.sh rewind  SOURCE                            pg_rewind the (stopped) data directory from SOURCE
#   node.sh standby NAME PRIMARY                      make the (stopped) data directory a standby of PRIMARY
#   node.sh health                                    exit 0 when the server is a master or a streaming replica
#
# A data directory that exists is started as it is: the role only decides how
# an empty volume is filled. Environment: POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB (default postgres/postgres/postgres), PGDATA.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data/pgdata}
export PGDATA
user=${POSTGRES_USER:-postgres}
password=${POSTGRES_PASSWORD:-postgres}
db=${POSTGRES_DB:-postgres}
port=5432
sockets=/run/postgresql

log() { echo "pgxha node: $*" >&2; }
die() { log "$*"; exit 1; }

# bindir finds PostgreSQL's server programs: pg_config --bindir, then the
# newest /usr/lib/postgresql/*/bin (Debian's layout), then PATH.
bindir() {
	if command -v pg_config >/dev/null 2>&1; then
		d=$(pg_config --bindir 2>/dev/null || true)
		if [ -n "$d" ] && [ -x "$d/postgres" ]; then echo "$d"; return; fi
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn); do
		if [ -x "$d/postgres" ]; then echo "$d"; return; fi
	done
	d=$(command -v postgres 2>/dev/null || true)
	[ -n "$d" ] || die "no PostgreSQL server programs in this image"
	dirname "$d"
}
bin=$(bindir)

# as_postgres runs a command as the postgres user, keeping the environment;
# exec_as_postgres replaces this shell with it.
as_postgres() { (exec_as_postgres "$@"); }
exec_as_postgres() {
	if [ "$(id -u)" != 0 ]; then
		exec "$@"
	elif command -v setpriv >/dev/null 2>&1; then
		exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
	elif command -v runuser >/dev/null 2>&1; then
		exec runuser -u postgres -- "$@"
	else
		exec su -s /bin/sh postgres -c 'exec "$0" "$@"' "$@"
	fi
}

prepare_dirs() {
	mkdir -p "$(dirname "$PGDATA")" "$sockets"
	if [ "$(id -u)" = 0 ]; then
		chown postgres: "$(dirname "$PGDATA")" "$sockets"
		# A volume filled by an image whose postgres user has another uid.
		if [ -d "$PGDATA" ] && [ "$(stat -c %U "$PGDATA")" != postgres ]; then
			chown -R postgres: "$PGDATA"
		fi
	fi
	chmod 0775 "$sockets"
}

# conf_quote quotes a postgresql.conf value; conn_quote a libpq one.
conf_quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }
conn_quote() { printf "'%s'" "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/'"'"'/\\'"'"'/g')"; }

# write_standby DIR PRIMARY NAME: postgresql.auto.conf is rewritten whole, so
# nothing copied from another node (synchronous_standby_names, an old
# primary_conninfo) survives.
write_standby() {
	conninfo="host=$2 port=$port user=$(conn_quote "$user") password=$(conn_quote "$password") application_name=$3 sslmode=disable connect_timeout=2"
	printf '# managed by pgxha\nprimary_conninfo = %s\n' "$(conf_quote "$conninfo")" >"$1/postgresql.auto.conf"
	: >"$1/standby.signal"
	[ "$(id -u)" != 0 ] || chown postgres: "$1/postgresql.auto.conf" "$1/standby.signal"
}

# Settings every node shares; per-node ones (cluster_name) are given on the
# command line, so files copied between nodes (pg_basebackup, pg_rewind)
# never carry another node's identity.
server_conf() {
	cat <<-'EOF'

	# pgxha
	listen_addresses = '*'
	wal_level = replica
	max_wal_senders = 20
	max_replication_slots = 20
	wal_keep_size = '512MB'
	hot_standby = on
	hot_standby_feedback = on
	wal_log_hints = on
	synchronous_commit = on
	fsync = off
	shared_buffers = '32MB'
	max_connections = 200
	wal_receiver_status_interval = '1s'
	wal_retrieve_retry_interval = '100ms'
	wal_sender_timeout = '10s'
	wal_receiver_timeout = '10s'
	recovery_target_timeline = 'latest'
	password_encryption = 'scram-sha-256'
	jit = off
	log_line_prefix = '%m [%p] %q%a '
	EOF
}

hba_conf() {
	cat <<-'EOF'
	# managed by pgxha: trust on the local socket, passwords over TCP
	local   all          all                 trust
	local   replication  all                 trust
	host    all          all   0.0.0.0/0     scram-sha-256
	host    replication  all   0.0.0.0/0     scram-sha-256
	host    all          all   ::/0          scram-sha-256
	host    replication  all   ::/0          scram-sha-256
	EOF
}

# init_master NAME SYNC: initdb into a scratch directory that is renamed
# only when complete, so an interrupted first start is simply redone.
init_master() {
	tmp=$PGDATA.init
	rm -rf "$tmp"
	mkdir -m 0700 "$tmp"
	chown postgres: "$tmp" 2>/dev/null || true
	pwfile=$(mktemp)
	printf '%s\n' "$password" >"$pwfile"
	chown postgres: "$pwfile" 2>/dev/null || true
	as_postgres "$bin/initdb" -D "$tmp" -U "$user" --pwfile="$pwfile" \
		--auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >/dev/null
	rm -f "$pwfile"
	hba_conf >"$tmp/pg_hba.conf"
	server_conf >>"$tmp/postgresql.conf"
	if [ -n "$2" ]; then
		printf '# managed by pgxha\nsynchronous_standby_names = %s\n' "$(conf_quote "$2")" >"$tmp/postgresql.auto.conf"
	fi
	if [ "$db" != postgres ]; then
		printf 'CREATE DATABASE "%s"\n' "$(printf '%s' "$db" | sed 's/"/""/g')" |
			as_postgres "$bin/postgres" --single -D "$tmp" -c fsync=off postgres >/dev/null
	fi
	chown -R postgres: "$tmp" 2>/dev/null || true
	mv "$tmp" "$PGDATA"
	log "$1: initialized a master${2:+ (synchronous_standby_names = $2)}"
}

# init_replica NAME PRIMARY: a base backup of PRIMARY, once it accepts
# connections.
init_replica() {
	tries=0
	until "$bin/pg_isready" -q -h "$2" -p "$port" -U "$user" -d postgres -t 2; do
		tries=$((tries + 1))
		[ "$tries" -lt 600 ] || die "$1: $2 did not accept connections"
		sleep 0.2
	done
	tmp=$PGDATA.init
	rm -rf "$tmp"
	mkdir -m 0700 "$tmp"
	chown postgres: "$tmp" 2>/dev/null || true
	PGPASSWORD=$password as_postgres "$bin/pg_basebackup" -h "$2" -p "$port" -U "$user" \
		-D "$tmp" -X stream -c fast --no-sync
	write_standby "$tmp" "$2" "$1"
	mv "$tmp" "$PGDATA"
	log "$1: initialized a replica of $2"
}

run_server() {
	exec_as_postgres "$bin/postgres" -D "$PGDATA" -c port=$port -c cluster_name="$1" \
		-c unix_socket_directories="$sockets"
}

cmd=${1:-}
[ $# -eq 0 ] || shift
case $cmd in
master)
	[ $# -ge 1 ] || die "usage: node.sh master NAME [SYNCHRONOUS_STANDBY_NAMES]"
	prepare_dirs
	[ -f "$PGDATA/PG_VERSION" ] || init_master "$1" "${2:-}"
	run_server "$1"
	;;
replica)
	[ $# -eq 2 ] || die "usage: node.sh replica NAME PRIMARY"
	prepare_dirs
	[ -f "$PGDATA/PG_VERSION" ] || init_replica "$1" "$2"
	run_server "$1"
	;;
rewind)
	[ $# -eq 1 ] || die "usage: node.sh rewind SOURCE"
	prepare_dirs
	PGPASSWORD=$password as_postgres "$bin/pg_rewind" --target-pgdata="$PGDATA" \
		--source-server="host=$1 port=$port user=$(conn_quote "$user") dbname=postgres sslmode=disable connect_timeout=5"
	;;
standby)
	[ $# -eq 2 ] || die "usage: node.sh standby NAME PRIMARY"
	prepare_dirs
	write_standby "$PGDATA" "$2" "$1"
	;;
health)
	state=$("$bin/psql" -X -q -A -t -h "$sockets" -p $port -U "$user" -d postgres -c \
		"SELECT CASE WHEN pg_is_in_recovery() THEN coalesce((SELECT status FROM pg_stat_wal_receiver), 'not streaming') ELSE 'master' END")
	case $state in
	master | streaming) exit 0 ;;
	*) echo "$state"; exit 1 ;;
	esac
	;;
*)
	die "usage: node.sh master|replica|rewind|standby|health ..."
	;;
esac
