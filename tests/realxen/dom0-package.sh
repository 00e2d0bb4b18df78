#!/bin/sh
# The package scenario (run-package.sh), one phase per boot of a dom0 whose
# PID 1 is systemd and whose Xen daemons Debian's packaging starts
# (xen.service: /etc/init.d/xen start). Run as root by realxen-package.service
# (package-boot.sh) from the scenario disk, mounted at /mnt/realxen, beside:
#   package.conf    DEB=<the package's file name>, the package itself
#   config, dom0.sh, guest.cpio.gz   the guest scenario (DAEMON=booted)
# The phase to run is kept on the root disk (/var/lib/realxen-package/phase);
# what to do afterwards (reboot, or power off after the last phase) goes to
# /var/lib/realxen-package/next, which package-boot.sh acts on.
#
#   boot 1  Debian's C xenstored serves; apt installs the package; that
#           changed nothing; rxenstored-switch on; reboot
#   boot 2  rxenstored serves (pid file, executable, socket, journal,
#           --version); the guest scenario (dom0.sh); rxenstored-switch off
#           gives /etc/default/xen back byte for byte; reboot
#   boot 3  Debian's C xenstored serves again, /etc/default/xen as in boot 1;
#           switched on once more, `apt purge` puts it back (the package's
#           prerm); power off
#
# Every step prints "PASS <step>" or "FAIL <step>: <why>" to the console and
# to out/package-results.txt. POSIX sh (dash).
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
R=/mnt/realxen
OUT=$R/out
RES=$OUT/package-results.txt
S=/var/lib/realxen-package
mkdir -p "$OUT" "$S"
. "$R/package.conf"

phase=$(cat "$S/phase" 2>/dev/null || echo 1)
boots=$(($(cat "$S/boots" 2>/dev/null || echo 0) + 1))
echo "$boots" >"$S/boots"
printf "\nREALXEN-PHASE %s (boot %s)\n" "$phase" "$boots" >/dev/console
P="boot $phase"

note() {
	echo "$1" | tee -a "$RES"
	echo "$(date +%s) $(cut -d' ' -f1 /proc/uptime) $1" >>"$OUT/package-timeline.txt"
}
pass() { note "PASS $P: $1"; }
fail() { note "FAIL $P: $1: $2"; }
# ok STEP WHY CONDITION...: PASS if the command succeeds, else FAIL with WHY.
ok() {
	_s=$1 _w=$2
	shift 2
	if "$@"; then pass "$_s"; else fail "$_s" "$_w"; fi
}
oneline() { tail -n 3 "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-300; }
# then NEXT [PHASE]: what package-boot.sh does after this phase.
then_() {
	[ -z "${2:-}" ] || echo "$2" >"$S/phase"
	echo "$1" >"$S/next"
	sync
}

note "---- $P: $(uname -r), systemd $(systemctl --version | head -n 1 | cut -d' ' -f2), uptime $(cut -d' ' -f1 /proc/uptime) s"
if [ "$boots" -gt 3 ]; then
	fail "at most three boots" "this is boot $boots (phase $phase): powering off"
	then_ poweroff
	exit 1
fi

ROOT=$(/usr/lib/xen-common/bin/xen-dir)
XENVER=$(/usr/lib/xen-common/bin/xen-version)
CXSD=$ROOT/bin/xenstored
RXSD=/usr/sbin/rxenstored
SOCK=/run/xenstored/socket
PIDFILE=/run/xenstore.pid

# What every boot saves: the journal, failed units, boot time.
save_boot() {
	journalctl -b --no-pager -o short-monotonic >"$OUT/journal-boot$phase.txt" 2>&1
	systemctl list-units --failed --no-pager >"$OUT/failed-units-boot$phase.txt" 2>&1
	systemctl status --no-pager xen.service >"$OUT/xen-service-boot$phase.txt" 2>&1
	cp /etc/default/xen "$OUT/etc-default-xen.boot$phase"
	ps -eo pid,ppid,stat,etime,args >"$OUT/ps-boot$phase.txt" 2>&1
	cp /proc/net/unix "$OUT/proc-net-unix-boot$phase.txt"
}

# The socket's inodes (listening and accepted ends) from /proc/net/unix,
# under whatever name the daemon bound it (Debian's C xenstored binds
# /var/run/xenstored/socket, /var/run being a link to /run).
sock_inodes() {
	_want=$(readlink -f "$SOCK")
	awk '$NF ~ /\/socket$/ {print $7, $NF}' /proc/net/unix | while read -r _i _p; do
		[ "$(readlink -f "$_p")" != "$_want" ] || echo "$_i"
	done
}
# owns_socket PID: PID holds a descriptor of $SOCK.
owns_socket() {
	_in=$(sock_inodes)
	for _fd in /proc/"$1"/fd/*; do
		_l=$(readlink "$_fd") || continue
		for _i in $_in; do [ "$_l" = "socket:[$_i]" ] && return 0; done
	done
	return 1
}
sockread() { XENSTORED_PATH=$SOCK timeout -k 5 10 xenstore-read "$@" 2>/dev/null; }
# last active XENSTORED= line of /etc/default/xen
xsd_line() { grep -E '^[[:space:]]*XENSTORED=' /etc/default/xen | tail -n 1; }

# boot_checks: systemd is PID 1 and Debian's xen.service ran.
boot_checks() {
	ok "systemd is PID 1" "PID 1 is '$(cat /proc/1/comm)' ($(readlink /proc/1/exe))" \
		[ "$(cat /proc/1/comm)" = systemd ]
	src=$(systemctl show -p SourcePath --value xen.service 2>/dev/null)
	st=$(systemctl show -p ActiveState --value xen.service 2>/dev/null)
	res=$(systemctl show -p Result --value xen.service 2>/dev/null)
	ok "xen.service (Debian's /etc/init.d/xen under systemd) is active" \
		"SourcePath '$src', ActiveState '$st', Result '$res', unit $(systemctl show -p FragmentPath --value xen.service)" \
		[ "$src" = /etc/init.d/xen -a "$st" = active -a "$res" = success ]
	f=$(systemctl list-units --failed --plain --no-legend --no-pager 2>&1)
	ok "no failed systemd unit" "$(echo "$f" | tr '\n' ' ' | cut -c1-300)" [ -z "$f" ]
}

# serves EXE NAME: the pid file names a live process running EXE, started by
# xen.service, holding the socket, which answers a read of dom0's name
# (written by xen-init-dom0 in Debian's script). Sets $pid.
serves() {
	pid=$(cat "$PIDFILE" 2>/dev/null)
	exe=$(readlink "/proc/${pid:-0}/exe" 2>/dev/null)
	ok "$2 serves: $PIDFILE names a process running $1" "pid file '$pid', exe '$exe'" \
		[ -n "$pid" -a "$exe" = "$1" ]
	cg=$(cat "/proc/${pid:-0}/cgroup" 2>/dev/null | tr '\n' ' ')
	ok "$2 serves: started by xen.service" "cgroup '$cg'" \
		sh -c "grep -q '/xen.service\$' /proc/${pid:-0}/cgroup"
	ok "$2 serves: it holds $SOCK" "socket inodes '$(sock_inodes | tr '\n' ' ')', none among pid ${pid:-?}'s descriptors" \
		owns_socket "${pid:-0}"
	ok "$2 serves: the socket answers xenstore-read" "/local/domain/0/name over $SOCK: '$(sockread /local/domain/0/name)'" \
		[ "$(sockread /local/domain/0/name)" = Domain-0 ]
}

case "$phase" in
1)
	boot_checks
	cp /etc/default/xen "$S/etc-default-xen.boot1"
	ok "/etc/default/xen names Debian's C xenstored" "active line '$(xsd_line)'" \
		[ "$(xsd_line)" = XENSTORED=/usr/sbin/xenstored ]
	serves "$CXSD" "C xenstored"
	pid1=$pid
	ok "rxenstored is not installed yet" "$(command -v rxenstored)" sh -c '! command -v rxenstored >/dev/null'

	cp "$R/$DEB" "/root/$DEB"
	(cd /root && timeout -k 5 300 apt install -y "./$DEB") >"$OUT/boot1-apt-install.txt" 2>&1
	rc=$?
	cat "$OUT/boot1-apt-install.txt"
	ok "apt install ./$DEB" "exit status $rc: $(oneline "$OUT/boot1-apt-install.txt")" [ "$rc" = 0 ]
	st=$(dpkg-query -W -f='${Status} ${Version}' rxenstored 2>&1)
	installed() { case "$st" in "install ok installed "*) return 0 ;; esac; return 1; }
	ok "dpkg knows the package installed" "'$st'" installed
	ok "the package put nothing under /etc" "$(dpkg -L rxenstored 2>&1 | grep '^/etc' | tr '\n' ' ')" \
		sh -c '! dpkg -L rxenstored | grep -q "^/etc"'
	ok "installing changed nothing: the same C xenstored serves" \
		"pid file '$(cat "$PIDFILE" 2>/dev/null)' (was $pid1), exe '$(readlink "/proc/$(cat "$PIDFILE" 2>/dev/null)/exe")'" \
		[ "$(cat "$PIDFILE" 2>/dev/null)" = "$pid1" -a "$(readlink "/proc/$pid1/exe")" = "$CXSD" ]
	ok "installing changed nothing: /etc/default/xen" "$(diff "$S/etc-default-xen.boot1" /etc/default/xen | tr '\n' ' ' | cut -c1-300)" \
		cmp -s "$S/etc-default-xen.boot1" /etc/default/xen
	ok "installing changed nothing: no rxenstored process" "$(pgrep -a rxenstored | tr '\n' ' ')" \
		sh -c '! pgrep -x rxenstored >/dev/null'
	rxenstored-switch status >"$OUT/boot1-switch-status.txt" 2>&1
	cat "$OUT/boot1-switch-status.txt"
	ok "rxenstored-switch status: C configured and running" "$(tr '\n' ' ' <"$OUT/boot1-switch-status.txt")" \
		sh -c "grep -q '^configured: XENSTORED=/usr/sbin/xenstored in /etc/default/xen' '$OUT/boot1-switch-status.txt' &&
		       grep -q '^running: pid $pid1 ($CXSD), from $PIDFILE' '$OUT/boot1-switch-status.txt'"

	rxenstored-switch on >"$OUT/boot1-switch-on.txt" 2>&1
	rc=$?
	cat "$OUT/boot1-switch-on.txt"
	ok "rxenstored-switch on" "exit status $rc: $(oneline "$OUT/boot1-switch-on.txt")" [ "$rc" = 0 ]
	d=$(diff "$S/etc-default-xen.boot1" /etc/default/xen | grep '^[<>]')
	ok "switch on changed only the XENSTORED= line" "diff: $(echo "$d" | tr '\n' ' ')" \
		[ "$d" = "$(printf '< XENSTORED=/usr/sbin/xenstored\n> XENSTORED=%s' "$RXSD")" ]
	ok "switch on left the running C xenstored alone" "pid file '$(cat "$PIDFILE" 2>/dev/null)' (was $pid1)" \
		[ "$(cat "$PIDFILE" 2>/dev/null)" = "$pid1" -a "$(readlink "/proc/$pid1/exe")" = "$CXSD" ]
	save_boot
	then_ reboot 2
	;;
2)
	boot_checks
	ok "/etc/default/xen names rxenstored" "active line '$(xsd_line)'" [ "$(xsd_line)" = "XENSTORED=$RXSD" ]
	serves "$RXSD" rxenstored
	pid2=$pid
	# The host's XENSTORED_ARGS (C xenstored's -T trace option) carry over.
	tr='/var/log/xen/xenstored-trace.log'
	a=$(tr '\0' ' ' <"/proc/${pid2:-0}/cmdline" 2>/dev/null)
	s0=$(stat -c %s "$tr" 2>/dev/null || echo 0)
	sockread /local/domain/0/name >/dev/null
	s1=$(stat -c %s "$tr" 2>/dev/null || echo 0)
	ok "rxenstored runs with the host's XENSTORED_ARGS and writes the trace" \
		"command line '$a', $tr $s0 -> $s1 bytes over one read" \
		sh -c "echo '$a' | grep -q -- ' -T $tr ' && [ $s1 -gt $s0 ]"
	journalctl -b --no-pager -o short-monotonic -t rxenstored >"$OUT/journal-boot2-rxenstored.txt" 2>&1
	cat "$OUT/journal-boot2-rxenstored.txt"
	ok "journal: rxenstored's start-up line from the serving process" \
		"journalctl -b _PID=$pid2 -t rxenstored: $(journalctl -b --no-pager _PID="${pid2:-0}" -t rxenstored 2>&1 | tail -n 3 | tr '\n' ' ' | cut -c1-300)" \
		sh -c "journalctl -b --no-pager -o cat _PID=${pid2:-0} -t rxenstored | grep -q ' serving on $SOCK (priv domid 0, store domid 0)\$'"
	case "$XENVER" in
	4.1[7-9] | 4.20) backend="getdomaininfolist" want="XEN_SYSCTL_getdomaininfolist through libxencall.so.1 (Xen $XENVER" ;;
	*) backend="poll" want="libxenmanage's changed-domain feed" ;;
	esac
	ok "journal: rxenstored's domain-state line for Xen $XENVER" "no line with '$want'" \
		grep -qF "domain state: $want" "$OUT/journal-boot2-rxenstored.txt"
	ok "journal: no rxenstored line at priority err or worse" \
		"$(journalctl -b --no-pager -p err -t rxenstored 2>&1 | tail -n 3 | tr '\n' ' ' | cut -c1-300)" \
		sh -c '[ -z "$(journalctl -b --no-pager -q -o cat -p err -t rxenstored)" ]'
	rxenstored --version >"$OUT/boot2-version.txt" 2>&1
	rc=$?
	cat "$OUT/boot2-version.txt"
	ok "rxenstored --version names the build" "exit status $rc: $(oneline "$OUT/boot2-version.txt")" \
		sh -c "[ $rc = 0 ] && grep -q '^rxenstored [0-9]' '$OUT/boot2-version.txt'"
	ok "rxenstored --version: event channels and grant tables" "$(grep -E 'libxen(evtchn|gnttab)' "$OUT/boot2-version.txt" | tr '\n' ' ')" \
		sh -c "grep -qF 'libxenevtchn.so.1 (event channels): loaded, device opened' '$OUT/boot2-version.txt' &&
		       grep -qF 'libxengnttab.so.1 (ring mapping): loaded, device opened' '$OUT/boot2-version.txt'"
	ok "rxenstored --version: libxencall's domain list for Xen $XENVER, backend $backend" \
		"$(grep -E 'libxencall|backend' "$OUT/boot2-version.txt" | tr '\n' ' ')" \
		sh -c "grep -qF 'libxencall.so.1 (domain list, Xen 4.17-4.22): loaded, Xen $XENVER, sysctl interface 0x' '$OUT/boot2-version.txt' &&
		       grep -qF 'domain-state backend (--domain-state auto): $backend' '$OUT/boot2-version.txt'"
	rxenstored-switch status >"$OUT/boot2-switch-status.txt" 2>&1
	cat "$OUT/boot2-switch-status.txt"
	ok "rxenstored-switch status: rxenstored configured and running" "$(tr '\n' ' ' <"$OUT/boot2-switch-status.txt")" \
		sh -c "grep -q '^configured: XENSTORED=$RXSD in /etc/default/xen' '$OUT/boot2-switch-status.txt' &&
		       grep -q '^running: pid $pid2 ($RXSD), from $PIDFILE' '$OUT/boot2-switch-status.txt'"

	# The guest scenario, with the daemon the boot started (DAEMON=booted).
	if [ -n "$pid2" ] && [ "$(readlink "/proc/$pid2/exe")" = "$RXSD" ]; then
		sh "$R/dom0.sh"
		n=0
		while IFS= read -r line; do
			case "$line" in
			PASS\ * | FAIL\ *) note "${line%% *} $P: guests: ${line#* }"; n=$((n + 1)) ;;
			esac
		done <"$OUT/results.txt"
		ok "guests: the guest scenario (dom0.sh) reported" "no results in out/results.txt" [ "$n" -gt 0 ]
	else
		fail "guests: the guest scenario (dom0.sh)" "not run: rxenstored does not serve"
	fi
	ok "rxenstored still serves after the guests (same pid)" \
		"pid file '$(cat "$PIDFILE" 2>/dev/null)' (was $pid2), exe '$(readlink "/proc/${pid2:-0}/exe")'" \
		[ -n "$pid2" -a "$(cat "$PIDFILE" 2>/dev/null)" = "$pid2" -a "$(readlink "/proc/${pid2:-0}/exe")" = "$RXSD" ]

	rxenstored-switch off >"$OUT/boot2-switch-off.txt" 2>&1
	rc=$?
	cat "$OUT/boot2-switch-off.txt"
	ok "rxenstored-switch off" "exit status $rc: $(oneline "$OUT/boot2-switch-off.txt")" [ "$rc" = 0 ]
	ok "switch off gives /etc/default/xen back byte for byte" \
		"$(diff "$S/etc-default-xen.boot1" /etc/default/xen | tr '\n' ' ' | cut -c1-300)" \
		cmp -s "$S/etc-default-xen.boot1" /etc/default/xen
	save_boot
	then_ reboot 3
	;;
3)
	boot_checks
	ok "/etc/default/xen is byte for byte boot 1's" \
		"$(diff "$S/etc-default-xen.boot1" /etc/default/xen | tr '\n' ' ' | cut -c1-300)" \
		cmp -s "$S/etc-default-xen.boot1" /etc/default/xen
	serves "$CXSD" "C xenstored"
	pid3=$pid
	ok "no rxenstored process" "$(pgrep -a rxenstored | tr '\n' ' ')" sh -c '! pgrep -x rxenstored >/dev/null'
	ok "journal: nothing from rxenstored in this boot" "$(journalctl -b --no-pager -q -t rxenstored | head -n 2 | tr '\n' ' ')" \
		sh -c '[ -z "$(journalctl -b --no-pager -q -t rxenstored)" ]'
	rxenstored-switch status >"$OUT/boot3-switch-status.txt" 2>&1
	cat "$OUT/boot3-switch-status.txt"
	ok "rxenstored-switch status: C configured and running" "$(tr '\n' ' ' <"$OUT/boot3-switch-status.txt")" \
		sh -c "grep -q '^configured: XENSTORED=/usr/sbin/xenstored in /etc/default/xen' '$OUT/boot3-switch-status.txt' &&
		       grep -q '^running: pid $pid3 ($CXSD), from $PIDFILE' '$OUT/boot3-switch-status.txt'"
	timeout -k 5 60 xl list >"$OUT/boot3-xl-list.txt" 2>&1
	ok "xl list through C xenstored" "$(oneline "$OUT/boot3-xl-list.txt")" grep -q '^Domain-0 *0 ' "$OUT/boot3-xl-list.txt"
	# Removing the package while switched on must not leave the host
	# naming a missing xenstored: the package's prerm switches back.
	rxenstored-switch on >"$OUT/boot3-switch-on.txt" 2>&1
	l_on=$(xsd_line)
	(timeout -k 5 300 apt purge -y rxenstored) >"$OUT/boot3-apt-purge.txt" 2>&1
	rc=$?
	cat "$OUT/boot3-switch-on.txt" "$OUT/boot3-apt-purge.txt"
	ok "switch on, then apt purge: /etc/default/xen back byte for byte" \
		"after switch on: '$l_on'; purge exit status $rc; $(diff "$S/etc-default-xen.boot1" /etc/default/xen | tr '\n' ' ' | cut -c1-200)" \
		sh -c "[ '$l_on' = XENSTORED=$RXSD ] && [ $rc = 0 ] && cmp -s '$S/etc-default-xen.boot1' /etc/default/xen"
	ok "apt purge: the package and the switch's state are gone" \
		"$(dpkg-query -W -f='${Status}' rxenstored 2>&1); $(ls -d /var/lib/rxenstored $RXSD 2>&1 | tr '\n' ' ')" \
		sh -c "! dpkg-query -W -f='\${Status}' rxenstored 2>/dev/null | grep -q installed && [ ! -e /var/lib/rxenstored ] && [ ! -e $RXSD ]"
	save_boot
	then_ poweroff 4
	;;
*)
	fail "a known phase" "phase '$phase'"
	then_ poweroff
	;;
esac
note "---- $P: done at uptime $(cut -d' ' -f1 /proc/uptime) s"
printf "\nREALXEN-PHASE-DONE %s\n" "$phase" >/dev/console
exit 0
