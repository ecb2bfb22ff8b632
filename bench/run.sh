#!/bin/sh
# ckptd against its peers (SPEC 7): `make bench`, or `sh bench/run.sh` from the
# repo root after `make`. A benchmark, never a test: it prints a table of
# ratios and exits 0 whatever the verdicts (non-zero only when it cannot run).
#
# 1. installs what is missing from Debian (nginx, wrk, curl, zstd,
#    python3-sklearn, postgresql, radosgw ceph-mon ceph-osd; needs root, else
#    prints the apt-get command);
# 2. builds build/codec_bench from bench/codec_bench.c against build/libckptd.a;
# 3. runs bench/bench.py under /usr/bin/python3 (Debian's, with torch).
#
# Environment: BENCH_QUICK=1 (256 MB files), BENCH_INDEX_N (default 10000),
# BENCH_REPS, BENCH_WRK_SECS, BENCH_KEEP=1, CKPTD_BIN; see bench/README.md.

cd "$(dirname "$0")/.." || exit 2

need=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need="$need nginx"
command -v wrk >/dev/null 2>&1 || need="$need wrk"
command -v curl >/dev/null 2>&1 || need="$need curl"
command -v zstd >/dev/null 2>&1 || need="$need zstd"
/usr/bin/python3 -c 'import sklearn' 2>/dev/null || need="$need python3-sklearn"
/usr/bin/python3 -c 'import torch' 2>/dev/null || need="$need python3-torch"
# PostgreSQL and Ceph RGW, started by tests/services/pg.sh and rgw.sh
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need="$need postgresql"
for c in radosgw ceph-mon ceph-osd; do
	command -v $c >/dev/null 2>&1 || need="$need $c"
done
if [ -n "$need" ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "bench: installing$need"
		apt-get -o DPkg::Lock::Timeout=600 install -y $need >/dev/null ||
			{ echo "bench: apt-get install$need failed"; exit 2; }
	else
		echo "bench: missing$need; run: sudo apt-get install -y$need"
		exit 2
	fi
fi
PATH=$PATH:/usr/sbin
export PATH

if [ ! -f build/libckptd.a ] || [ ! -x build/ckptd ]; then
	echo "bench: build/ckptd or build/libckptd.a is missing; run make first"
	exit 2
fi
# The codec bench links the codec from the library make just built.
cc -std=c11 -O2 -g -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
	-o build/codec_bench bench/codec_bench.c build/libckptd.a \
	$(pkg-config --libs libzstd zlib libdeflate libcrypto 2>/dev/null || echo -lzstd -lz -ldeflate -lcrypto) -lm ||
	{ echo "bench: cannot build build/codec_bench"; exit 2; }

exec /usr/bin/python3 bench/bench.py
