#!/usr/bin/env bash
# Real-Xen end-to-end test: boot Debian's Xen with a Debian dom0 in QEMU (TCG),
# run the given xenstored as the host's xenstored, run the scenario (dom0.sh,
# guest-init.sh) and print its results.
#
# Usage: run.sh <bookworm|trixie> <c|PATH-TO-RXENSTORED>
#   c      Debian's own C xenstored (the baseline that proves the harness)
#   PATH   an rxenstored binary, installed in dom0 and named in
#          /etc/default/xen's XENSTORED
#
# Environment:
#   REALXEN_CACHE    image cache (default <repo>/target/realxen/<suite>);
#                    build-image.sh fills it when it is incomplete
#   REALXEN_RESULTS  results directory (default
#                    <repo>/target/realxen/results/<suite>-<daemon name>)
#   REALXEN_TIMEOUT  seconds before QEMU is killed (default 900)
#   REALXEN_ACCEL    QEMU -accel value (default tcg; e.g. tcg,thread=single)
#   REALXEN_XEN_ARGS, REALXEN_DOM0_ARGS  extra Xen / dom0 kernel arguments
#                    (dom0's must not contain commas)
#   REALXEN_CLIENT   a static xs-client-check to use instead of building it
#   REALXEN_CLIENT_TARGET  cargo target directory for that static build
#                    (default <repo>/target/static)
#   REALXEN_TAKEOVER 1 (or a third argument `takeover`), C runs only:
#                    rxenstored takes the host over from C by live update
#                    while g1 runs, then hands it back (REALXEN_RXENSTORED:
#                    the binary, default <repo>/target/release/rxenstored)
#   REALXEN_BENCH    1: after the scenario of an rxenstored run, dom0 runs
#                    bench.sh (xsbench built static): C xenstored and
#                    rxenstored one after the other, figures in out/bench.txt
#                    (the default timeout becomes 1500 s);
#                    REALXEN_BENCH_SHAPES: its memory shapes (NODES:BYTES,...)
#
# Prints "PASS <step>" / "FAIL <step>: <why>" per step and ends with
# "N passed, M failed"; exits 0 only when nothing failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
suite=${1:?usage: run.sh <bookworm|trixie> <c|path-to-rxenstored>}
daemon=${2:?usage: run.sh <bookworm|trixie> <c|path-to-rxenstored>}
case "$suite" in
bookworm | trixie) ;;
*) echo "run.sh: unknown suite '$suite' (bookworm or trixie)" >&2; exit 2 ;;
esac
if [ "$daemon" = c ]; then
	dname=c
else
	[ -x "$daemon" ] || { echo "run.sh: '$daemon' is not an executable" >&2; exit 2; }
	daemon=$(cd "$(dirname "$daemon")" && pwd)/$(basename "$daemon")
	dname=$(basename "$daemon")
fi
export REALXEN_CACHE=${REALXEN_CACHE:-$repo/target/realxen/$suite}
cache=$REALXEN_CACHE
results=${REALXEN_RESULTS:-$repo/target/realxen/results/$suite-$dname}
bench=${REALXEN_BENCH:-0}
[ "$dname" != c ] || bench=0
if [ "$bench" = 1 ]; then timeout_s=${REALXEN_TIMEOUT:-1500}; else timeout_s=${REALXEN_TIMEOUT:-900}; fi

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
if [ ! -e "$cache/.complete" ]; then
	echo "realxen: building the $suite image in $cache" >&2
	if ! "$here/build-image.sh" "$suite" >&2; then
		fail "image: build $suite" "build-image.sh failed"
		finish
	fi
	echo "realxen: image built in $(($(date +%s) - t0)) s" >&2
fi
pass "image: $suite dom0 with Xen $(. "$cache/image.env" && echo "$XEN_VERSION")"

# --- the scenario disk: the scenario, the guests' initramfs, the daemon, the
# client check
rm -rf "$results"
mkdir -p "$results"
stage=$(mktemp -d "${TMPDIR:-/tmp}/realxen-stage.XXXXXX")
work=$(mktemp -d "${TMPDIR:-/tmp}/realxen-work.XXXXXX")
qpid=
cleanup() {
	[ -z "$qpid" ] || kill "$qpid" 2>/dev/null || true
	rm -rf "$stage" "$work"
}
trap cleanup EXIT

# The project's Rust client, checked by its example xs-client-check
# (crates/xenstore-client/examples/xs-client-check.rs) in dom0 and in a guest.
# Built static (glibc's crt-static), so that it runs in the guests' busybox
# initramfs, which has no libraries of its own; in a target directory of its
# own, so that the workspace's build is left alone. REALXEN_CLIENT names a
# binary built already.
client=${REALXEN_CLIENT:-}
if [ -z "$client" ]; then
	ctarget=${REALXEN_CLIENT_TARGET:-$repo/target/static}
	client=$ctarget/x86_64-unknown-linux-gnu/release/examples/xs-client-check
	tc=$(date +%s)
	(cd "$repo" && env -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$ctarget" \
		RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=debuginfo \
		cargo build --release --target x86_64-unknown-linux-gnu -p xenstore-client --example xs-client-check) \
		>"$results/client-build.log" 2>&1 || rm -f "$client"
	echo "realxen: xs-client-check built in $(($(date +%s) - tc)) s" >&2
fi
if [ -x "$client" ] && ldd "$client" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
	pass "client: xs-client-check built static"
	cp "$client" "$stage/xs-client-check"
else
	fail "client: xs-client-check built static" \
		"'$client': $(tail -n 3 "$results/client-build.log" 2>/dev/null | tr '\n' ' ' | cut -c1-200) $(ldd "$client" 2>&1 | head -n 2 | tr '\n' ' ')"
fi
cp "$here/dom0.sh" "$stage/dom0.sh"
if [ "$bench" = 1 ]; then
	# xsbench and xsbench-memory, static like the client, for bench.sh.
	btarget=${REALXEN_CLIENT_TARGET:-$repo/target/static}
	(cd "$repo" && env -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$btarget" \
		RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=debuginfo \
		cargo build --release --target x86_64-unknown-linux-gnu -p xsbench --bin xsbench --bin xsbench-memory) \
		>"$results/bench-build.log" 2>&1 || echo "run.sh: the static xsbench did not build (see bench-build.log)" >&2
	for b in xsbench xsbench-memory; do
		cp "$btarget/x86_64-unknown-linux-gnu/release/$b" "$stage/$b" 2>/dev/null || true
	done
	cp "$here/bench.sh" "$stage/bench.sh"
fi
if [ "$dname" = c ]; then
	echo "DAEMON=c" >"$stage/config"
	# REALXEN_TAKEOVER=1 (or `takeover` as the third argument): C's run
	# also has rxenstored take the host over by live update and hand it
	# back (dom0.sh); REALXEN_RXENSTORED names the binary.
	if [ "${REALXEN_TAKEOVER:-0}" = 1 ] || [ "${3:-}" = takeover ]; then
		rx=${REALXEN_RXENSTORED:-$repo/target/release/rxenstored}
		[ -x "$rx" ] || { echo "run.sh: take-over wants an rxenstored binary: $rx" >&2; exit 2; }
		echo "TAKEOVER=1" >>"$stage/config"
		cp "$rx" "$stage/rxenstored"
	fi
else
	echo "DAEMON=rx" >"$stage/config"
	[ "$bench" != 1 ] || echo "BENCH_SHAPES=${REALXEN_BENCH_SHAPES:-20000:8,10000:100}" >>"$stage/config"
	cp "$daemon" "$stage/rxenstored"
fi
# The guests' initramfs: the cached tree plus /init.
cp -a "$cache/guest-root" "$work/guest"
rm -f "$work/guest/.done"
install -m 0755 "$here/guest-init.sh" "$work/guest/init"
[ ! -e "$stage/xs-client-check" ] || install -m 0755 "$stage/xs-client-check" "$work/guest/usr/bin/xs-client-check"
(cd "$work/guest" && find . | cpio -o -H newc --quiet | gzip -1 >"$stage/guest.cpio.gz")
mkdir -p "$stage/out"
size_mb=$(($(du -sm "$stage" | cut -f1) + 256))
mkfs.ext4 -q -F -L realxen-scn -d "$stage" "$work/scenario.img" "${size_mb}M" >/dev/null 2>&1

# --- boot: Xen from QEMU's multiboot loader, dom0's kernel and initramfs as
# modules (module command lines must not contain commas), dom0's disk as a
# throw-away snapshot, the scenario disk writable. clocksource=xen: under TCG,
# Debian 13's kernel starts dom0 on the TSC, finds it skewed and switches to
# Xen's clock; runs that did so hung now and then with processes asleep in
# timed waits that never ended (2 of 8 trixie runs; 0 of 4 with the option).
# dom0_max_vcpus: trixie's dom0 runs on one vCPU. With two, now and then
# (4 of 16 runs, with C xenstored as with rxenstored) a dom0 process slept
# in a timed futex wait that never ended; with one, 8 runs out of 8 passed.
case "$suite" in
trixie) dom0_vcpus=1 ;;
*) dom0_vcpus=2 ;;
esac
q=$cache/qemu/root
export LD_LIBRARY_PATH="$q/usr/lib/x86_64-linux-gnu:$q/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
serial=$results/serial.log
: >"$serial"
"$q/usr/bin/qemu-system-x86_64" \
	-L "$q/usr/share/qemu" -L "$q/usr/share/seabios" \
	-accel "${REALXEN_ACCEL:-tcg}" -cpu max,-smap -m 3072 -smp 2 \
	-display none -vga none -net none -monitor none -no-reboot \
	-serial "file:$serial" \
	-kernel "$cache/xen.elf" \
	-append "console=com1 com1=115200 dom0_mem=1024M,max:1024M dom0_max_vcpus=$dom0_vcpus loglvl=all guest_loglvl=all ${REALXEN_XEN_ARGS:-}" \
	-initrd "$cache/vmlinuz root=/dev/vda ro console=hvc0 init=/sbin/realxen-init clocksource=xen ${REALXEN_DOM0_ARGS:-},$cache/initrd.img" \
	-drive "file=$cache/root.img,if=virtio,format=raw,snapshot=on" \
	-drive "file=$work/scenario.img,if=virtio,format=raw" \
	>"$results/qemu.log" 2>&1 &
qpid=$!
t1=$(date +%s)
# Wait for the end marker, QEMU's exit or the overall timeout.
end=
while kill -0 "$qpid" 2>/dev/null; do
	if grep -q '^REALXEN-END' "$serial"; then end=marker; sleep 3; break; fi
	if [ $(($(date +%s) - t1)) -ge "$timeout_s" ]; then end=timeout; break; fi
	sleep 2
done
kill "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
qpid=
grep -q '^REALXEN-END' "$serial" && end=marker
echo "realxen: QEMU ran $(($(date +%s) - t1)) s ($suite, $dname)" >&2

# --- results: read back from the scenario disk without mounting it
debugfs -R "rdump /out $results" "$work/scenario.img" >/dev/null 2>&1 || true
if [ -d "$results/out" ]; then
	cp -a "$results/out/." "$results/" && rm -rf "$results/out"
fi
if [ "$end" = marker ]; then
	pass "boot: dom0 ran the scenario and shut down"
else
	fail "boot: dom0 ran the scenario and shut down" \
		"no end marker on the serial console after ${timeout_s} s: $(grep -v '^(XEN)' "$serial" | tail -n 3 | tr '\n' ' ' | cut -c1-300)"
fi
# dom0 writes results.txt on the scenario disk; when it did not get to the
# end (timeout), the lines it printed on the serial console are what is left.
steps=$results/results.txt
if [ "$end" != marker ] || [ ! -s "$steps" ]; then
	steps=$results/steps-from-serial.txt
	grep -a -E '^(PASS|FAIL) ' "$serial" >"$steps" || true
fi
if [ -s "$steps" ]; then
	while IFS= read -r line; do
		case "$line" in
		PASS\ *) echo "$line"; passed=$((passed + 1)) ;;
		FAIL\ *) echo "$line"; failed=$((failed + 1)) ;;
		esac
	done <"$steps"
else
	fail "scenario: results" "no results.txt came back from dom0 (see $serial)"
fi
finish
