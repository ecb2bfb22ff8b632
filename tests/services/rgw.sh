#!/bin/sh
# rgw.sh: a throwaway S3 endpoint for tests: Ceph RGW from Debian's packages
# (radosgw, ceph-mon, ceph-osd), one monitor, one OSD on memstore and one
# gateway, all on 127.0.0.1, all state in one temporary directory, no
# containers, no systemd, no cephadm, no mgr. About 15 s to start.
#
#   eval "$(sh tests/services/rgw.sh start)"  start; prints `export` lines
#   sh tests/services/rgw.sh env [DIR]        print those lines again
#   sh tests/services/rgw.sh stop [DIR]       stop rgw, osd, mon; remove DIR
#   sh tests/services/rgw.sh stop-rgw [DIR]   stop only the gateway (a store
#                                             that went away)
#   sh tests/services/rgw.sh start-rgw [DIR]  start the gateway again, same port
#
# DIR defaults to $CKPTD_RGW_DIR. The exported variables:
#   CKPTD_RGW_DIR            the state directory (pid files, logs, ceph.conf)
#   CKPTD_TEST_S3_ENDPOINT   http://127.0.0.1:PORT
#   CKPTD_TEST_S3_BUCKET     a bucket made for the tests ("ckptd-test")
#   CKPTD_TEST_S3_REGION     "us-east-1" (RGW accepts any region name)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  a user made with radosgw-admin
#
# Facts this relies on (Ceph 16, Debian 12):
# - Every ceph*/radosgw* command reads the configuration named by CEPH_CONF.
# - With `auth ... required = none` no keyrings are needed; but radosgw's
#   built-in defaults force cephx and the secure monitor mode, and it hangs
#   at start unless its own section also says `auth client required = none`
#   and `ms mon client mode = crc`.
# - memstore keeps the OSD's objects in memory (`memstore device bytes` is
#   a cap, not an allocation); the pool defaults below make one OSD enough
#   (size 1, 8 PGs, no autoscaler, CRUSH choosing among OSDs, not hosts).
# - Low-disk warnings are turned off so a busy /tmp does not stop the mon.
# - beast's `tcp_nodelay=1`: without it the gateway sends an answer's headers
#   and its small body in two segments with Nagle on, the second waits for
#   the client's delayed ACK of the first, and every such request (a 404
#   with an XML body, a small range GET) takes 40 ms instead of 1.
# - The daemons run as root when started by root (no --setuser given).
# - The gateway creates its pools on first start; it answers HTTP once ready.
# - Everything is stopped by pid file (rgw, osd, mon in that order), never
#   by process name: other engineers' daemons may run on the same machine.
# - S3 requests need SigV4 (curl --aws-sigv4 "aws:amz:REGION:s3") with an
#   x-amz-content-sha256 header, which curl 7.88 does not add by itself:
#   without it RGW answers 403 SignatureDoesNotMatch.
set -eu

BUCKET=ckptd-test
REGION=us-east-1

die() {
	echo "rgw.sh: $*" >&2
	exit 1
}

# A TCP port that no socket uses, nor the one after it, and not in the list
# $3 (ports already chosen): below the kernel's range of ephemeral ports, so
# no outgoing connection takes it between this check and the daemon's bind.
free_port() {
	low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	[ "$low" -gt 12000 ] || low=32768
	for _ in $(seq 1 200); do
		p=$((10000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % (low - 10002)))
		busy=0
		for q in $p $((p + 1)); do
			case " ${3:-} " in *" $q "*) busy=1 ;; esac
			if command -v ss >/dev/null && ss -Htan "( sport = :$q )" | grep -q .; then
				busy=1
			fi
		done
		[ $busy = 0 ] && { echo $p; return 0; }
	done
	die "no free port found"
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND until it succeeds.
wait_for() {
	t=$1
	what=$2
	shift 2
	end=$(($(date +%s) + t))
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.2
	done
}

pid_alive() {
	[ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# stop_pid FILE: TERM, then KILL after 10 s; waits until the process is gone.
stop_pid() {
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null; do
			i=$((i + 1))
			if [ $i = 50 ]; then kill -9 "$pid" 2>/dev/null || true; fi
			[ $i -lt 100 ] || break
			sleep 0.2
		done
	fi
	rm -f "$1"
}

print_env() {
	d=$1
	[ -f "$d/env" ] || die "$d is not an rgw.sh directory (no $d/env)"
	cat "$d/env"
}

http_answers() {
	curl -s -o /dev/null --max-time 2 "$1"
}

start_rgw() {
	d=$1
	CEPH_CONF=$d/ceph.conf radosgw -n client.rgw.a >>"$d/start.log" 2>&1 ||
		die "radosgw did not start (see $d/log)"
	wait_for 60 "rgw pid" test -f "$d/run/client.rgw.a.pid" ||
		die "radosgw wrote no pid file (see $d/log)"
	cp "$d/run/client.rgw.a.pid" "$d/rgw.pid"
	port=$(cat "$d/rgw.port")
	wait_for 90 "rgw" http_answers "http://127.0.0.1:$port/" ||
		die "radosgw does not answer on 127.0.0.1:$port (see $d/log/client.rgw.a.log)"
}

cmd_start() {
	command -v radosgw >/dev/null && command -v ceph-mon >/dev/null &&
		command -v ceph-osd >/dev/null ||
		die "needs Debian's radosgw, ceph-mon and ceph-osd (apt-get install radosgw ceph-mon ceph-osd)"
	d=$(mktemp -d "${TMPDIR:-/tmp}/ckptd-rgw.XXXXXX")
	mkdir -p "$d/run" "$d/log" "$d/mon" "$d/osd" "$d/rgw"
	fsid=$(cat /proc/sys/kernel/random/uuid)
	monport=$(free_port 2)
	rgwport=$(free_port 1 "$monport $((monport + 1))")
	echo "$rgwport" >"$d/rgw.port"
	cat >"$d/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$monport,v1:127.0.0.1:$((monport + 1))]
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
run dir = $d/run
pid file = $d/run/\$name.pid
admin socket = $d/run/\$name.asok
log file = $d/log/\$name.log
mon data = $d/mon/\$cluster-\$id
osd data = $d/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 4294967296
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 2
mon data avail crit = 1
osd memory target = 1073741824

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgwport tcp_nodelay=1
rgw data = $d/rgw
auth client required = none
ms mon client mode = crc
EOF
	export CEPH_CONF="$d/ceph.conf"
	# If anything below fails, stop what was started and say where the logs are.
	trap 'cmd_stop_quiet "$d"' EXIT

	monmaptool --create --fsid "$fsid" \
		--addv a "[v2:127.0.0.1:$monport,v1:127.0.0.1:$((monport + 1))]" \
		"$d/monmap" >>"$d/start.log" 2>&1 || die "monmaptool failed (see $d/start.log)"
	ceph-mon --mkfs -i a --monmap "$d/monmap" >>"$d/start.log" 2>&1 ||
		die "ceph-mon --mkfs failed (see $d/start.log)"
	ceph-mon -i a >>"$d/start.log" 2>&1 || die "ceph-mon did not start (see $d/log)"
	wait_for 30 "mon pid" test -f "$d/run/mon.a.pid" || die "ceph-mon wrote no pid file"
	cp "$d/run/mon.a.pid" "$d/mon.pid"
	wait_for 60 "mon" ceph --connect-timeout 5 -s || die "the monitor does not answer (see $d/log/mon.a.log)"

	osduuid=$(cat /proc/sys/kernel/random/uuid)
	osdid=$(ceph --connect-timeout 10 osd new "$osduuid" 2>>"$d/start.log") ||
		die "ceph osd new failed (see $d/start.log)"
	mkdir -p "$d/osd/ceph-$osdid" # memstore's mkfs writes its fsid file there
	ceph-osd -i "$osdid" --mkfs --osd-uuid "$osduuid" >>"$d/start.log" 2>&1 ||
		die "ceph-osd --mkfs failed (see $d/start.log)"
	ceph-osd -i "$osdid" >>"$d/start.log" 2>&1 || die "ceph-osd did not start (see $d/log)"
	wait_for 30 "osd pid" test -f "$d/run/osd.$osdid.pid" || die "ceph-osd wrote no pid file"
	cp "$d/run/osd.$osdid.pid" "$d/osd.pid"
	wait_for 60 "osd up" sh -c "ceph --connect-timeout 5 osd dump | grep -q '^osd.$osdid up'" ||
		die "osd.$osdid is not up (see $d/log/osd.$osdid.log)"

	start_rgw "$d"

	key=CKPTD$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
	secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
	radosgw-admin user create --uid=test --display-name=test \
		--access-key="$key" --secret-key="$secret" >>"$d/start.log" 2>&1 ||
		die "radosgw-admin user create failed (see $d/start.log)"
	endpoint=http://127.0.0.1:$rgwport
	empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
	code=$(curl -s -o "$d/bucket.out" -w '%{http_code}' -X PUT --max-time 30 \
		--aws-sigv4 "aws:amz:$REGION:s3" --user "$key:$secret" \
		-H "x-amz-content-sha256: $empty" "$endpoint/$BUCKET")
	[ "$code" = 200 ] || die "creating bucket $BUCKET answered $code: $(cat "$d/bucket.out")"

	cat >"$d/env" <<EOF
export CKPTD_RGW_DIR='$d'
export CKPTD_TEST_S3_ENDPOINT='$endpoint'
export CKPTD_TEST_S3_BUCKET='$BUCKET'
export CKPTD_TEST_S3_REGION='$REGION'
export AWS_ACCESS_KEY_ID='$key'
export AWS_SECRET_ACCESS_KEY='$secret'
EOF
	trap - EXIT
	print_env "$d"
}

cmd_stop_quiet() {
	d=$1
	stop_pid "$d/rgw.pid"
	stop_pid "$d/osd.pid"
	stop_pid "$d/mon.pid"
	# pid files the daemons wrote before we copied them
	for f in "$d"/run/*.pid; do
		[ -f "$f" ] && stop_pid "$f"
	done
	echo "rgw.sh: start failed; logs kept in $d" >&2
}

cmd_stop() {
	d=$1
	[ -f "$d/ceph.conf" ] || die "$d is not an rgw.sh directory"
	stop_pid "$d/rgw.pid"
	stop_pid "$d/osd.pid"
	stop_pid "$d/mon.pid"
	rm -rf "$d"
}

cmd=${1:-}
dir=${2:-${CKPTD_RGW_DIR:-}}
case "$cmd" in
start) cmd_start ;;
env) [ -n "$dir" ] || die "env: no directory"; print_env "$dir" ;;
stop) [ -n "$dir" ] || die "stop: no directory"; cmd_stop "$dir" ;;
stop-rgw)
	[ -n "$dir" ] || die "stop-rgw: no directory"
	stop_pid "$dir/rgw.pid"
	rm -f "$dir/run/client.rgw.a.pid"
	;;
start-rgw)
	[ -n "$dir" ] || die "start-rgw: no directory"
	pid_alive "$dir/rgw.pid" && die "radosgw already runs (pid $(cat "$dir/rgw.pid"))"
	export CEPH_CONF="$dir/ceph.conf"
	start_rgw "$dir"
	;;
*)
	echo "usage: sh tests/services/rgw.sh start|env|stop|stop-rgw|start-rgw [DIR]" >&2
	exit 2
	;;
esac
