#!/bin/sh
# Installs what ckptd needs from Debian's packages, when it is missing.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -e
PKGS="build-essential pkg-config clang-format libmicrohttpd-dev libsqlite3-dev
libpq-dev libjansson-dev zlib1g-dev libzstd-dev libssl-dev libcurl4-openssl-dev check
libsubunit-dev python3-torch python3-numpy python3-sklearn curl clang libclang-rt-14-dev
chromium nodejs npm python3-pytest python3-venv python3-setuptools python3-wheel
python3-mypy nginx openssl radosgw ceph-mon ceph-osd"
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
