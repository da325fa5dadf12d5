#!/usr/bin/env bash
# Imports a tiny image, IMAGE (default membrane-demo/busybox), from Debian's
# busybox-static, for hosts that cannot pull from a registry.
set -euo pipefail
image=${1:-membrane-demo/busybox}
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-image.sh: $bb missing: apt-get install busybox-static"; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp"
cp "$bb" "$root/bin/busybox"
for app in $("$bb" --list); do
	[ "$app" = busybox ] || ln -s busybox "$root/bin/$app"
done
tar -C "$root" -c . | docker import --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
echo "$image"
