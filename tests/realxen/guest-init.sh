#!/bin/sh
# /init of the PV guests' busybox initramfs (run.sh packs it with the tree
# build-image.sh made). The guest reports to dom0 through its own Xenstore
# ring (/dev/xen/xenbus): every result is a node under its data/ directory,
# written with a path relative to /local/domain/<domid>, and the same lines go
# to the console (hvc0), which xenconsoled logs in dom0.
PATH=/usr/bin:/bin:/usr/sbin:/sbin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Once (CI, bookworm) the shell found no `mount` for the first line and
# /proc stayed unmounted, so the guest never saw its command line: say so,
# and mount through busybox itself.
if [ ! -e /proc/cmdline ]; then
	echo "REALXEN-GUEST /proc not mounted at first: $(ls -l /bin/mount 2>&1)"
	/bin/busybox mount -t proc proc /proc
	[ -e /sys/kernel ] || /bin/busybox mount -t sysfs sysfs /sys
	[ -e /dev/null ] || /bin/busybox mount -t devtmpfs devtmpfs /dev
fi
# No socket here: libxenstore falls back to the ring device; name it anyway.
export XENSTORED_PATH=/dev/xen/xenbus

say() { echo "REALXEN-GUEST $*"; }

# The kernel's orderly poweroff (on control/shutdown = poweroff) runs
# /sbin/poweroff; make that power the domain off at once.
mkdir -p /sbin
printf '#!/bin/sh\necho "REALXEN-GUEST poweroff requested"\nexec /bin/busybox poweroff -f\n' >/sbin/poweroff
chmod +x /sbin/poweroff
cp /sbin/poweroff /sbin/reboot

i=0
while [ ! -e /dev/xen/xenbus ] && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done

name=$(xenstore-read name 2>&1) || name="?($name)"
domid=$(xenstore-read domid 2>&1) || domid="?($domid)"
say "hello $name domid $domid"

# read: the relative path 'name' gave our name (dom0 compares it).
xenstore-write data/name-read "$name" && say "wrote data/name-read" || say "write data/name-read failed"
# write with a relative path.
xenstore-write data/rel hello && say "wrote data/rel" || say "write data/rel failed"
# several writes in one transaction (xenstore-write with two pairs uses one).
xenstore-write data/txn-a 1 data/txn-b 2 && say "wrote data/txn-a data/txn-b in a transaction" ||
	say "transaction write failed"

# watch: the first event is the one the watch fires when set, the second is
# dom0 writing data/ping; then report.
( timeout 120 xenstore-watch -n 2 data/ping >/tmp/watch.out 2>&1
  n=$(grep -c '^data/ping$' /tmp/watch.out)
  say "watch on data/ping saw $n events: $(tr '\n' ' ' </tmp/watch.out)"
  [ "$n" -ge 2 ] && xenstore-write data/watch ok ) &
wpid=$!
# Wait for the watch's first event, so that it is set before dom0 pings.
i=0
while [ ! -s /tmp/watch.out ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
xenstore-write data/status ready && say "ready" || say "write data/status failed"

# The project's Rust client (xs-client-check, from crates/xenstore-client)
# over this guest's ring, when dom0 asked for it on the kernel command line
# (realxen_client=1). Its PASS/FAIL lines go to the console and, one node
# each, to data/client-out/<n>, written in one transaction with its exit
# status, data/client-rc, which dom0 waits for. It starts once the watch
# above has reported, so that the two do not overlap.
if grep -q 'realxen_client=1' /proc/cmdline; then
	wait "$wpid"
	say "client: starting xs-client-check"
	timeout 300 /usr/bin/xs-client-check --xenbus data/client >/tmp/client.out 2>&1
	rc=$?
	sed 's/^/REALXEN-GUEST client: /' /tmp/client.out
	grep -E '^(PASS|FAIL) ' /tmp/client.out >/tmp/client.lines
	set --
	n=0
	while IFS= read -r line; do
		set -- "$@" "data/client-out/$n" "$line"
		n=$((n + 1))
	done </tmp/client.lines
	xenstore-write "$@" data/client-rc "$rc" && say "client: reported $n lines, exit status $rc" ||
		say "client: writing the report failed"
fi

# Live update (dom0.sh, rxenstored runs): a watch on data/lu-ping, set now
# and kept across the daemon's live update; its first event (the watch being
# set) writes data/lu-ready, each ping after it is answered with
# data/lu-pong holding the ping's value.
( xenstore-watch data/lu-ping 2>/dev/null | while read -r _; do
	if v=$(xenstore-read data/lu-ping 2>/dev/null); then
		xenstore-write data/lu-pong "$v" && say "live update: answered $v"
	else
		xenstore-write data/lu-ready 1
	fi
done ) &

# Stay up until dom0 shuts us down or destroys us.
while :; do sleep 3600; done
