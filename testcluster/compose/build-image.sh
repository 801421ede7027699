#!/bin/sh
# Builds a PostgreSQL image from Debian's packages, for machines that cannot
# pull images from a registry. The root filesystem is a minbase Debian made by
# mmdebstrap (debootstrap when mmdebstrap is missing) with the postgresql
# package installed; `docker import` turns it into an image that runs
# docker-compose.replication.yml the way the official postgres image does.
#
#   testcluster/compose/build-image.sh [tag]      (default pgxha/postgres:15-debian)
#
# Environment:
#   PGXHA_DEBIAN_SUITE   Debian release (default bookworm)
#   PGXHA_PG_MAJOR       PostgreSQL major version in that release (default 15)
#   PGXHA_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   PGXHA_IMAGE_FORCE=1  rebuild even when the tag exists
#   PGXHA_IMAGE_TOOL     mmdebstrap (default, installed when missing) or debootstrap
#
# The image is kept small: no documentation, manual pages, translations, JIT
# (LLVM) or Perl; the server programs are on PATH. iptables and iproute2 are
# included so the test backend can cut a node off or slow it down from inside.
set -eu

suite=${PGXHA_DEBIAN_SUITE:-bookworm}
major=${PGXHA_PG_MAJOR:-15}
mirror=${PGXHA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tag=${1:-pgxha/postgres:${major}-debian}

if [ "${PGXHA_IMAGE_FORCE:-}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
	echo "image $tag exists; not rebuilding (PGXHA_IMAGE_FORCE=1 to rebuild)"
	exit 0
fi

sudo=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "building the root filesystem needs root (or sudo)" >&2; exit 1; }
	sudo=sudo
fi

# The bootstrap tool: mmdebstrap makes the same --variant=minbase root
# filesystem as debootstrap, but resolves dependencies with apt, downloads in
# parallel (what counts on a distant mirror), skips excluded paths while
# unpacking, takes the security suite in the same pass and writes the tarball
# itself. With a mirror close by, both take about 40s of CPU.
tool=
for t in ${PGXHA_IMAGE_TOOL:-} mmdebstrap debootstrap; do
	if command -v "$t" >/dev/null 2>&1; then tool=$t; break; fi
done
if [ -z "$tool" ]; then
	echo "installing mmdebstrap from Debian's packages" >&2
	if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null 2>&1; then
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
	fi
	tool=mmdebstrap
fi

# Unpacking into memory is faster where there is room for it (~700 MB).
if [ -z "${TMPDIR:-}" ] && [ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')" -gt 1048576 ] 2>/dev/null; then
	TMPDIR=/dev/shm
	export TMPDIR
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/pgxha-image.XXXXXX")
trap '$sudo rm -rf "$work"' EXIT INT TERM
start=$(date +%s)

packages="postgresql-$major,iptables,iproute2"
# Files nothing in the image needs.
excludes="/usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/i18n/*
/usr/share/lintian/* /usr/lib/x86_64-linux-gnu/libLLVM* /usr/lib/x86_64-linux-gnu/libz3*
/usr/lib/aarch64-linux-gnu/libLLVM* /usr/lib/aarch64-linux-gnu/libz3*
/usr/lib/postgresql/*/lib/llvmjit* /usr/lib/postgresql/*/lib/bitcode/*"
# Runs in the finished root filesystem ($1): Perl is only needed by the
# packages' maintainer scripts and Debian's wrappers (pg_wrapper,
# pg_ctlcluster), which the image does not use. (apt in the image then wants
# `apt-get -f install` before anything else.)
cat >"$work/trim.sh" <<'EOF'
root=$1
perl=$(chroot "$root" dpkg-query -W -f '${Package}\n' perl 'perl-modules-*' 'libperl5*' libjson-perl 2>/dev/null || true)
[ -z "$perl" ] || chroot "$root" dpkg --purge --force-depends $perl >/dev/null 2>&1
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
	"$root"/var/cache/debconf/*-old "$root"/etc/postgresql/*
EOF

case $tool in
mmdebstrap)
	set -f # the patterns are dpkg's, not the shell's
	set --
	for x in $excludes; do set -- "$@" --dpkgopt="path-exclude=$x"; done
	set +f
	$sudo mmdebstrap --variant=minbase --include="$packages" \
		--dpkgopt=force-unsafe-io "$@" \
		--essential-hook='mkdir -p "$1/etc/postgresql-common" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.conf"' \
		--customize-hook="sh '$work/trim.sh' \"\$1\"" \
		"$suite" "$work/rootfs.tar" \
		"deb $mirror $suite main" "deb ${mirror%/debian}/debian-security $suite-security main" \
		>"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; exit 1; }
	;;
debootstrap)
	$sudo debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" \
		>"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; exit 1; }
	$sudo rm -rf "$work/rootfs/var/lib/postgresql/$major/main"
	set -f
	for x in $excludes; do $sudo sh -c "rm -rf $work/rootfs$x"; done
	set +f
	$sudo sh "$work/trim.sh" "$work/rootfs"
	$sudo tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
	;;
esac
built=$(date +%s)

old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
docker import \
	--change "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
	--change "ENV LANG=C.UTF-8" \
	--change "ENV PGDATA=/var/lib/postgresql/data" \
	--change "EXPOSE 5432" \
	--change "VOLUME /var/lib/postgresql/data" \
	--change "LABEL org.opencontainers.image.description=\"PostgreSQL $major from Debian $suite packages\"" \
	--message "PostgreSQL $major from Debian $suite ($tool)" \
	"$work/rootfs.tar" "$tag" >/dev/null
docker run --rm --entrypoint postgres "$tag" --version >/dev/null
# A rebuild leaves the previous image untagged: remove it unless in use.
if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
	docker image rm "$old" >/dev/null 2>&1 || true
fi

end=$(date +%s)
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "built $tag with $tool in $((end - start))s (root filesystem $((built - start))s, import $((end - built))s), $((size / 1000000)) MB"
