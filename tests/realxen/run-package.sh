#!/usr/bin/env bash
# Real-Xen test of the Debian package (issue 11's acceptance test): a dom0
# booted with systemd as PID 1 and Debian's own start-up of Xen's daemons
# (xen.service), /etc/default/xen naming Debian's C xenstored. Across three
# boots of one QEMU machine (dom0-package.sh, one phase per boot):
#   1. C xenstored serves; `apt install ./<deb>` changes nothing;
#      `rxenstored-switch on`; reboot
#   2. rxenstored serves (pid file, executable, socket, journal, --version);
#      the guest scenario (dom0.sh: socket and ring clients, xl, three PV
#      guests, @releaseDomain); `rxenstored-switch off`; reboot
#   3. C xenstored serves again, /etc/default/xen byte for byte as in boot 1;
#      power off
#
# Usage: run-package.sh <bookworm|trixie> <PATH-TO-rxenstored_*.deb>
#   (tests/package/check.sh builds the package and prints its path last)
#
# Environment:
#   REALXEN_CACHE          the base image (run.sh's; default
#                          <repo>/target/realxen/<suite>): QEMU, guests' tree
#   REALXEN_SYSTEMD_CACHE  this scenario's image (default
#                          <repo>/target/realxen/<suite>-systemd);
#                          build-image-systemd.sh fills it when incomplete
#   REALXEN_RESULTS        results (default <repo>/target/realxen/results/<suite>-package)
#   REALXEN_TIMEOUT        seconds before QEMU is killed (default 2400: three boots)
#   REALXEN_ACCEL, REALXEN_XEN_ARGS, REALXEN_DOM0_ARGS, REALXEN_CLIENT,
#   REALXEN_CLIENT_TARGET  as for run.sh
#
# Prints "PASS <step>" / "FAIL <step>: <why>" per step and ends with
# "N passed, M failed"; exits 0 only when nothing failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage="usage: run-package.sh <bookworm|trixie> <path-to-rxenstored_*.deb>"
suite=${1:?$usage}
deb=${2:?$usage}
case "$suite" in
bookworm | trixie) ;;
*) echo "run-package.sh: unknown suite '$suite' (bookworm or trixie)" >&2; exit 2 ;;
esac
[ -f "$deb" ] || { echo "run-package.sh: '$deb' is not a file" >&2; exit 2; }
dpkg-deb -f "$deb" Package 2>/dev/null | grep -qx rxenstored ||
	{ echo "run-package.sh: '$deb' is not the rxenstored package" >&2; exit 2; }
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
export REALXEN_CACHE=${REALXEN_CACHE:-$repo/target/realxen/$suite}
export REALXEN_SYSTEMD_CACHE=${REALXEN_SYSTEMD_CACHE:-$repo/target/realxen/$suite-systemd}
base=$REALXEN_CACHE
cache=$REALXEN_SYSTEMD_CACHE
results=${REALXEN_RESULTS:-$repo/target/realxen/results/$suite-package}
timeout_s=${REALXEN_TIMEOUT:-2400}

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
finish() {
	echo "logs: $results"
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
	exit $?
}

# --- the image (built once, then reused)
t0=$(date +%s)
if [ ! -e "$cache/.complete" ] || [ "$here/package-boot.sh" -nt "$cache/.complete" ] ||
	[ "$here/build-image-systemd.sh" -nt "$cache/.complete" ]; then
	echo "realxen: building the $suite systemd image in $cache" >&2
	if ! "$here/build-image-systemd.sh" "$suite" >&2; then
		fail "image: build $suite with systemd" "build-image-systemd.sh failed"
		finish
	fi
	echo "realxen: image built in $(($(date +%s) - t0)) s" >&2
fi
pass "image: $suite dom0 with systemd $(. "$cache/image.env" && echo "$SYSTEMD_VERSION") and Xen $(. "$cache/image.env" && echo "$XEN_VERSION")"

# --- the scenario disk: the phases, the guest scenario, the package
rm -rf "$results"
mkdir -p "$results"
stage=$(mktemp -d "${TMPDIR:-/tmp}/realxen-pkg-stage.XXXXXX")
work=$(mktemp -d "${TMPDIR:-/tmp}/realxen-pkg-work.XXXXXX")
qpid=
cleanup() {
	[ -z "$qpid" ] || kill "$qpid" 2>/dev/null || true
	rm -rf "$stage" "$work"
}
trap cleanup EXIT

# dom0.sh's client steps (and guest g1's) run the project's Rust client,
# xs-client-check, from the scenario disk and the guests' initramfs: built
# static as run.sh builds it (REALXEN_CLIENT names one built already; after
# run.sh in all.sh the build is already there and takes seconds).
client=${REALXEN_CLIENT:-}
if [ -z "$client" ]; then
	ctarget=${REALXEN_CLIENT_TARGET:-$repo/target/static}
	client=$ctarget/x86_64-unknown-linux-gnu/release/examples/xs-client-check
	(cd "$repo" && env -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$ctarget" \
		RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=debuginfo \
		cargo build --release --target x86_64-unknown-linux-gnu -p xenstore-client --example xs-client-check) \
		>"$results/client-build.log" 2>&1 || rm -f "$client"
fi
if [ -x "$client" ] && ldd "$client" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
	pass "client: xs-client-check built static"
	cp "$client" "$stage/xs-client-check"
else
	fail "client: xs-client-check built static" \
		"'$client': $(tail -n 3 "$results/client-build.log" 2>/dev/null | tr '\n' ' ' | cut -c1-200)"
fi
cp "$here/dom0-package.sh" "$here/dom0.sh" "$stage/"
cp "$deb" "$stage/"
echo "DEB=$(basename "$deb")" >"$stage/package.conf"
printf 'DAEMON=booted\nBOOTED_XSD=/usr/sbin/rxenstored\n' >"$stage/config"
cp -a "$base/guest-root" "$work/guest"
rm -f "$work/guest/.done"
install -m 0755 "$here/guest-init.sh" "$work/guest/init"
[ ! -e "$stage/xs-client-check" ] || install -m 0755 "$stage/xs-client-check" "$work/guest/usr/bin/xs-client-check"
(cd "$work/guest" && find . | cpio -o -H newc --quiet | gzip -1 >"$stage/guest.cpio.gz")
mkdir -p "$stage/out"
size_mb=$(($(du -sm "$stage" | cut -f1) + 256))
mkfs.ext4 -q -F -L realxen-scn -d "$stage" "$work/scenario.img" "${size_mb}M" >/dev/null 2>&1

# --- boot: as run.sh, but dom0's PID 1 is systemd (no init=) and QEMU is
# not started with -no-reboot: dom0's reboot resets the machine, which boots
# Xen and dom0 again. The root disk is a snapshot that lives as long as QEMU
# does, so what a boot writes there (the phase) the next boot reads.
case "$suite" in
trixie) dom0_vcpus=1 ;;
*) dom0_vcpus=2 ;;
esac
q=$base/qemu/root
export LD_LIBRARY_PATH="$q/usr/lib/x86_64-linux-gnu:$q/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
serial=$results/serial.log
: >"$serial"
"$q/usr/bin/qemu-system-x86_64" \
	-L "$q/usr/share/qemu" -L "$q/usr/share/seabios" \
	-accel "${REALXEN_ACCEL:-tcg}" -cpu max,-smap -m 3072 -smp 2 \
	-display none -vga none -net none -monitor none \
	-serial "file:$serial" \
	-kernel "$cache/xen.elf" \
	-append "console=com1 com1=115200 dom0_mem=1024M,max:1024M dom0_max_vcpus=$dom0_vcpus loglvl=all guest_loglvl=all ${REALXEN_XEN_ARGS:-}" \
	-initrd "$cache/vmlinuz root=/dev/vda ro console=hvc0 clocksource=xen ${REALXEN_DOM0_ARGS:-},$cache/initrd.img" \
	-drive "file=$cache/root.img,if=virtio,format=raw,snapshot=on" \
	-drive "file=$work/scenario.img,if=virtio,format=raw" \
	>"$results/qemu.log" 2>&1 &
qpid=$!
t1=$(date +%s)
# Wait for the end marker (then for QEMU to stop by itself, briefly), QEMU's
# exit or the overall timeout. Each boot's start goes to the timeline.
end=
seen=0
: >"$results/host-timeline.txt"
while kill -0 "$qpid" 2>/dev/null; do
	n=$(grep -a -c -E '^REALXEN-[A-Z]' "$serial" || true)
	if [ "$n" -gt "$seen" ]; then
		grep -a -E '^REALXEN-[A-Z]' "$serial" | sed -n "$((seen + 1)),${n}p" | tr -d '\r' |
			sed "s/^/$(($(date +%s) - t1)) s: /" | tee -a "$results/host-timeline.txt" >&2
		seen=$n
	fi
	if grep -a -q '^REALXEN-END' "$serial"; then
		end=marker
		for _ in $(seq 45); do kill -0 "$qpid" 2>/dev/null || break; sleep 2; done
		break
	fi
	if [ $(($(date +%s) - t1)) -ge "$timeout_s" ]; then end=timeout; break; fi
	sleep 2
done
kill "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
qpid=
grep -a -q '^REALXEN-END' "$serial" && end=marker
end=${end:-QEMU exited}
echo "$(($(date +%s) - t1)) s: QEMU stopped ($end)" >>"$results/host-timeline.txt"
echo "realxen: QEMU ran $(($(date +%s) - t1)) s ($suite, package)" >&2

# --- results: read back from the scenario disk without mounting it
debugfs -R "rdump /out $results" "$work/scenario.img" >/dev/null 2>&1 || true
if [ -d "$results/out" ]; then
	cp -a "$results/out/." "$results/" && rm -rf "$results/out"
fi
for p in 1 2 3; do
	if grep -a -q "^REALXEN-PHASE-DONE $p" "$serial"; then
		pass "boot $p: realxen-package.service ran its phase to the end"
	elif grep -a -q "^REALXEN-PHASE $p " "$serial"; then
		fail "boot $p: realxen-package.service ran its phase to the end" "it started (REALXEN-PHASE $p) but did not finish"
	else
		fail "boot $p: realxen-package.service ran its phase to the end" "no 'REALXEN-PHASE $p' on the serial console"
	fi
done
reboots=$(grep -a -c '^REALXEN-REBOOT' "$serial" || true)
if [ "$end" = marker ] && [ "$reboots" = 2 ]; then
	pass "end: dom0 rebooted twice, then powered off"
else
	fail "end: dom0 rebooted twice, then powered off" \
		"$reboots reboots, end: $end (no end marker) after $(($(date +%s) - t1)) s: $(grep -a -v '^(XEN)' "$serial" | tr -d '\r' | tail -n 3 | tr '\n' ' ' | cut -c1-300)"
fi
# dom0 writes package-results.txt on the scenario disk; if nothing came
# back, the lines it printed on the serial console are what is left (there
# the journal prefixes them with a time and the unit's name).
steps=$results/package-results.txt
if [ ! -s "$steps" ]; then
	steps=$results/steps-from-serial.txt
	tr -d '\r' <"$serial" | sed -n -E 's/^.*]: ((PASS|FAIL) boot [0-9].*)$/\1/p' >"$steps" || true
fi
if [ -s "$steps" ]; then
	while IFS= read -r line; do
		case "$line" in
		PASS\ *) echo "$line"; passed=$((passed + 1)) ;;
		FAIL\ *) echo "$line"; failed=$((failed + 1)) ;;
		esac
	done <"$steps"
else
	fail "scenario: results" "no package-results.txt came back from dom0 (see $serial)"
fi
finish
