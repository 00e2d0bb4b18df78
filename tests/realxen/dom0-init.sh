#!/bin/sh
# PID 1 of the test dom0 (installed as /sbin/realxen-init by build-image.sh,
# booted with init=/sbin/realxen-init). Kept minimal on purpose: the scenario
# itself lives on the second disk (/dev/vdb, made by run.sh), so changing it
# needs no image rebuild. Whatever happens, the machine ends with the marker
# line REALXEN-END on the console, which run.sh waits for.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -o remount,rw /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock
hostname realxen-dom0

mkdir -p /mnt/realxen
if mount -t ext4 /dev/vdb /mnt/realxen && [ -r /mnt/realxen/dom0.sh ]; then
	/bin/sh /mnt/realxen/dom0.sh
	echo "realxen-init: scenario exited with status $?"
else
	echo "realxen-init: cannot mount the scenario disk /dev/vdb"
fi
sync
umount /mnt/realxen 2>/dev/null
sync
echo "REALXEN-END"
# Power off; run.sh kills QEMU anyway once it sees the marker.
echo o >/proc/sysrq-trigger
sleep 30
