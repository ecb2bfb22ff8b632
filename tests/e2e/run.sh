#!/bin/sh
# Tests of the dashboard: first the checks of its source (web_source.test.mjs:
# markup only through web/html.js), then the browser tests: starts build/ckptd
# on a free loopback port with a fresh data directory, runs the Playwright
# tests (playwright-core driving Debian's /usr/bin/chromium) with node's test
# runner, stops the daemon. Run from the repository root (`make e2e`).
# Screenshots go to build/screenshots/. Exits non-zero when a test fails.
set -u

ROOT=$(pwd)
HERE="$ROOT/tests/e2e"
CKPTD="$ROOT/build/ckptd"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
TORCH_PY=${TORCH_PY:-/usr/bin/python3}

if [ ! -x "$CKPTD" ]; then
	echo "e2e: $CKPTD is missing; run make first" >&2
	exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
	echo "e2e: $CHROMIUM is missing; install it with: apt-get install -y chromium" >&2
	exit 1
fi
if ! command -v node >/dev/null 2>&1; then
	echo "e2e: node is missing; install it with: apt-get install -y nodejs npm" >&2
	exit 1
fi
if ! node --test --test-reporter=spec "$HERE/web_source.test.mjs"; then
	echo "e2e: FAILED (the dashboard's source)" >&2
	exit 1
fi
if [ ! -d "$HERE/node_modules/playwright-core" ]; then
	echo "e2e: installing npm dependencies"
	(cd "$HERE" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; }) || exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ckptd-e2e.XXXXXX") || exit 1
PID=""
cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill -TERM "$PID" 2>/dev/null
		i=0
		while kill -0 "$PID" 2>/dev/null && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$PID" 2>/dev/null
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free port: ask the kernel for one, then hand it to ckptd (retried below
# if another process takes it first).
free_port() {
	node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

started=0
for attempt in 1 2 3 4 5; do
	PORT=$(free_port)
	"$CKPTD" serve --listen "127.0.0.1:$PORT" --data "$TMP/data" >"$TMP/ckptd.log" 2>&1 &
	PID=$!
	i=0
	while [ $i -lt 100 ]; do
		if ! kill -0 "$PID" 2>/dev/null; then
			break
		fi
		if node -e 'require("http").get(process.argv[1],r=>process.exit(r.statusCode===200?0:1)).on("error",()=>process.exit(1))' \
			"http://127.0.0.1:$PORT/api/v1/healthz" 2>/dev/null; then
			started=1
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	[ $started = 1 ] && break
	kill "$PID" 2>/dev/null
	wait "$PID" 2>/dev/null
	PID=""
done
if [ $started != 1 ]; then
	echo "e2e: ckptd did not start; its log:" >&2
	cat "$TMP/ckptd.log" >&2
	exit 1
fi
echo "e2e: ckptd on http://127.0.0.1:$PORT (data in $TMP/data)"

mkdir -p "$ROOT/build/screenshots"
CKPTD_URL="http://127.0.0.1:$PORT" E2E_TMP="$TMP" SCREENSHOT_DIR="$ROOT/build/screenshots" \
	CHROMIUM="$CHROMIUM" TORCH_PY="$TORCH_PY" \
	node --test --test-concurrency=1 --test-reporter=spec "$HERE/dashboard.test.mjs"
rc=$?
if [ $rc != 0 ]; then
	echo "e2e: FAILED (ckptd's log: last 20 lines)" >&2
	tail -n 20 "$TMP/ckptd.log" >&2
fi
exit $rc
