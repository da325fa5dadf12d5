#!/usr/bin/env bash
# Builds the managed plugin's rootfs around bin/membraned and creates it in
# Docker as NAME[:TAG] (replacing a disabled plugin of that name). NAME may
# name a registry (registry.example:5000/membrane), ready for
# `docker plugin push NAME:TAG`.
#
# Besides the static daemon binary, the rootfs holds this host's iptables
# and ip6tables (Debian's xtables multi-call binaries, their shared
# libraries and extension modules): the daemon runs them to accept its
# traffic in the FORWARD chain. They must drive the same backend as the
# Docker engine the plugin is installed in: XTABLES=nft or XTABLES=legacy
# picks it; by default it is the one this host's `iptables --version`
# reports.
#
# Usage: [XTABLES=nft|legacy] hack/make-plugin.sh NAME[:TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: make-plugin.sh NAME[:TAG]}
dir=build/plugin
root=$dir/rootfs
xtables_libdir=/usr/lib/x86_64-linux-gnu/xtables

die() { echo "make-plugin.sh: $*" >&2; exit 1; }

backend=${XTABLES:-}
if [ -z "$backend" ]; then
	command -v iptables >/dev/null || die "iptables not found: install it (apt-get install iptables), or set XTABLES=nft|legacy"
	case "$(iptables --version)" in
	*nf_tables*) backend=nft ;;
	*legacy*) backend=legacy ;;
	*) die "cannot tell the iptables backend from '$(iptables --version)': set XTABLES=nft|legacy" ;;
	esac
fi
case "$backend" in
nft | legacy) ;;
*) die "XTABLES=$backend: want nft or legacy" ;;
esac
multi=/usr/sbin/xtables-$backend-multi
[ -x "$multi" ] || die "$multi not found: install iptables (Debian's package holds both backends)"
[ -d "$xtables_libdir" ] || die "$xtables_libdir (iptables extensions) not found"

rm -rf "$dir"
mkdir -p "$root"/{run/docker/plugins,run/membrane,var/lib/membrane,var/run/docker-host,sys/fs/bpf,tmp,etc,usr/sbin}
cp bin/membraned "$root/membraned"
cp config.json "$dir/config.json"

# copy_elf FILE...: copies each file, and every shared library it loads,
# to the same path in the rootfs.
copy_elf() {
	local f lib
	for f in "$@"; do
		[ -e "$root$f" ] || install -D -m 0755 "$f" "$root$f"
		for lib in $(ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
			[ -e "$root$lib" ] || install -D -m 0755 "$lib" "$root$lib"
		done
	done
}

# Both backends go in (iptables-nft, iptables-legacy, ... name them);
# iptables and ip6tables are the chosen one.
for b in nft legacy; do
	m=/usr/sbin/xtables-$b-multi
	[ -x "$m" ] || continue
	copy_elf "$m"
	for tool in iptables ip6tables; do
		for suffix in "" -save -restore; do
			ln -s "xtables-$b-multi" "$root/usr/sbin/$tool-$b$suffix"
		done
	done
done
for tool in iptables ip6tables; do
	for suffix in "" -save -restore; do
		ln -s "xtables-$backend-multi" "$root/usr/sbin/$tool$suffix"
	done
done
# Extensions (matches and targets) are loaded at run time from the
# directory libxtables was built with.
mkdir -p "$root$xtables_libdir"
cp -a "$xtables_libdir"/. "$root$xtables_libdir"/
copy_elf "$xtables_libdir"/*.so
# Protocol and service names (-p tcp, --dport http) and ethertypes.
for f in /etc/protocols /etc/services /etc/ethertypes; do
	[ -e "$f" ] && cp "$f" "$root$f"
done
# Smoke test: the copied iptables runs from the rootfs alone.
if [ "$(id -u)" = 0 ]; then
	chroot "$root" /usr/sbin/iptables --version >/dev/null ||
		die "iptables does not run inside the rootfs ($root)"
fi
echo "plugin rootfs: membraned, iptables and ip6tables ($backend backend)"

# The bind sources must exist on the host before the plugin is enabled.
mkdir -p /var/lib/membrane /run/membrane
if docker plugin inspect "$name" >/dev/null 2>&1; then
	docker plugin rm "$name" >/dev/null
fi
docker plugin create "$name" "$dir" >/dev/null
echo "created plugin $name; enable it with: docker plugin enable $name"
