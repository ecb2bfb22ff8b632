#!/bin/sh
# Runs the unit test binaries given as arguments (Check suites; each prints
# its summary line). The index's suite runs against PostgreSQL too: unless
# CKPTD_TEST_PG_URL names a server already, one is started for the run from
# tests/services/pg.sh (when PostgreSQL is installed) and stopped after.
# Exit status: non-zero when a suite failed.
cd "$(dirname "$0")/../.." || exit 2
pgdir=""
if [ -z "${CKPTD_TEST_PG_URL:-}" ] && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
	pgdir=$(mktemp -d /tmp/ckptd-unit-pg.XXXXXX)
	if CKPTD_TEST_PG_URL=$(sh tests/services/pg.sh start "$pgdir"); then
		export CKPTD_TEST_PG_URL
	else
		echo "unit: PostgreSQL did not start; the index suite runs on SQLite only"
		rm -rf "$pgdir"
		pgdir=""
	fi
fi
trap '[ -n "$pgdir" ] && sh tests/services/pg.sh stop "$pgdir" && rm -rf "$pgdir"' EXIT
trap 'exit 130' INT TERM
fail=0
for t in "$@"; do
	CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-120} "$t" || fail=1
done
exit $fail
