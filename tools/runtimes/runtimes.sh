#!/bin/sh
# The container runtimes of the tests, without systemd (the test machines
# have none): `up` starts containerd (with the CRI plugin, configured by
# containerd.toml here) and dockerd where they do not answer yet, and
# builds the test image from the host's busybox-static in Docker,
# podman and containerd's k8s.io namespace (no registry is reachable);
# `down` stops what `up` started once no other run of `make test` uses
# it. Podman needs no daemon. See README.md, "Containers".
#
# Runs of `make test` at the same time share the runtimes: each `up`
# records the shell that called it (its pid and start time, so that a
# reused pid is not taken for it), each `down` removes it (and those that
# are gone), and the last one out stops the daemons.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
state=/run/fsmon-test-runtimes
image=fsmon-test/busybox:local
# The CRI plugin's sandbox image (containerd.toml): the same busybox,
# standing in for the pause image.
pause=fsmon-test/pause:local
# started PID: the process's start time (field 22 of its stat, counted
# after the command name, which may hold spaces), or nothing.
started() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
caller_pid=${FSMON_RUNTIMES_CALLER:-$PPID}
caller="$caller_pid:$(started "$caller_pid")"

log() { echo "runtimes: $*" >&2; }

# wait_for CMD...: polls CMD for up to 60 s (a loaded machine starts
# dockerd slowly).
wait_for() {
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 300 ]; then
			return 1
		fi
		sleep 0.2
	done
}

containerd_up() { ctr --timeout 2s version >/dev/null 2>&1; }
docker_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
	name=$1
	shift
	log "starting $name"
	# Not with the lock's descriptor: a daemon holding it would keep
	# every later up and down waiting.
	"$@" >"$state/$name.log" 2>&1 9>&- &
	echo $! >"$state/$name.pid"
}

# stop NAME: ends the daemon up started, by its recorded pid.
stop() {
	f="$state/$1.pid"
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	rm -f "$f"
	kill "$pid" 2>/dev/null || return 0
	log "stopping $1 ($pid)"
	i=0
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 150 ]; then
			kill -9 "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
}

# rootfs DIR: a busybox root with the file the tests protect.
rootfs() {
	mkdir -p "$1/bin" "$1/etc" "$1/tmp" "$1/proc" "$1/sys" "$1/dev"
	cp "$(command -v busybox)" "$1/bin/busybox"
	for a in sh cat head sleep ls echo; do ln -sf busybox "$1/bin/$a"; done
	echo "runtime secret" >"$1/etc/fsmon-secret"
}

images() {
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	rootfs "$tmp/root"
	if ! docker image inspect "$image" >/dev/null 2>&1; then
		log "importing $image into Docker"
		tar -C "$tmp/root" -c . | docker import --change 'CMD ["/bin/sleep","2147483647"]' - "$image" >/dev/null
	fi
	if command -v podman >/dev/null && ! podman image exists "$image"; then
		log "importing $image into podman"
		tar -C "$tmp/root" -c . | podman import --change 'CMD ["/bin/sleep","2147483647"]' - "$image" >/dev/null 2>&1
	fi
	if ! ctr -n k8s.io images ls -q | grep -qx "docker.io/$pause"; then
		log "importing $image and $pause into containerd (k8s.io)"
		docker save "$image" >"$tmp/image.tar"
		ctr -n k8s.io images import "$tmp/image.tar" >/dev/null
		ctr -n k8s.io images tag --force "docker.io/$image" "docker.io/$pause" >/dev/null
	fi
}

up() {
	if ! containerd_up; then
		start containerd containerd --config "$here/containerd.toml"
		wait_for containerd_up || {
			log "containerd did not start:"
			cat "$state/containerd.log" >&2
			return 1
		}
	fi
	if ! docker_up; then
		start dockerd dockerd --iptables=false --bridge=none --containerd=/run/containerd/containerd.sock
		wait_for docker_up || {
			log "dockerd did not start:"
			cat "$state/dockerd.log" >&2
			return 1
		}
	fi
	images
}

users() {
	# Those still alive, but for the caller.
	[ -f "$state/users" ] || return 0
	while read -r u; do
		if [ "$u" != "$caller" ] && [ "$(started "${u%%:*}"):" = "${u#*:}:" ]; then echo "$u"; fi
	done <"$state/users"
}

mkdir -p "$state"
exec 9>"$state/lock"
flock 9
case "${1:-}" in
up)
	others=$(users)
	{
		[ -z "$others" ] || echo "$others"
		echo "$caller"
	} >"$state/users"
	up
	;;
down)
	others=$(users)
	if [ -n "$others" ]; then
		echo "$others" >"$state/users"
		log "still used by $others: left running"
		exit 0
	fi
	rm -f "$state/users"
	stop dockerd
	stop containerd
	;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
