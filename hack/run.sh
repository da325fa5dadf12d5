#!/usr/bin/env bash
# Runs membrane for real on this host: starts a Docker engine if none answers,
# starts `membrane daemon` as a socket plugin, and creates a demo network.
# Logs: /var/log/membrane.log and, if this script started it, /var/log/membrane-dockerd.log.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (the plugin programs the host's network)"; exit 1; }

if ! mount | grep -q 'on /sys/fs/bpf type bpf'; then
	mount -t bpf bpf /sys/fs/bpf
fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]}"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
	echo "starting dockerd (log: /var/log/membrane-dockerd.log)"
	nohup dockerd >/var/log/membrane-dockerd.log 2>&1 &
	for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
	docker info >/dev/null 2>&1 || { echo "run.sh: dockerd did not come up; see /var/log/membrane-dockerd.log"; exit 1; }
fi

docker image inspect membrane-demo/busybox >/dev/null 2>&1 || ./hack/busybox-image.sh membrane-demo/busybox >/dev/null

if pgrep -f 'bin/membraned' >/dev/null; then
	echo "membrane daemon already running"
else
	echo "starting membrane daemon (log: /var/log/membrane.log)"
	nohup ./bin/membrane daemon >>/var/log/membrane.log 2>&1 &
	for _ in $(seq 50); do [ -S /run/docker/plugins/membrane.sock ] && break; sleep 0.2; done
	[ -S /run/docker/plugins/membrane.sock ] || { echo "run.sh: membrane did not start; see /var/log/membrane.log"; tail -20 /var/log/membrane.log; exit 1; }
fi

if ! docker network inspect demo >/dev/null 2>&1; then
	docker network create -d membrane --ipam-driver membrane --ipv6 demo >/dev/null
fi
docker network inspect demo --format '{{.Name}}: driver {{.Driver}}, subnets {{range .IPAM.Config}}{{.Subnet}} {{end}}'

cat <<'MSG'

membrane is running. Try:
  docker run -d --name peer --network demo membrane-demo/busybox sleep 3600
  docker run --rm --network demo membrane-demo/busybox ping -c2 peer
  docker run --rm --network demo membrane-demo/busybox ping -6 -c2 peer
  ./bin/membrane status
MSG
