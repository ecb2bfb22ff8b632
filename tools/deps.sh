#!/bin/sh
# Installs what ckptd needs from Debian's packages, when it is missing.
# As root it runs apt-get; otherwise it prints the exact command to run.
#
#   sh tools/deps.sh run         building and serving: a compiler and the -dev
#                                libraries (`make run`)
#   sh tools/deps.sh test        the above plus every tool the tests use (`make test`)
#   sh tools/deps.sh container   podman-compose, beside podman (`make container-test`)
#   sh tools/deps.sh --list WHAT prints the packages of WHAT, installs nothing
set -e

RUN_PKGS="build-essential pkg-config libmicrohttpd-dev libsqlite3-dev libpq-dev
libjansson-dev zlib1g-dev libdeflate-dev libzstd-dev libssl-dev libcurl4-openssl-dev"

# Only the tests use these: the format check, Check, torch and the Python
# tools, the sanitizers and libFuzzer (clang), Chromium and Node.js for the
# dashboard, nginx and openssl for the client's HTTPS test, PostgreSQL and
# Ceph for the backends, and the install checks (man, systemd-analyze,
# promtool, jsonschema for the OpenAPI document).
TEST_PKGS="clang-format check libsubunit-dev python3-torch python3-numpy python3-sklearn
curl clang libclang-rt-14-dev chromium nodejs npm python3-pytest python3-venv
python3-setuptools python3-wheel python3-mypy python3-jsonschema nginx openssl
postgresql radosgw ceph-mon ceph-osd man-db groff-base systemd prometheus git"

CONTAINER_PKGS="podman podman-compose runc"

list=""
if [ "${1:-}" = "--list" ]; then
	list=1
	shift
fi
case "${1:-test}" in
run) PKGS=$RUN_PKGS ;;
test) PKGS="$RUN_PKGS $TEST_PKGS" ;;
container) PKGS=$CONTAINER_PKGS ;;
*)
	echo "usage: sh tools/deps.sh [--list] run|test|container" >&2
	exit 2
	;;
esac
if [ -n "$list" ]; then
	echo $PKGS
	exit 0
fi

missing=""
for p in $PKGS; do
	# node and npm may come from elsewhere (the image's own Node.js)
	case "$p" in
	nodejs) command -v node >/dev/null 2>&1 && continue ;;
	npm) command -v npm >/dev/null 2>&1 && continue ;;
	esac
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
	echo "deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 update -qq || true
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
else
	echo "deps: missing packages; run:"
	echo "  sudo apt-get install -y$missing"
	exit 1
fi
