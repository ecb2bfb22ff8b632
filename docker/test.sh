#!/bin/sh
# `make container-test`: builds docker/Dockerfile and runs it for real, then
# docker/compose.yaml, then (podman only) the systemd unit inside a systemd
# container. Each check prints "ok - ..." or "FAIL - ..."; the last line says
# how many passed. Exits non-zero on the first failure, after removing every
# container and volume it made.
#
# Engine: podman when installed (built with --format docker, so HEALTHCHECK
# is kept), else docker when its engine answers. Compose: podman-compose,
# else `docker compose`. Base images and packages: only what the engine has
# locally and Debian's archive (apt-get inside RUN steps); --pull=never with
# podman. Ports are free ones on 127.0.0.1, chosen at run time.
#
# Environment: CKPTD_CT_IMAGE (default localhost/ckptd:test) names the image
# built; CKPTD_CT_KEEP=1 keeps it and the systemd image afterwards.
set -eu
cd "$(dirname "$0")/.."

image=${CKPTD_CT_IMAGE:-localhost/ckptd:test}
sd_image=$image-systemd
run_id=ckptdct$$
name=$run_id-app
vol=$run_id-data
project=$run_id
fixture=tests/data/torch/valid/general_checkpoint.pt
passed=0
compose_up=""
work=$(mktemp -d "${TMPDIR:-/tmp}/ckptd-ct.XXXXXX")
# The engine's own messages; podman without systemd logs harmless "unable to
# get systemd connection" lines for every health check timer.
elog=$work/engine.log

if command -v podman >/dev/null 2>&1; then
	engine=podman
	build_flags="--pull=never --format docker"
	compose=podman-compose
	project_label=io.podman.compose.project
	export BUILDAH_FORMAT=docker # podman-compose's build keeps HEALTHCHECK too
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
	engine=docker
	build_flags=""
	compose="docker compose"
	project_label=com.docker.compose.project
else
	echo "container-test: no container engine: install podman (sh tools/deps.sh container;" >&2
	echo "  base images: a debian:12 image, e.g. made with debootstrap and 'podman import')" >&2
	echo "  or run a Docker engine" >&2
	exit 1
fi

cleanup() {
	set +e
	if [ -n "$compose_up" ]; then
		$compose -p "$project" -f docker/compose.yaml down -v >/dev/null 2>&1
	fi
	for c in "$name" "$name-2" "$run_id-sd"; do
		$engine rm -f -v -t 5 "$c" >/dev/null 2>&1
	done
	$engine volume rm -f "$vol" >/dev/null 2>&1
	for v in $($engine volume ls -q --filter "label=$project_label=$project" 2>/dev/null); do
		$engine volume rm -f "$v" >/dev/null 2>&1
	done
	# the image compose built under the project's name (podman-compose, docker)
	$engine rmi "localhost/${project}_ckptd" "${project}-ckptd" >/dev/null 2>&1
	if [ -z "${CKPTD_CT_KEEP:-}" ]; then
		$engine rmi -f "$sd_image" >/dev/null 2>&1
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() {
	passed=$((passed + 1))
	echo "ok - $*"
}

fail() {
	echo "FAIL - $*" >&2
	if [ -s "$elog" ]; then
		echo "--- $engine's messages, last lines:" >&2
		tail -n 20 "$elog" >&2
	fi
	echo "container-test: failed after $passed checks passed" >&2
	exit 1
}

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until http://127.0.0.1:PORT/api/v1/healthz answers ok (30 s).
wait_healthz() {
	i=0
	while [ $i -lt 300 ]; do
		if [ "$(curl -fsS "http://127.0.0.1:$1/api/v1/healthz" 2>/dev/null)" = "ok" ]; then
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# The engine's own health check of container $1: podman runs it on demand;
# docker runs it on its schedule, so wait for "healthy".
health() {
	if [ "$engine" = podman ]; then
		podman healthcheck run "$1" >/dev/null 2>>"$elog"
	else
		i=0
		while [ $i -lt 120 ]; do
			s=$(docker inspect -f '{{.State.Health.Status}}' "$1")
			[ "$s" = healthy ] && return 0
			sleep 1
			i=$((i + 1))
		done
		return 1
	fi
}

# Uploads the fixture to the server on port $1 as model $2; prints the id.
upload() {
	code=$(curl -sS -o "$work/up.json" -w '%{http_code}' --data-binary @"$fixture" \
		"http://127.0.0.1:$1/api/v1/models/$2/checkpoints?epoch=1&loss=0.5") || return 1
	[ "$code" = 201 ] || { echo "upload answered $code: $(cat "$work/up.json")" >&2; return 1; }
	/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$work/up.json"
}

# Downloads checkpoint $3 of model $2 from port $1; fails unless it is the
# fixture byte for byte.
download_same() {
	curl -fsS -o "$work/down.pt" "http://127.0.0.1:$1/api/v1/models/$2/checkpoints/$3/file" &&
		cmp -s "$fixture" "$work/down.pt"
}

# Fails unless every process of container $1 runs as uid 10001, not root.
non_root() {
	uid=$($engine exec "$1" id -u) && [ "$uid" = 10001 ] || return 1
	$engine exec "$1" sh -c 'grep "^Uid:" /proc/1/status' | awk '{ exit !($2 == 10001 && $3 == 10001 && $4 == 10001) }'
}

echo "container-test: $engine, image $image"

# -- the image -------------------------------------------------------------
t0=$(date +%s)
# shellcheck disable=SC2086
$engine build $build_flags -f docker/Dockerfile -t "$image" . >"$work/build.log" 2>&1 ||
	{ tail -n 30 "$work/build.log" >&2; fail "docker/Dockerfile builds"; }
ok "docker/Dockerfile builds ($(($(date +%s) - t0)) s)"

if [ "$engine" = podman ]; then
	hc=$(podman inspect --type image -f '{{json .HealthCheck}}' "$image") || fail "podman image inspect"
else
	hc=$(docker image inspect -f '{{json .Config.Healthcheck}}' "$image") || fail "docker image inspect"
fi
case "$hc" in *api/v1/healthz*) ok "the image keeps its HEALTHCHECK" ;; *) fail "the image has no HEALTHCHECK: $hc" ;; esac
user=$($engine image inspect -f '{{.Config.User}}' "$image") || fail "image inspect"
[ "$user" = 10001:10001 ] && ok "the image runs as user 10001:10001" || fail "the image's user is '$user'"

# -- one container, its volume, its port -------------------------------------
port=$(free_port)
$engine run -d --name "$name" -p "127.0.0.1:$port:8080" -v "$vol:/data" "$image" >/dev/null 2>>"$elog" ||
	fail "the container starts"
wait_healthz "$port" || { $engine logs "$name" >&2; fail "/api/v1/healthz answers on 127.0.0.1:$port"; }
ok "the container serves /api/v1/healthz on 127.0.0.1:$port"
published=$($engine port "$name" 8080/tcp)
[ "$published" = "127.0.0.1:$port" ] && ok "8080 is published on the host's loopback only" ||
	fail "8080 is published as '$published'"
$engine logs "$name" 2>&1 | grep -q "serving http://0.0.0.0:8080/ from /data" &&
	ok "inside, ckptd listens on 0.0.0.0:8080 with its data in /data" ||
	fail "ckptd's start line: $($engine logs "$name" 2>&1 | head -n 3)"
health "$name" && ok "the HEALTHCHECK passes ($engine)" || fail "the HEALTHCHECK fails"
non_root "$name" && ok "ckptd runs as uid 10001, not root" || fail "ckptd runs as root or another user"
id=$(upload "$port" ct) || fail "an upload answers 201"
ok "an upload answers 201 (checkpoint $id)"
download_same "$port" ct "$id" && ok "the download is the upload byte for byte" ||
	fail "the download differs from the upload"
owner=$($engine exec "$name" stat -c %u /data/index.sqlite)
[ "$owner" = 10001 ] && ok "the store in the volume belongs to uid 10001" || fail "the store belongs to uid $owner"

$engine stop -t 70 "$name" >/dev/null 2>>"$elog"
code=$($engine inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] && ok "SIGTERM stops it with exit status 0" || fail "it exited with $code after SIGTERM"
$engine rm -v "$name" >/dev/null 2>>"$elog"
port=$(free_port)
$engine run -d --name "$name-2" -p "127.0.0.1:$port:8080" -v "$vol:/data" "$image" >/dev/null 2>>"$elog" ||
	fail "a second container starts on the same volume"
wait_healthz "$port" || fail "the second container serves"
download_same "$port" ct "$id" && ok "a new container on the same volume serves the checkpoint" ||
	fail "the checkpoint did not survive in the volume"
$engine rm -f -v -t 10 "$name-2" >/dev/null 2>>"$elog"
$engine volume rm "$vol" >/dev/null

# -- compose -------------------------------------------------------------------
port=$(free_port)
compose_up=1
CKPTD_PORT=$port $compose -p "$project" -f docker/compose.yaml up -d --build >"$work/compose.log" 2>&1 ||
	{ tail -n 30 "$work/compose.log" >&2; fail "compose up"; }
wait_healthz "$port" || { tail -n 30 "$work/compose.log" >&2; fail "compose's ckptd serves on 127.0.0.1:$port"; }
ok "compose up: ckptd serves on 127.0.0.1:$port"
cname=$($engine ps --filter "label=$project_label=$project" --format '{{.Names}}' | head -n 1)
[ -n "$cname" ] || fail "no container of compose project $project"
health "$cname" && ok "compose's HEALTHCHECK passes" || fail "compose's HEALTHCHECK fails"
non_root "$cname" && ok "compose's ckptd runs as uid 10001" || fail "compose's ckptd runs as another user"
id=$(upload "$port" compose) || fail "an upload through compose answers 201"
download_same "$port" compose "$id" && ok "compose: upload and download byte for byte" ||
	fail "compose: the download differs"
$compose -p "$project" -f docker/compose.yaml down -v >>"$work/compose.log" 2>&1 ||
	{ tail -n 30 "$work/compose.log" >&2; fail "compose down"; }
compose_up=""
left=$($engine ps -a -q --filter "label=$project_label=$project")
[ -z "$left" ] && ok "compose down removes its containers" || fail "compose down left $left"

# -- the systemd unit under a real systemd (podman only) ------------------------
if [ "$engine" = podman ]; then
	podman build --pull=never --build-arg IMAGE="$image" -f docker/systemd-test.Containerfile \
		-t "$sd_image" . >"$work/sd-build.log" 2>&1 ||
		{ tail -n 30 "$work/sd-build.log" >&2; fail "the systemd test image builds"; }
	podman run -d --name "$run_id-sd" --systemd=always "$sd_image" >/dev/null 2>>"$elog" ||
		fail "the systemd container starts"
	i=0
	until podman exec "$run_id-sd" curl -fsS -o /dev/null http://127.0.0.1:8080/api/v1/healthz 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 300 ] || { podman exec "$run_id-sd" systemctl status ckptd --no-pager >&2; fail "ckptd.service serves under systemd"; }
		sleep 0.1
	done
	ok "make install's ckptd.service starts under systemd and serves"
	podman cp "$fixture" "$run_id-sd:/tmp/ckpt.pt"
	podman exec "$run_id-sd" sh -c '
		set -e
		curl -fsS -o /dev/null --data-binary @/tmp/ckpt.pt "http://127.0.0.1:8080/api/v1/models/sd/checkpoints?epoch=1"
		curl -fsS -o /tmp/back.pt http://127.0.0.1:8080/api/v1/models/sd/checkpoints/1/file
		cmp /tmp/ckpt.pt /tmp/back.pt
		test -f /var/lib/private/ckptd/index.sqlite
		pid=$(systemctl show -p MainPID --value ckptd)
		grep -q "^Uid:[[:space:]]*[1-9]" /proc/$pid/status
		grep -q "^NoNewPrivs:[[:space:]]*1" /proc/$pid/status
		grep -q "^CapEff:[[:space:]]*0000000000000000" /proc/$pid/status
		grep -q "^Seccomp:[[:space:]]*2" /proc/$pid/status
		systemctl stop ckptd
		test "$(systemctl show -p Result --value ckptd)" = success
	' >"$work/sd.log" 2>&1 ||
		{ cat "$work/sd.log" >&2; podman exec "$run_id-sd" journalctl -u ckptd --no-pager >&2; fail "under systemd: upload, download, sandbox, clean stop"; }
	ok "under systemd: upload and download, data in /var/lib/ckptd, a dynamic non-root user, no capabilities, seccomp, a clean stop"
	podman rm -f -v -t 5 "$run_id-sd" >/dev/null 2>>"$elog"
else
	echo "skip - the systemd unit under systemd needs podman"
fi

echo "container-test: all $passed checks passed"
