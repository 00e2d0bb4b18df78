#!/usr/bin/env bash
# Build (or reuse) everything a real-Xen run needs, from Debian's packages only:
#
#   $CACHE/qemu/          qemu-system-x86_64 and its firmware, unpacked from .debs
#   $CACHE/rootfs/        the dom0 tree (debootstrap minbase + Xen + kernel)
#   $CACHE/xen.elf        the hypervisor, gunzipped for QEMU's multiboot loader
#   $CACHE/vmlinuz        the Debian kernel (dom0 and the PV guests)
#   $CACHE/initrd.img     dom0's initramfs (initramfs-tools, built in the chroot)
#   $CACHE/guest-root/    the guests' initramfs tree, less its /init
#   $CACHE/root.img       dom0's ext4 disk, made with mkfs.ext4 -d (no loop devices)
#   $CACHE/image.env      facts about the image that run.sh reads
#
# Usage: build-image.sh <bookworm|trixie>
# Cache: $REALXEN_CACHE, default <repo>/target/realxen/<suite>.
# Each stage leaves a stamp file, so a re-run only redoes what is missing;
# delete the cache directory to start over.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
suite=${1:?usage: build-image.sh <bookworm|trixie>}
case "$suite" in
bookworm) xenver=4.17 ;;
trixie) xenver=4.20 ;;
*) echo "build-image.sh: unknown suite '$suite' (bookworm or trixie)" >&2; exit 2 ;;
esac
cache=${REALXEN_CACHE:-$repo/target/realxen/$suite}
mirror=${REALXEN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$cache"
cd "$cache"

log() { echo "build-image[$suite]: $*" >&2; }

# Host tools: debootstrap to build the tree, e2fsprogs for mkfs.ext4 -d and
# debugfs, cpio for the guests' initramfs. Installed only when missing.
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v cpio >/dev/null || need+=(cpio)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
	log "installing host tools: ${need[*]}"
	apt-get install -y --no-install-recommends "${need[@]}" >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
# debootstrap knows trixie only from its newer versions; bookworm's script works
# for it (same layout), so fall back to that.
if [ ! -e "/usr/share/debootstrap/scripts/$suite" ]; then
	ln -s bookworm "/usr/share/debootstrap/scripts/$suite"
fi

# --- Stage 1: QEMU, from the host's own Debian release, unpacked (not installed:
# installing qemu-system-x86 may conflict with the host's other qemu packages).
if [ ! -e qemu/.done ]; then
	log "fetching qemu-system-x86 .debs"
	rm -rf qemu && mkdir -p qemu/debs qemu/root
	(
		cd qemu/debs
		want="qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu"
		apt-get -o APT::Sandbox::User=root download $want >/dev/null 2>&1 ||
			{ apt-get update >/dev/null && apt-get -o APT::Sandbox::User=root download $want >/dev/null 2>&1; }
		# Follow Depends to the packages the host lacks, a few levels deep.
		seen=" $want "
		todo="$want"
		for _round in 1 2 3 4; do
			next=""
			for dep in $(apt-cache depends $todo 2>/dev/null | awk '/^ *(\|)?Depends:/ {print $2}' | grep -v '^<' | sort -u); do
				case "$seen" in *" $dep "*) continue ;; esac
				seen="$seen$dep "
				if ! dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'ok installed'; then
					next="$next $dep"
				fi
			done
			[ -n "$next" ] || break
			apt-get -o APT::Sandbox::User=root download $next >/dev/null 2>&1
			todo=$next
		done
	)
	for deb in qemu/debs/*.deb; do dpkg-deb -x "$deb" qemu/root; done
	qbin=qemu/root/usr/bin/qemu-system-x86_64
	# run.sh uses the same LD_LIBRARY_PATH.
	qlibs="$cache/qemu/root/usr/lib/x86_64-linux-gnu:$cache/qemu/root/lib/x86_64-linux-gnu"
	if ! LD_LIBRARY_PATH=$qlibs "$qbin" --version >/dev/null; then
		log "qemu-system-x86_64 does not run; missing libraries:"
		LD_LIBRARY_PATH=$qlibs ldd "$qbin" | grep 'not found' >&2 || true
		exit 1
	fi
	touch qemu/.done
fi

# --- Stage 2: the dom0 tree. minbase keeps it small: no init system (PID 1 is
# our own script), no networking; Xen's hypervisor and tools, the kernel and
# initramfs-tools, busybox for the guests' initramfs.
pkgs="linux-image-amd64,initramfs-tools,xen-hypervisor-$xenver-amd64,xen-utils-$xenver,xenstore-utils,busybox-static,kmod,procps,e2fsprogs"
if [ ! -e rootfs/.done ]; then
	log "debootstrap $suite (a few minutes)"
	rm -rf rootfs
	debootstrap --variant=minbase --arch=amd64 --include="$pkgs" "$suite" rootfs "$mirror" >debootstrap.log 2>&1 ||
		{ tail -20 debootstrap.log >&2; exit 1; }
	touch rootfs/.done
fi

# --- Stage 3: configure the tree for a headless run with our own PID 1.
if [ ! -e rootfs/.configured ]; then
	log "configuring the dom0 tree"
	# PID 1: mount the basics and the scenario disk, run its dom0.sh, power off.
	install -m 0755 "$here/dom0-init.sh" rootfs/sbin/realxen-init
	echo "realxen-dom0" >rootfs/etc/hostname
	printf '/dev/vda / ext4 defaults 0 1\n' >rootfs/etc/fstab
	passwd -R "$cache/rootfs" -d root >/dev/null 2>&1 || true
	# Guests are started with xl create and the console logged by xenconsoled.
	mkdir -p rootfs/var/log/xen/console rootfs/mnt/realxen
	touch rootfs/.configured
fi

# --- Stage 4: kernel, dom0 initramfs, hypervisor.
kver=$(basename "$(ls -d rootfs/lib/modules/* | sort -V | tail -1)")
if [ ! -e boot.done ] || [ ! -e vmlinuz ] || [ ! -e xen.elf ] || [ ! -e initrd.img ]; then
	log "kernel $kver, Xen $xenver"
	cp "rootfs/boot/vmlinuz-$kver" vmlinuz
	# initramfs-tools' default MODULES=most already has virtio_blk and ext4;
	# make sure the image exists (debootstrap builds it in the chroot).
	if [ ! -e "rootfs/boot/initrd.img-$kver" ]; then
		chroot rootfs update-initramfs -c -k "$kver" >/dev/null
	fi
	cp "rootfs/boot/initrd.img-$kver" initrd.img
	xengz=$(ls rootfs/boot/xen-$xenver-amd64.gz 2>/dev/null || ls rootfs/boot/xen-*-amd64.gz | sort -V | tail -1)
	gunzip -c "$xengz" >xen.elf
	touch boot.done
fi

# --- Stage 5: the guests' initramfs tree: busybox, Xen's xenstore clients and
# their libraries (libgcc_s too: libxenstore starts a thread for watches and
# glibc loads libgcc_s for thread cancellation). run.sh adds /init.
if [ ! -e guest-root/.done ]; then
	log "guest initramfs tree"
	rm -rf guest-root
	mkdir -p guest-root/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,etc}
	cp rootfs/bin/busybox guest-root/bin/busybox
	for app in $(chroot rootfs /bin/busybox --list); do
		[ -e "guest-root/bin/$app" ] || ln -s busybox "guest-root/bin/$app"
	done
	clients="xenstore xenstore-read xenstore-write xenstore-ls xenstore-list xenstore-rm xenstore-watch xenstore-exists xenstore-chmod"
	libs=""
	for c in $clients; do
		p=$(chroot rootfs sh -c "command -v $c" || true)
		[ -n "$p" ] || continue
		# Copy the file itself (Debian ships some as symlinks to xenstore).
		cp -L "rootfs$p" "guest-root/usr/bin/$c"
		libs="$libs $(chroot rootfs ldd "$p" | awk '/=>/ {print $3} /ld-linux/ {print $1}')"
	done
	gcc_s=$(cd rootfs && ls usr/lib/x86_64-linux-gnu/libgcc_s.so.1 lib/x86_64-linux-gnu/libgcc_s.so.1 2>/dev/null | head -1)
	for l in $(echo $libs "/$gcc_s" | tr ' ' '\n' | sort -u); do
		mkdir -p "guest-root$(dirname "$l")"
		cp -L "rootfs$l" "guest-root$l"
	done
	# /lib64/ld-linux-x86-64.so.2 must resolve even on a merged-/usr tree.
	if [ ! -e guest-root/lib64/ld-linux-x86-64.so.2 ]; then
		ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 guest-root/lib64/ld-linux-x86-64.so.2
		[ -e guest-root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 ] ||
			{ mkdir -p guest-root/lib/x86_64-linux-gnu; cp -L rootfs/lib64/ld-linux-x86-64.so.2 guest-root/lib/x86_64-linux-gnu/; }
	fi
	touch guest-root/.done
fi

# --- Stage 6: dom0's disk. Built from the tree without mounting anything.
if [ ! -e root.img ] || [ rootfs/.configured -nt root.img ]; then
	log "making root.img"
	size_mb=$(( $(du -sm rootfs | cut -f1) + 768 ))
	rm -f root.img.tmp
	mkfs.ext4 -q -F -L realxen-root -d rootfs root.img.tmp "${size_mb}M"
	mv root.img.tmp root.img
fi

cat >image.env <<EOF
SUITE=$suite
XEN_VERSION=$xenver
KERNEL_VERSION=$kver
EOF
touch .complete
log "image ready in $cache"
