#!/bin/sh
# Runs a command while one CPU burner per core keeps every core busy, and
# prints how long it took. `make test-busy` runs `make test` so: tests wait
# for the outcomes they assert, never for fixed times, and must pass on a
# machine whose cores are busy with something else.
#
#   scripts/busy.sh make test
set -u
[ $# -ge 1 ] || { echo "usage: busy.sh COMMAND [ARGS...]" >&2; exit 2; }
n=$(nproc)
pids=""
i=0
while [ "$i" -lt "$n" ]; do
	sh -c 'while :; do :; done' &
	pids="$pids $!"
	i=$((i + 1))
done
trap 'kill $pids 2>/dev/null' EXIT INT TERM
echo "busy.sh: $n CPU burners running beside: $*"
start=$(date +%s)
"$@"
rc=$?
echo "busy.sh: exit status $rc after $(( $(date +%s) - start ))s with $n CPU burners"
exit $rc
