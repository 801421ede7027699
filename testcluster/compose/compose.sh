#!/bin/sh
# The Makefile's way to docker-compose.replication.yml, with whichever compose
# tool works here (`docker compose`, else `docker-compose`).
#
#   compose.sh engine   exit 0 when a Docker engine answers (within 20s)
#   compose.sh up       start the cluster (project pgxha), wait until every node
#                       is healthy, print the DSN
#   compose.sh down     remove the project: containers, network and volumes
#   compose.sh dsn      print the DSN
#
# Environment: PGXHA_COMPOSE_PROJECT (default pgxha), and the file's own
# variables (PGXHA_PG_IMAGE, PGXHA_N1_PORT, ...).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
file=$root/docker-compose.replication.yml
project=${PGXHA_COMPOSE_PROJECT:-pgxha}

compose() {
	if docker compose version >/dev/null 2>&1; then
		docker compose -f "$file" -p "$project" "$@"
	elif docker-compose version >/dev/null 2>&1; then
		docker-compose -f "$file" -p "$project" "$@"
	else
		echo "no compose tool: install the docker compose plugin or docker-compose" >&2
		exit 1
	fi
}

dsn() {
	printf 'postgres://%s:%s@127.0.0.1:%s,127.0.0.1:%s,127.0.0.1:%s/%s?sslmode=disable\n' \
		"${PGXHA_PG_USER:-postgres}" "${PGXHA_PG_PASSWORD:-postgres}" \
		"${PGXHA_N1_PORT:-15432}" "${PGXHA_N2_PORT:-15433}" "${PGXHA_N3_PORT:-15434}" \
		"${PGXHA_PG_DATABASE:-postgres}"
}

case ${1:-} in
engine)
	timeout 20 docker info >/dev/null 2>&1
	;;
up)
	compose up -d
	for service in n1 n2 n3; do
		id=$(compose ps -q "$service")
		tries=0
		until [ "$(docker inspect -f '{{.State.Health.Status}}' "$id")" = healthy ]; do
			tries=$((tries + 1))
			if [ "$tries" -gt 180 ]; then
				echo "$service is not healthy after 3 minutes:" >&2
				docker logs --tail 30 "$id" >&2
				exit 1
			fi
			sleep 1
		done
	done
	echo "pgxha compose cluster up: n1 master, n2 sync replica, n3 async replica"
	dsn
	;;
down)
	compose down -v --remove-orphans -t 10
	;;
dsn)
	dsn
	;;
*)
	echo "usage: compose.sh engine|up|down|dsn" >&2
	exit 2
	;;
esac
