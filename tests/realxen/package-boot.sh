#!/bin/sh
# ExecStart of realxen-package.service in the package scenario's dom0
# (installed as /usr/local/sbin/realxen-package-boot by
# build-image-systemd.sh). Mounts the scenario disk (/dev/vdb, made by
# run-package.sh), runs its dom0-package.sh (one phase per boot; the phase
# is kept on the root disk), then, as the phase asked in
# /var/lib/realxen-package/next, reboots (console marker REALXEN-REBOOT) or
# powers off (REALXEN-END, which run-package.sh waits for). The scenario
# disk is unmounted first, so everything written to it is on the disk.
# The markers go straight to /dev/console, on a line of their own (a login
# prompt may be waiting there): the unit's own output reaches the
# console through the journal, prefixed with a time and the unit's name.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
S=/var/lib/realxen-package
mkdir -p /mnt/realxen "$S"
rm -f "$S/next"
if mount -t ext4 /dev/vdb /mnt/realxen && [ -r /mnt/realxen/dom0-package.sh ]; then
	sh /mnt/realxen/dom0-package.sh
	echo "realxen-package-boot: phase script exited with status $?"
else
	echo "realxen-package-boot: cannot mount the scenario disk /dev/vdb"
fi
next=$(cat "$S/next" 2>/dev/null)
sync
umount /mnt/realxen 2>/dev/null
sync
if [ "$next" = reboot ]; then
	printf "\nREALXEN-REBOOT\n" >/dev/console
	systemctl reboot
else
	printf "\nREALXEN-END\n" >/dev/console
	systemctl poweroff
fi
