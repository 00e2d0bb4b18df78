#!/bin/sh
# The scenario, run as root in the test dom0 by /sbin/realxen-init from the
# scenario disk (mounted at /mnt/realxen). run.sh puts beside it:
#   config          DAEMON=c or DAEMON=rx (then ./rxenstored is the binary),
#                   or DAEMON=booted (run-package.sh: started at boot, nothing
#                   to start; BOOTED_XSD names the executable); with
#                   DAEMON=c, TAKEOVER=1 (run.sh, REALXEN_TAKEOVER=1):
#                   ./rxenstored takes the host over from C and hands it back
#   guest.cpio.gz   the guests' initramfs
# Every step prints one line, "PASS <step>" or "FAIL <step>: <why>", to the
# console and to out/results.txt; logs go to out/. Every wait is bounded, so a
# hang is a FAIL, never a stuck run.
# POSIX sh (dash): no pipefail; each check tests what it needs explicitly.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
R=/mnt/realxen
OUT=$R/out
mkdir -p "$OUT"
RES=$OUT/results.txt
. "$R/config"

# Each line also goes, with dom0's uptime, to out/timeline.txt.
note() {
	echo "$1" | tee -a "$RES"
	echo "$(cut -d' ' -f1 /proc/uptime) $1" >>"$OUT/timeline.txt"
}
pass() { note "PASS $1"; }
fail() { note "FAIL $1: $2"; }
# ok STEP WHY CONDITION...: PASS if the command succeeds, else FAIL with WHY.
ok() {
	_s=$1 _w=$2
	shift 2
	if "$@"; then pass "$_s"; else fail "$_s" "$_w"; fi
}
# waitfor SECONDS COMMAND...: retry COMMAND every half second until it succeeds.
waitfor() {
	_t=$(($1 * 2))
	shift
	while [ "$_t" -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
		_t=$((_t - 1))
	done
	return 1
}
# oneline FILE: a file's last lines on one line, for a FAIL reason.
oneline() { tail -n 3 "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-300; }
xsread() { timeout -k 5 10 xenstore-read "$@" 2>/dev/null; }
# node_is PATH VALUE
node_is() { [ "$(xsread "$1")" = "$2" ]; }

# The steps run in a child of this script (called with the argument "steps")
# under a deadline; this parent then collects the logs, so that they come out
# and the machine shuts down before run.sh's own timeout even after a hang.
DEADLINE=${DEADLINE:-720}
if [ "${1:-}" != steps ]; then
	: >"$RES"
	: >"$OUT/timeline.txt"
	# Every 30 s, what each process waits on: the trail a hang leaves.
	(while :; do
		echo "=== $(cut -d' ' -f1 /proc/uptime)"
		ps -eo pid,ppid,stat,wchan:32,etime,args | grep -v '\[.*\]$'
		sleep 30
	done >"$OUT/ps-every-30s.txt" 2>&1) &
	pspid=$!
	timeout -k 5 "$DEADLINE" sh "$0" steps
	rc=$?
	kill "$pspid" 2>/dev/null
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		fail "scenario: finished within $DEADLINE s" "the steps were stopped at the deadline (see the last step above and out/ps-every-30s.txt)"
	else
		pass "scenario: finished within $DEADLINE s"
	fi
	timeout -k 5 20 xenstore-ls -fp / >"$OUT/store-end.txt" 2>&1
	timeout -k 5 20 xl list >"$OUT/xl-list-final.txt" 2>&1
	timeout -k 5 20 xl dmesg >"$OUT/xen-dmesg.txt" 2>&1
	dmesg >"$OUT/dom0-dmesg.txt" 2>&1
	ps -ef >"$OUT/ps.txt" 2>&1
	for f in /var/log/xen/console/guest-*.log; do
		[ -e "$f" ] && cp "$f" "$OUT/console-last-$(basename "$f")"
	done
	cp -r /var/log/xen "$OUT/var-log-xen" 2>/dev/null
	if [ "$DAEMON" = rx ] && [ -x "$R/xsbench" ] && [ -x "$R/xsbench-memory" ]; then
		# REALXEN_BENCH: both daemons through the same workloads, after
		# the host's own xenstored and xenconsoled are stopped.
		for f in /run/xenconsoled.pid /run/xenstore.pid; do
			p=$(cat "$f" 2>/dev/null) && kill "$p" 2>/dev/null
		done
		sleep 2
		BENCH_SHAPES=${BENCH_SHAPES:-20000:8,10000:100} timeout -k 5 3000 sh "$R/bench.sh" "$OUT/bench.txt" /usr/local/sbin/rxenstored \
			"$(/usr/lib/xen-common/bin/xen-dir)/bin/xenstored" >"$OUT/bench-console.txt" 2>&1
	fi
	p=$(grep -c '^PASS' "$RES")
	f=$(grep -c '^FAIL' "$RES")
	echo "realxen: $p passed, $f failed"
	sync
	exit 0
fi

echo "realxen: dom0 scenario, daemon $DAEMON, $(uname -r)"
mount -t xenfs xenfs /proc/xen 2>/dev/null
ROOT=$(/usr/lib/xen-common/bin/xen-dir)
XENVER=$(/usr/lib/xen-common/bin/xen-version)

# ---------------------------------------------------------------- daemon
# Start it exactly as Debian does at boot: /etc/init.d/xen start, with
# /etc/default/xen's XENSTORED naming the daemon (forks, writes the pid file,
# the script polls `xenstore-read -s /` and runs xen-init-dom0).
mkdir -p /var/log/xen/console
case "$DAEMON" in
c)
	XSD=$ROOT/bin/xenstored
	XSD_ARGS="-T /var/log/xen/xenstored-trace.log"
	;;
booted)
	# run-package.sh: the host's own start-up (systemd, xen.service) started
	# the xenstored at boot; config's BOOTED_XSD names its executable.
	XSD=$BOOTED_XSD
	;;
*)
	install -m 0755 "$R/rxenstored" /usr/local/sbin/rxenstored
	XSD=/usr/local/sbin/rxenstored
	XSD_ARGS="-T /var/log/xen/xenstored-trace.log --log-file /var/log/xen/xenstored.log -V"
	;;
esac
if [ "$DAEMON" != booted ]; then
cat >/etc/default/xen <<EOF
XENSTORED="$XSD"
XENSTORED_ARGS="$XSD_ARGS"
XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"
EOF
cp /etc/default/xen "$OUT/etc-default-xen"
timeout -k 5 120 /etc/init.d/xen start >"$OUT/initd-xen.log" 2>&1
rc=$?
cat "$OUT/initd-xen.log"
ok "dom0: /etc/init.d/xen start" "exit status $rc: $(oneline "$OUT/initd-xen.log")" [ "$rc" = 0 ]
fi

pid=$(cat /run/xenstore.pid 2>/dev/null)
exe=$(readlink "/proc/${pid:-0}/exe" 2>/dev/null)
ok "dom0: daemon forked, pid file names it" "pid file '${pid}', exe '${exe}', want $XSD" \
	[ -n "$pid" -a "$exe" = "$XSD" ]
ok "dom0: xen-init-dom0 wrote /local/domain/0" "name '$(xsread /local/domain/0/name)' domid '$(xsread /local/domain/0/domid)'" \
	node_is /local/domain/0/name Domain-0
cpid=$(cat /run/xenconsoled.pid 2>/dev/null)
ok "dom0: xenconsoled running" "pid file '$cpid'" [ -n "$cpid" -a -d "/proc/${cpid:-0}" ]

# ---------------------------------------------------------------- socket
sock_clients() {
	timeout -k 5 10 xenstore-write /realxen/sock/a hello /realxen/sock/b world || return 1
	[ "$(xsread /realxen/sock/a)" = hello ] || return 1
	[ "$(timeout -k 5 10 xenstore-list /realxen/sock | tr '\n' ' ')" = "a b " ] || return 1
	timeout -k 5 10 xenstore-ls -f /realxen | grep -q '^/realxen/sock/b = "world"' || return 1
	timeout -k 5 10 xenstore-rm /realxen/sock/a || return 1
	! timeout -k 5 10 xenstore-exists /realxen/sock/a
}
ok "dom0: socket clients (write, read, list, ls, rm)" "see the console" sock_clients

# ---------------------------------------------------------------- kernel ring
# libxenstore tries the socket, then the ring device; pointing XENSTORED_PATH
# at the device makes the socket attempt fail, so the clients use
# /dev/xen/xenbus, which the dom0 kernel serves over the page xenstored mapped.
ring() { XENSTORED_PATH=/dev/xen/xenbus timeout -k 5 10 "$@"; }
ok "dom0 ring: read" "xenstore-read over /dev/xen/xenbus: '$(ring xenstore-read /local/domain/0/name 2>&1)'" \
	[ "$(ring xenstore-read /local/domain/0/name 2>/dev/null)" = Domain-0 ]
ok "dom0 ring: write in a transaction" "xenstore-write of two nodes over the ring" \
	sh -c 'XENSTORED_PATH=/dev/xen/xenbus timeout -k 5 10 xenstore-write /realxen/ring/a 1 /realxen/ring/b 2 &&
	       [ "$(timeout -k 5 10 xenstore-read /realxen/ring/a /realxen/ring/b | tr "\n" " ")" = "1 2 " ]'
(XENSTORED_PATH=/dev/xen/xenbus timeout -k 5 30 xenstore-watch -n 2 /realxen/ring/w >"$OUT/ring-watch.txt" 2>&1) &
wpid=$!
waitfor 10 test -s "$OUT/ring-watch.txt"
timeout -k 5 10 xenstore-write /realxen/ring/w fired
wait $wpid
ok "dom0 ring: watch" "events: $(oneline "$OUT/ring-watch.txt")" \
	[ "$(grep -c '^/realxen/ring/w$' "$OUT/ring-watch.txt")" = 2 ]
timeout -k 5 10 xenstore-rm /realxen

# ---------------------------------------------------------------- Rust client
# The project's client crate (crates/xenstore-client), checked by its example
# xs-client-check (run.sh builds it static and puts it on the scenario disk):
# here over the daemon's socket and over dom0's /dev/xen/xenbus, later inside
# a guest (CLIENT_GUESTS). Each of its PASS/FAIL lines becomes a step named
# after the run, then one step for its exit status.
CLIENT=/usr/local/bin/xs-client-check
CLIENT_GUESTS=${CLIENT_GUESTS:-g1}
[ ! -e "$R/xs-client-check" ] || install -m 0755 "$R/xs-client-check" "$CLIENT"
# client_report LABEL FILE RC (all lines at once: a process per line costs
# a good part of a second under emulation)
client_report() {
	grep -a -E '^(PASS|FAIL) ' "$2" | awk -v l="$1" '{ sub(/ /, " " l ": "); print }' >/tmp/client-steps
	tee -a "$RES" </tmp/client-steps
	_up=$(cut -d' ' -f1 /proc/uptime)
	sed "s/^/$_up /" /tmp/client-steps >>"$OUT/timeline.txt"
	_n=$(wc -l </tmp/client-steps)
	ok "$1: exit status 0" "exit status '$3' after $_n checks: $(oneline "$2")" [ "$3" = 0 ]
}
# client_dom0 LABEL LOG ARGS...: runs it in dom0, its output in out/LOG.
client_dom0() {
	_l=$1 _f=$OUT/$2
	shift 2
	if [ ! -x "$CLIENT" ]; then
		fail "$_l" "no xs-client-check on the scenario disk (run.sh's static build failed)"
		return
	fi
	timeout -k 5 300 "$CLIENT" "$@" >"$_f" 2>&1
	_rc=$?
	client_report "$_l" "$_f" "$_rc"
}
client_dom0 "dom0 client (socket)" client-dom0-socket.txt --socket /run/xenstored/socket /realxen/client-socket
client_dom0 "dom0 client (/dev/xen/xenbus)" client-dom0-xenbus.txt --xenbus /dev/xen/xenbus /realxen/client-xenbus
timeout -k 5 10 xenstore-rm /realxen

# ---------------------------------------------------------------- toolstack
timeout -k 5 60 xl info >"$OUT/xl-info.txt" 2>&1
ok "dom0: xl info" "$(oneline "$OUT/xl-info.txt")" grep -q "^xen_minor *: ${XENVER#*.}" "$OUT/xl-info.txt"
timeout -k 5 60 xl list >"$OUT/xl-list-start.txt" 2>&1
ok "dom0: xl list" "$(oneline "$OUT/xl-list-start.txt")" grep -q '^Domain-0 *0 ' "$OUT/xl-list-start.txt"
timeout -k 5 120 "$ROOT/bin/test-xenstore" >"$OUT/test-xenstore.txt" 2>&1
rc=$?
ok "dom0: test-xenstore" "exit status $rc: $(oneline "$OUT/test-xenstore.txt")" [ "$rc" = 0 ]

# ---------------------------------------------------------------- guests
# Count @releaseDomain events for the whole guest part (the first line is the
# event every new watch fires once).
(timeout -k 5 900 xenstore-watch @releaseDomain >"$OUT/releasedomain-watch.txt" 2>&1) &
waitfor 10 test -s "$OUT/releasedomain-watch.txt"

KERNEL=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)
cp "$R/guest.cpio.gz" /var/lib/realxen-guest.cpio.gz 2>/dev/null ||
	{ mkdir -p /var/lib && cp "$R/guest.cpio.gz" /var/lib/realxen-guest.cpio.gz; }
# mkcfg NAME [EXTRA]: EXTRA goes on the guest kernel's command line.
mkcfg() {
	cat >"/tmp/$1.cfg" <<EOF
name = "$1"
type = "pv"
kernel = "$KERNEL"
ramdisk = "/var/lib/realxen-guest.cpio.gz"
extra = "console=hvc0 quiet${2:+ $2}"
memory = 160
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "destroy"
EOF
}
domid_of() { timeout -k 5 20 xl domid "$1" 2>/dev/null; }
# no_domain ID: Xen lists no domain ID (not even a dying one).
no_domain() { ! timeout -k 5 20 xl list | awk 'NR > 1 {print $2}' | grep -qx "$1"; }

# create NAME [LABEL]: xl create, then the checks every guest gets, each
# step named after LABEL (default NAME). Sets $D. The waits overlap (one for
# the kernel's node and the guest's report together), so a guest that cannot
# write costs one timeout, not one per step.
create() {
	g=$1
	l=${2:-$1}
	case " $CLIENT_GUESTS " in
	*" $l "*) client=1 ;;
	*) client=0 ;;
	esac
	mkcfg "$g" "$([ "$client" = 1 ] && echo realxen_client=1)"
	timeout -k 5 120 xl create "/tmp/$g.cfg" >"$OUT/xl-create-$l.txt" 2>&1
	rc=$?
	[ "$rc" = 0 ] || ps -ef >"$OUT/ps-after-xl-create-$l.txt" 2>&1
	D=$(domid_of "$g")
	ok "$l: xl create" "exit status $rc, domid '$D': $(oneline "$OUT/xl-create-$l.txt")" [ "$rc" = 0 -a -n "$D" ]
	if [ -z "$D" ]; then
		for s in "libxl's nodes" "kernel wrote control/feature-poweroff" "guest reads over its ring" \
			"guest writes a relative path" "guest writes in a transaction" "guest watch fired" \
			"console reaches xenconsoled"; do
			fail "$l: $s" "no domain (xl create failed)"
		done
		[ "$client" = 0 ] || fail "$l client (/dev/xen/xenbus)" "no domain (xl create failed)"
		D=none
		return 1
	fi
	P=/local/domain/$D
	vm=$(xsread "$P/vm")
	ok "$l: libxl's nodes" "name '$(xsread "$P/name")', vm '$vm', /libxl/$D $(timeout -k 5 10 xenstore-exists "/libxl/$D" 2>/dev/null && echo present || echo absent)" \
		sh -c "[ \"\$(timeout -k 5 10 xenstore-read $P/name)\" = $g ] && [ -n '$vm' ] && timeout -k 5 10 xenstore-exists '$vm' &&
		       timeout -k 5 10 xenstore-exists /libxl/$D && timeout -k 5 10 xenstore-exists $P/control/shutdown"
	waitfor 90 sh -c "[ \"\$(timeout -k 5 10 xenstore-read $P/control/feature-poweroff)\" = 1 ] &&
			  [ \"\$(timeout -k 5 10 xenstore-read $P/data/status)\" = ready ]"
	ok "$l: kernel wrote control/feature-poweroff" "after 90 s: '$(xsread "$P/control/feature-poweroff")'" \
		node_is "$P/control/feature-poweroff" 1
	ok "$l: guest reads over its ring" "data/name-read '$(xsread "$P/data/name-read")', data/status '$(xsread "$P/data/status")' after 90 s" \
		node_is "$P/data/name-read" "$g"
	ok "$l: guest writes a relative path" "data/rel '$(xsread "$P/data/rel")'" node_is "$P/data/rel" hello
	ok "$l: guest writes in a transaction" "data/txn-a '$(xsread "$P/data/txn-a")' data/txn-b '$(xsread "$P/data/txn-b")'" \
		sh -c "[ \"\$(timeout -k 5 10 xenstore-read $P/data/txn-a $P/data/txn-b | tr '\n' ' ')\" = '1 2 ' ]"
	if node_is "$P/data/status" ready; then
		timeout -k 5 10 xenstore-write "$P/data/ping" 1
		ok "$l: guest watch fired" "data/watch '$(xsread "$P/data/watch")' after 30 s" waitfor 30 node_is "$P/data/watch" ok
	else
		fail "$l: guest watch fired" "the guest never wrote data/status = ready, so its watch was not tried"
	fi
	ok "$l: console reaches xenconsoled" "no 'REALXEN-GUEST hello $g' in /var/log/xen/console/guest-$g.log" \
		waitfor 20 grep -q "REALXEN-GUEST hello $g" "/var/log/xen/console/guest-$g.log"
	[ "$client" = 0 ] || client_guest "$l client (/dev/xen/xenbus)"
}
# client_guest LABEL: the guest's xs-client-check report (guest-init.sh: one
# node per line under data/client-out, the exit status in data/client-rc,
# written together) as steps.
client_guest() {
	if ! waitfor 240 timeout -k 5 10 xenstore-exists "$P/data/client-rc"; then
		fail "$1" "no data/client-rc after 240 s; the guest's console: $(grep 'client:' "/var/log/xen/console/guest-$g.log" | tail -n 3 | tr '\n' ' ' | cut -c1-300)"
		return
	fi
	_f=$OUT/client-guest-$l.txt
	# One xenstore-read for all the lines, in their order.
	timeout -k 5 20 xenstore-read $(timeout -k 5 10 xenstore-list "$P/data/client-out" | sort -n |
		sed "s|^|$P/data/client-out/|") >"$_f" 2>&1
	client_report "$1" "$_f" "$(xsread "$P/data/client-rc")"
}
save_console() { cp "/var/log/xen/console/guest-$1.log" "$OUT/console-$1-$2.log" 2>/dev/null; }

# Guest 1: created, then shut down by xl (the guest kernel sees
# control/shutdown through its watch and powers off; xl waits for the death
# that @releaseDomain announces).
create g1
D1=$D

# ---------------------------------------------------------------- live update
# One live update with Xen's own xenstore-control while g1 runs (its ring, its
# kernel's watch on data/lu-ping), dom0's kernel relays /dev/xen/xenbus and a
# socket client keeps a watch; afterwards the same process serves all three.
# live_update NAME BINARY PING: NAME prefixes the steps, BINARY is what the
# process runs afterwards, PING the value g1 answers after.
live_update() {
	_n=$1 _bin=$2 _ping=$3
	(timeout -k 5 400 xenstore-watch -n 2 /realxen/lu >"$OUT/$_n-watch.txt" 2>&1) &
	waitfor 10 test -s "$OUT/$_n-watch.txt"
	lupid=$(cat /run/xenstore.pid 2>/dev/null)
	t=$(cut -d' ' -f1 /proc/uptime)
	timeout -k 5 120 xenstore-control live-update "$_bin" >"$OUT/$_n.txt" 2>&1
	rc=$?
	echo "realxen: $_n took $(echo "$(cut -d' ' -f1 /proc/uptime) $t" | awk '{print $1 - $2}') s (exit status $rc)"
	ok "$_n: xenstore-control live-update $_bin" "exit status $rc: $(oneline "$OUT/$_n.txt")" [ "$rc" = 0 ]
	ok "$_n: the same process, the pid file unchanged, now $_bin" \
		"pid before '$lupid', pid file now '$(cat /run/xenstore.pid 2>/dev/null)', exe '$(readlink "/proc/${lupid:-0}/exe" 2>/dev/null)'" \
		sh -c "[ -n '$lupid' ] && [ \"\$(cat /run/xenstore.pid)\" = '$lupid' ] &&
		       [ \"\$(readlink /proc/$lupid/exe)\" = '$_bin' ]"
	ok "$_n: the socket serves" "xenstore-read /local/domain/0/name gave '$(xsread /local/domain/0/name)'" \
		sh -c "[ -n \"\$(timeout -k 5 10 xenstore-read /local/domain/0/name)\" ]"
	ok "$_n: dom0's kernel ring serves (/dev/xen/xenbus)" "$(ring xenstore-read /local/domain/0/name 2>&1 | tr '\n' ' ')" \
		ring xenstore-read /local/domain/0/name
	timeout -k 5 10 xenstore-write "$P1/data/lu-ping" "$_ping"
	ok "$_n: g1's watch set before fires after, and g1 writes over its ring" \
		"data/lu-pong '$(xsread "$P1/data/lu-pong")' after 30 s" waitfor 30 node_is "$P1/data/lu-pong" "$_ping"
	timeout -k 5 10 xenstore-write /realxen/lu 1
	ok "$_n: a socket watch set before fires after" "events: $(oneline "$OUT/$_n-watch.txt")" \
		waitfor 20 sh -c "[ \$(grep -c '^/realxen/lu\$' '$OUT/$_n-watch.txt') -ge 2 ]"
	timeout -k 5 30 xl list >"$OUT/xl-list-after-$_n.txt" 2>&1
	ok "$_n: xl list" "$(oneline "$OUT/xl-list-after-$_n.txt")" \
		grep -q "^g1 " "$OUT/xl-list-after-$_n.txt"
	timeout -k 5 10 xenstore-rm /realxen
}
lu_ready() {
	P1=/local/domain/$D1
	ok "$1: g1's watch on data/lu-ping is set" "data/lu-ready '$(xsread "$P1/data/lu-ready")' after 60 s" \
		waitfor 60 node_is "$P1/data/lu-ready" 1
	timeout -k 5 10 xenstore-write "$P1/data/lu-ping" before
	ok "$1: g1 answers before" "data/lu-pong '$(xsread "$P1/data/lu-pong")' after 30 s" \
		waitfor 30 node_is "$P1/data/lu-pong" before
}
# rxenstored runs: the same binary replaces itself; the rest of the scenario
# (g1's shutdown through @releaseDomain, g2 and g3 created and destroyed)
# runs on the updated daemon.
if [ "$DAEMON" = rx ] && [ "$D1" != none ]; then
	lu_ready "live update"
	live_update "live update" /usr/local/sbin/rxenstored after
fi
# C xenstored runs with TAKEOVER=1 (run.sh, REALXEN_TAKEOVER=1): rxenstored
# takes the host over from C by C's own live update, then hands it back to
# C the same way; the rest of the scenario runs on C again.
if [ "$DAEMON" = c ] && [ "${TAKEOVER:-0}" = 1 ] && [ "$D1" != none ]; then
	install -m 0755 "$R/rxenstored" /usr/local/sbin/rxenstored
	# Both daemons log to syslog once forked: keep it in out/syslog.txt.
	if [ ! -S /dev/log ] && command -v busybox >/dev/null; then
		busybox syslogd -n -O "$OUT/syslog.txt" &
		waitfor 5 test -S /dev/log
	fi
	lu_ready "take-over"
	live_update "take-over" /usr/local/sbin/rxenstored taken
	live_update "hand-back" "$XSD" back
fi
timeout -k 5 90 xl shutdown -w g1 >"$OUT/xl-shutdown-g1.txt" 2>&1
rc=$?
ok "g1: xl shutdown -w returns" "exit status $rc (124 = still waiting after 90 s): $(oneline "$OUT/xl-shutdown-g1.txt")" [ "$rc" = 0 ]
ok "g1: gone after shutdown" "still listed: $(timeout -k 5 10 xl list | awk -v d="$D1" '$2 == d' | tr -s ' ')" waitfor 20 no_domain "$D1"
save_console g1 1

# Guest 2: created, then destroyed.
create g2
D2=$D
timeout -k 5 60 xl destroy g2 >"$OUT/xl-destroy-g2.txt" 2>&1
rc=$?
ok "g2: xl destroy" "exit status $rc: $(oneline "$OUT/xl-destroy-g2.txt")" [ "$rc" = 0 ]
ok "g2: gone after destroy" "still listed: $(timeout -k 5 10 xl list | awk -v d="$D2" '$2 == d' | tr -s ' ')" waitfor 20 no_domain "$D2"
save_console g2 2

# Guest 3: a new guest under guest 1's name (xl refuses a name still in the
# store), which must start from a fresh state: nothing of the old domains'
# nodes, its own nodes complete. Xen gives PV guests the next free domid and
# xl cannot choose one, so the domid itself is only reported.
rm -f /var/log/xen/console/guest-g1.log
create g1 g3
D3=$D
echo "realxen: guest domids: g1=$D1 g2=$D2 new g1=$D3"
ok "g3 (named g1): fresh state, nothing of the old domains" \
	"old nodes: $(timeout -k 5 10 xenstore-list /local/domain | tr '\n' ' '), /libxl: $(timeout -k 5 10 xenstore-list /libxl | tr '\n' ' ')" \
	sh -c "[ '$D3' != '$D1' -o '$D1' = none ] && ! timeout -k 5 10 xenstore-exists /local/domain/$D1/data/ping &&
	       ! timeout -k 5 10 xenstore-exists /local/domain/$D2 && ! timeout -k 5 10 xenstore-exists /libxl/$D2"
timeout -k 5 60 xl destroy g1 >"$OUT/xl-destroy-g1-again.txt" 2>&1
rc=$?
ok "g3 (named g1): xl destroy" "exit status $rc: $(oneline "$OUT/xl-destroy-g1-again.txt")" [ "$rc" = 0 ]
save_console g1 3

# ---------------------------------------------------------------- the end
waitfor 60 sh -c '[ "$(timeout -k 5 10 xl list | wc -l)" = 2 ]'
timeout -k 5 30 xl list >"$OUT/xl-list-end.txt" 2>&1
ok "end: no zombie in xl list" "$(sed 1d "$OUT/xl-list-end.txt" | awk '{print $1 "/" $2 "/" $5}' | tr '\n' ' ')" \
	sh -c "[ \$(sed 1d '$OUT/xl-list-end.txt' | wc -l) = 1 ] && grep -q '^Domain-0 ' '$OUT/xl-list-end.txt'"
ok "end: only /local/domain/0 in the store" "/local/domain has: $(timeout -k 5 10 xenstore-list /local/domain | tr '\n' ' ')" \
	waitfor 20 sh -c '[ "$(timeout -k 5 10 xenstore-list /local/domain | tr "\n" " ")" = "0 " ]'
waitfor 10 sh -c "[ \$(grep -c '^@releaseDomain' '$OUT/releasedomain-watch.txt') -ge 4 ]"
n=$(($(grep -c '^@releaseDomain' "$OUT/releasedomain-watch.txt") - 1))
ok "end: @releaseDomain fired for each guest gone" "$n events after the first, for 3 guests" [ "$n" -ge 3 ]

