#!/usr/bin/env bash
# Builds the managed plugin's rootfs around bin/membrane and creates it in
# Docker as NAME[:TAG] (replacing a disabled plugin of that name).
# Usage: hack/make-plugin.sh NAME[:TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: make-plugin.sh NAME[:TAG]}
dir=build/plugin
rm -rf "$dir"
mkdir -p "$dir/rootfs"/{run/docker/plugins,run/membrane,var/lib/membrane,var/run/docker-host,sys/fs/bpf,tmp,etc}
cp bin/membrane "$dir/rootfs/membrane"
cp config.json "$dir/config.json"
# The bind sources must exist on the host before the plugin is enabled.
mkdir -p /var/lib/membrane /run/membrane
if docker plugin inspect "$name" >/dev/null 2>&1; then
	docker plugin rm "$name" >/dev/null
fi
docker plugin create "$name" "$dir" >/dev/null
echo "created plugin $name; enable it with: docker plugin enable $name"
