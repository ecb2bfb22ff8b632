#!/bin/sh
# Integration tests: start the real build/ckptd and check the HTTP API end to
# end with real torch files. Called from the repo root by `make integration`.
#
#   sh tests/integration/run.sh [test_NAME ...]   (default: every test_*.py)
#
# Each test file runs under /usr/bin/python3 (Debian's, with torch 1.13) and
# starts its own daemons. The suite runs once per index backend named in
# CKPTD_IT_BACKENDS (default "sqlite"; `make integration` runs "sqlite
# postgresql"): for postgresql, a server is started from tests/services/pg.sh
# for the run, and each daemon's data directory gets a database of its own
# (lib/ckptd.py). The last line printed is "N passed, M failed" (and ", K
# skipped") over every run; the exit status is non-zero when M > 0.
# Environment: CKPTD_BIN (default build/ckptd), CKPTD_SKIP_BIG=1 skips the 1 GB
# test, CKPTD_IT_KEEP=1 keeps temp dirs and daemon logs, CKPTD_COMPAT_DIR.

cd "$(dirname "$0")/../.." || exit 2
PY=${CKPTD_PYTHON:-/usr/bin/python3}
BIN=${CKPTD_BIN:-build/ckptd}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac

if [ ! -x "$BIN" ]; then
	echo "integration: $BIN is missing; run make first"
	echo "0 passed, 1 failed"
	exit 1
fi
if ! "$PY" -c 'import torch' 2>/dev/null; then
	echo "integration: $PY cannot import torch (apt-get install python3-torch)"
	echo "0 passed, 1 failed"
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ckptd-it.XXXXXX") || exit 2
if [ -z "${CKPTD_IT_KEEP:-}" ]; then
	trap 'rm -rf "$work"' EXIT
	trap 'rm -rf "$work"; exit 130' INT TERM
else
	echo "integration: keeping $work"
fi
CKPTD_BIN=$BIN
CKPTD_IT_WORK=$work
export CKPTD_BIN CKPTD_IT_WORK

passed=0
failed=0
skipped=0

if "$PY" tests/data/make_seed.py "$work/seed" >"$work/seed.log" 2>&1; then
	CKPTD_IT_SEED=$work/seed
	export CKPTD_IT_SEED
else
	echo "integration: tests/data/make_seed.py failed:"
	cat "$work/seed.log"
	failed=$((failed + 1))
fi

if [ $# -gt 0 ]; then
	files=""
	for n in "$@"; do
		n=${n%.py}
		files="$files tests/integration/${n##*/}.py"
	done
else
	files=$(ls tests/integration/test_*.py)
fi

pgdir=""
stop_pg() {
	if [ -n "${CKPTD_RGW_DIR:-}" ]; then
		sh tests/services/rgw.sh stop "$CKPTD_RGW_DIR"
		unset CKPTD_RGW_DIR
	fi
	if [ -n "$pgdir" ]; then
		sh tests/services/pg.sh stop "$pgdir"
		[ -z "${CKPTD_IT_KEEP:-}" ] && rm -rf "$pgdir"
		pgdir=""
	fi
}
trap 'stop_pg; [ -z "${CKPTD_IT_KEEP:-}" ] && rm -rf "$work"' EXIT
trap 'stop_pg; [ -z "${CKPTD_IT_KEEP:-}" ] && rm -rf "$work"; exit 130' INT TERM

# a soak length or kill -9 round count given by the caller wins over the
# rule below
[ -n "${CKPTD_SOAK_SECONDS:-}" ] && CKPTD_SOAK_SECONDS_SET=1
[ -n "${CKPTD_KILL_ROUNDS:-}" ] && CKPTD_KILL_ROUNDS_SET=1
start=$(date +%s)
for backend in ${CKPTD_IT_BACKENDS:-sqlite}; do
unset CKPTD_IT_PG CKPTD_IT_PGDIR CKPTD_IT_S3
case "$backend" in
sqlite) ;;
postgresql | postgresql+s3)
	# its own directory under /tmp: PostgreSQL runs as `postgres`, which
	# cannot enter the run's private work directory
	pgdir=$(mktemp -d /tmp/ckptd-it-pg.XXXXXX)
	if ! CKPTD_IT_PG=$(sh tests/services/pg.sh start "$pgdir"); then
		echo "FAIL postgresql: tests/services/pg.sh could not start PostgreSQL"
		failed=$((failed + 1))
		stop_pg
		continue
	fi
	CKPTD_IT_PGDIR=$pgdir
	export CKPTD_IT_PG CKPTD_IT_PGDIR
	echo "integration: index on PostgreSQL at $CKPTD_IT_PG"
	if [ "$backend" = postgresql+s3 ]; then
		if ! rgwenv=$(sh tests/services/rgw.sh start); then
			echo "FAIL $backend: tests/services/rgw.sh could not start Ceph RGW"
			failed=$((failed + 1))
			stop_pg
			continue
		fi
		eval "$rgwenv"
		CKPTD_IT_S3=1
		export CKPTD_IT_S3
		echo "integration: blobs on S3 at $CKPTD_TEST_S3_ENDPOINT (Ceph RGW)"
	fi
	;;
*)
	echo "FAIL $backend: no such backend (sqlite, postgresql, postgresql+s3)"
	failed=$((failed + 1))
	continue
	;;
esac
# SPEC 8's minute of 8 uploaders and 8 downloaders, and test_reliability's
# 20 kill -9 rounds, run whole on the first store of the run; on the others
# a third of the minute and 10 rounds, so that make test (three stores, and
# the sanitizer run) stays within CI's time
if [ "$backend" = "${CKPTD_IT_BACKENDS%% *}" ] && [ -z "${CKPTD_SOAK_SHORT:-}" ]; then
	whole=1
else
	whole=
fi
if [ -z "${CKPTD_SOAK_SECONDS_SET:-}" ]; then
	if [ -n "$whole" ]; then
		unset CKPTD_SOAK_SECONDS
	else
		CKPTD_SOAK_SECONDS=20
		export CKPTD_SOAK_SECONDS
	fi
fi
if [ -z "${CKPTD_KILL_ROUNDS_SET:-}" ]; then
	if [ -n "$whole" ]; then
		unset CKPTD_KILL_ROUNDS
	else
		CKPTD_KILL_ROUNDS=10
		export CKPTD_KILL_ROUNDS
	fi
fi
for t in $files; do
	name=$backend/$(basename "$t" .py)
	# a test file may name the backends it runs on ("# backends: postgresql"):
	# the several-instance tests need a shared index; the tests of the HTTP
	# layer and of the parsers' memory (which no backend changes) leave out
	# the S3 run, whose blob-by-blob requests would make them take minutes
	only=$(sed -n 's/^# backends: //p' "$t" 2>/dev/null | head -n 1)
	case " $only " in "  " | *" $backend "*) ;; *) continue ;; esac
	if [ ! -f "$t" ]; then
		echo "FAIL $name: no such file $t"
		failed=$((failed + 1))
		continue
	fi
	limit=300
	case "$name" in */test_big | */test_big_tensor) limit=900 ;; esac
	echo "== $name"
	sum="$work/$backend-$(basename "$t" .py).summary"
	rm -f "$sum"
	CKPTD_IT_SUMMARY=$sum timeout -k 10 "$limit" "$PY" "$t"
	rc=$?
	if [ -s "$sum" ]; then
		read -r p f s <"$sum"
	else
		p=0 f=0 s=0
	fi
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		[ "$rc" -eq 124 ] && echo "FAIL $name: timed out after ${limit}s" ||
			echo "FAIL $name: exited with $rc"
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	skipped=$((skipped + s))
done
stop_pg
done

echo "integration: $(($(date +%s) - start))s"
line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
