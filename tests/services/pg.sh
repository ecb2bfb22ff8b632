#!/bin/sh
# PostgreSQL for the tests, from Debian's `postgresql` package, in a directory
# of the caller's, on 127.0.0.1 only.
#
#   sh tests/services/pg.sh start DIR [PORT]   initdb DIR/data (first time), start
#                                              the server, print its URL
#   sh tests/services/pg.sh stop DIR           stop it (fast shutdown, by its pid)
#   sh tests/services/pg.sh url DIR            print the URL of a started server
#
# Facts this relies on: the binaries live in /usr/lib/postgresql/N/bin (not on
# PATH); the server refuses to run as root, so as root the directory is given
# to the `postgres` user and the binaries run through runuser; `initdb -A
# trust -U ckptd` makes a superuser `ckptd` that needs no password on
# loopback; `pg_ctl start -w` returns once the server accepts connections
# (about a second). The server's pid is the first line of DIR/data/
# postmaster.pid; SIGINT is PostgreSQL's fast shutdown.
set -eu

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|url DIR [PORT]" >&2; exit 2; }

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] && [ -x "$bin/pg_ctl" ] || {
	echo "pg.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
	exit 1
}

as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	[ "$(id -u)" = 0 ] && chown postgres "$dir"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_pg "$bin/initdb" -D "$dir/data" -A trust -U ckptd >"$dir/initdb.log" 2>&1 || {
			cat "$dir/initdb.log" >&2
			exit 1
		}
	fi
	port=${3:-}
	[ -n "$port" ] || port=$(cat "$dir/port" 2>/dev/null || free_port)
	echo "$port" >"$dir/port"
	as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
		-o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=200" \
		start >/dev/null || {
		tail -n 20 "$dir/server.log" >&2
		exit 1
	}
	echo "postgresql://ckptd@127.0.0.1:$port/postgres"
	;;
stop)
	pidfile="$dir/data/postmaster.pid"
	[ -f "$pidfile" ] || exit 0
	pid=$(head -n 1 "$pidfile")
	kill -INT "$pid" 2>/dev/null || exit 0
	i=0
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i + 1))
		[ "$i" -gt 300 ] && { kill -KILL "$pid" 2>/dev/null; break; }
		sleep 0.1
	done
	;;
url)
	echo "postgresql://ckptd@127.0.0.1:$(cat "$dir/port")/postgres"
	;;
*)
	echo "usage: $0 start|stop|url DIR [PORT]" >&2
	exit 2
	;;
esac
