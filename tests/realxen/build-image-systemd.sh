#!/usr/bin/env bash
# The image of the package scenario (run-package.sh): the dom0 of
# build-image.sh's cached image with systemd as PID 1, Xen's daemons started
# by Debian's own packaging (xen.service: the unit Debian ships on trixie, the
# one systemd's sysv generator makes from /etc/init.d/xen on bookworm), and the
# harness's oneshot unit that runs the scenario's phases across reboots.
#
#   $CACHE/rootfs/        a copy of the base image's tree, plus systemd-sysv
#   $CACHE/xen.elf, vmlinuz, initrd.img   from that tree's /boot
#   $CACHE/root.img       dom0's ext4 disk (mkfs.ext4 -d, no loop devices)
#   $CACHE/image.env      as build-image.sh's
#
# QEMU and the guests' initramfs tree are the base image's (run-package.sh
# takes them from there).
#
# Usage: build-image-systemd.sh <bookworm|trixie>
# Cache: $REALXEN_SYSTEMD_CACHE, default <repo>/target/realxen/<suite>-systemd;
# the base image: $REALXEN_CACHE, default <repo>/target/realxen/<suite>, built
# by build-image.sh when it is incomplete. Each stage leaves a stamp; delete
# the directory to start over.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
suite=${1:?usage: build-image-systemd.sh <bookworm|trixie>}
case "$suite" in
bookworm | trixie) ;;
*) echo "build-image-systemd.sh: unknown suite '$suite' (bookworm or trixie)" >&2; exit 2 ;;
esac
base=${REALXEN_CACHE:-$repo/target/realxen/$suite}
cache=${REALXEN_SYSTEMD_CACHE:-$repo/target/realxen/$suite-systemd}

log() { echo "build-image-systemd[$suite]: $*" >&2; }

if [ ! -e "$base/.complete" ]; then
	log "building the base image first ($base)"
	REALXEN_CACHE=$base "$here/build-image.sh" "$suite"
fi
mkdir -p "$cache"
cd "$cache"

# --- Stage 1: a copy of the base tree.
if [ ! -e rootfs/.copied ]; then
	log "copying the base dom0 tree"
	rm -rf rootfs rootfs.tmp
	cp -a "$base/rootfs" rootfs.tmp
	rm -f rootfs.tmp/.configured
	mv rootfs.tmp rootfs
	touch rootfs/.copied
fi

# --- Stage 2: systemd as PID 1, from Debian's mirror (the tree's own
# sources.list), without recommends (no dbus: systemctl talks to PID 1 over
# its private socket as root). Nothing is started in the chroot.
if [ ! -e rootfs/.systemd ]; then
	log "installing systemd-sysv in the tree"
	cp -L /etc/resolv.conf rootfs/etc/resolv.conf.realxen 2>/dev/null || true
	mv rootfs/etc/resolv.conf rootfs/etc/resolv.conf.orig 2>/dev/null || true
	mv rootfs/etc/resolv.conf.realxen rootfs/etc/resolv.conf 2>/dev/null || true
	printf '#!/bin/sh\nexit 101\n' >rootfs/usr/sbin/policy-rc.d
	chmod 0755 rootfs/usr/sbin/policy-rc.d
	mount -t proc proc rootfs/proc
	rc=0
	{
		chroot rootfs apt-get update &&
			DEBIAN_FRONTEND=noninteractive chroot rootfs apt-get install -y --no-install-recommends systemd-sysv &&
			chroot rootfs apt-get clean
	} >apt.log 2>&1 || rc=$?
	umount rootfs/proc
	rm -f rootfs/usr/sbin/policy-rc.d rootfs/etc/resolv.conf
	mv rootfs/etc/resolv.conf.orig rootfs/etc/resolv.conf 2>/dev/null || true
	if [ "$rc" != 0 ]; then
		tail -20 apt.log >&2
		exit 1
	fi
	[ -x rootfs/lib/systemd/systemd ] || [ -x rootfs/usr/lib/systemd/systemd ] ||
		{ log "no systemd in the tree after the install"; exit 1; }
	touch rootfs/.systemd
fi

# --- Stage 3: configuration (again when this script or package-boot.sh
# changed).
if [ ! -e rootfs/.configured ] || [ "$here/package-boot.sh" -nt rootfs/.configured ] ||
	[ "$here/build-image-systemd.sh" -nt rootfs/.configured ]; then
	log "configuring the tree"
	# Debian's /etc/default/xen, with Debian's C xenstored named explicitly
	# (the line rxenstored-switch replaces and puts back), a trace file in
	# XENSTORED_ARGS (C xenstored's option, which rxenstored then gets too:
	# the host's arguments carry over) and xenconsoled logging the guests'
	# consoles (dom0.sh's console steps read them). No log file: rxenstored
	# then logs to syslog, i.e. the journal.
	cp "$base/rootfs/etc/default/xen" rootfs/etc/default/xen
	sed -i 's|^XENSTORED_ARGS=$|XENSTORED_ARGS="-T /var/log/xen/xenstored-trace.log"|' rootfs/etc/default/xen
	grep -q '^XENSTORED_ARGS="-T ' rootfs/etc/default/xen || { log "no XENSTORED_ARGS= line in Debian's /etc/default/xen"; exit 1; }
	cat >>rootfs/etc/default/xen <<'EOF'

# realxen (tests/realxen/build-image-systemd.sh): Debian's C xenstored.
XENSTORED=/usr/sbin/xenstored
XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"
EOF
	# The harness: a oneshot unit after Xen's daemons; its script mounts the
	# scenario disk and runs the phase script from it, then reboots or powers
	# off as the phase asks.
	install -m 0755 "$here/package-boot.sh" rootfs/usr/local/sbin/realxen-package-boot
	cat >rootfs/etc/systemd/system/realxen-package.service <<'EOF'
[Unit]
Description=realxen package scenario (tests/realxen/run-package.sh)
After=xen.service xendomains.service systemd-journald.service
ConditionPathExists=/dev/vdb

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/realxen-package-boot
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
	mkdir -p rootfs/etc/systemd/system/multi-user.target.wants
	ln -sf /etc/systemd/system/realxen-package.service \
		rootfs/etc/systemd/system/multi-user.target.wants/realxen-package.service
	# Timers that would take dpkg's lock (apt-daily) or load the machine
	# while the scenario runs: masked.
	for t in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
		ln -sf /dev/null "rootfs/etc/systemd/system/$t"
	done
	# A unit that hangs on the way down costs 30 s, not 90.
	mkdir -p rootfs/etc/systemd/system.conf.d
	printf '[Manager]\nDefaultTimeoutStopSec=30s\n' >rootfs/etc/systemd/system.conf.d/realxen.conf
	mkdir -p rootfs/var/log/xen/console rootfs/mnt/realxen
	touch rootfs/.configured
fi

# --- Stage 4: kernel, dom0 initramfs, hypervisor, from this tree.
xenver=$(. "$base/image.env" && echo "$XEN_VERSION")
kver=$(basename "$(ls -d rootfs/lib/modules/* | sort -V | tail -1)")
if [ ! -e boot.done ] || [ rootfs/.systemd -nt boot.done ]; then
	log "kernel $kver, Xen $xenver"
	cp "rootfs/boot/vmlinuz-$kver" vmlinuz
	cp "rootfs/boot/initrd.img-$kver" initrd.img
	xengz=$(ls "rootfs/boot/xen-$xenver-amd64.gz" 2>/dev/null || ls rootfs/boot/xen-*-amd64.gz | sort -V | tail -1)
	gunzip -c "$xengz" >xen.elf
	touch boot.done
fi

# --- Stage 5: dom0's disk.
if [ ! -e root.img ] || [ rootfs/.configured -nt root.img ]; then
	log "making root.img"
	size_mb=$(($(du -sm rootfs | cut -f1) + 768))
	rm -f root.img.tmp
	mkfs.ext4 -q -F -L realxen-root -d rootfs root.img.tmp "${size_mb}M"
	mv root.img.tmp root.img
fi

cat >image.env <<EOF
SUITE=$suite
XEN_VERSION=$xenver
KERNEL_VERSION=$kver
SYSTEMD_VERSION=$(chroot rootfs dpkg-query -W -f='${Version}' systemd)
EOF
touch .complete
log "image ready in $cache"
