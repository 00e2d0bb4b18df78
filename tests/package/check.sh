#!/usr/bin/env bash
# Builds the Debian package (cargo-deb, without the simulator, in its own
# target directory so the workspace's simulator build stays as it is),
# then checks it: lintian reports no error, the files are where Debian's
# layout wants them, the maintainer scripts are there (prerm switches back
# on removal: crates/rxenstored/tests/switch.rs), and the packaged daemon
# runs (--version, --help, a socket served with -N answered by Debian's
# xenstore-read).
#
# Usage: tests/package/check.sh    (prints the .deb's path last)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

export CARGO_TARGET_DIR=$repo/target/deb
command -v cargo-deb >/dev/null || { echo "check.sh: cargo-deb is missing (cargo install cargo-deb)" >&2; exit 2; }
command -v lintian >/dev/null || { echo "check.sh: lintian is missing (apt-get install lintian)" >&2; exit 2; }

deb=$(cargo deb -p rxenstored 2>&1 | tee -a /dev/stderr | tail -n 1)
[ -f "$deb" ] || { echo "check.sh: cargo deb did not give a package ($deb)" >&2; exit 1; }

fail=0
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fail=1; fi; }

contents=$(dpkg-deb -c "$deb")
for f in ./usr/sbin/rxenstored ./usr/sbin/rxenstored-switch \
	./usr/share/man/man8/rxenstored.8.gz ./usr/share/man/man8/rxenstored-switch.8.gz \
	./usr/share/doc/rxenstored/copyright ./usr/share/doc/rxenstored/changelog.Debian.gz \
	./usr/share/doc/rxenstored/examples/rxenstored.toml; do
	check "package holds $f" "grep -q ' $f\$' <<<\"\$contents\""
done
check "package holds nothing under /etc (installing switches nothing)" "! grep -q ' ./etc/' <<<\"\$contents\""
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
for f in prerm postrm; do
	check "package has the maintainer script $f" "grep -qx './$f' <<<\"\$control\""
done

lintian_out=$(lintian --fail-on error "$deb" 2>&1) && lint_ok=1 || lint_ok=0
echo "$lintian_out"
check "lintian reports no error" "[ $lint_ok = 1 ]"

# The packaged daemon: unpacked, run in the foreground on a scratch socket.
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
pid=
dpkg-deb -x "$deb" "$tmp/root"
bin=$tmp/root/usr/sbin/rxenstored
"$bin" --version --no-xen >"$tmp/version" 2>&1 || true
cat "$tmp/version"
check "--version names the build" "grep -q '^rxenstored [0-9]' '$tmp/version'"
check "the simulator is not in the package" "grep -q 'simulator (--sim) no' '$tmp/version'"
check "--sim says it is not built in" "! '$bin' --sim -N --socket '$tmp/s' 2>'$tmp/sim.err' && grep -qi 'simulator' '$tmp/sim.err'"
"$bin" -N --no-xen --socket "$tmp/sock" >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$tmp/sock" ] && break; sleep 0.05; done
check "the packaged daemon serves xenstore-write/read" \
	"XENSTORED_PATH='$tmp/sock' xenstore-write /pkg/x 1 && [ \"\$(XENSTORED_PATH='$tmp/sock' xenstore-read /pkg/x)\" = 1 ]"
kill "$pid"

[ $fail = 0 ] || { echo "check.sh: failures above" >&2; exit 1; }
echo "$deb"
