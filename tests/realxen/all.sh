#!/usr/bin/env bash
# The real-Xen scenario on every suite, first with Debian's C xenstored (the
# baseline that proves the harness), then with rxenstored, then with C
# xenstored taken over by rxenstored (live update) and handed back; one
# summary line per run at the end. Exit status 0 only if every run passed.
#
# Usage: all.sh [PATH-TO-RXENSTORED]   (default: target/release/rxenstored)
#
# A run that fails is run once more (REALXEN_RETRIES, default 1), its first
# logs kept in <results>-attempt1; the summary says so. Under software
# emulation a dom0 has been seen to stall now and then, with C xenstored as
# with rxenstored (tests/realxen/README.md, "Known flake"); a daemon bug
# fails both attempts.
#
# Then, per suite, the Debian package (run-package.sh): a systemd dom0 where
# the package is installed and switched on and off across reboots. The
# package is REALXEN_DEB, else the newest target/deb/debian/rxenstored_*.deb
# (tests/package/check.sh makes it; run first when there is none).
#
# Environment: REALXEN_SUITES (default "bookworm trixie"), REALXEN_RETRIES,
# REALXEN_TAKEOVER_SUITES (the suites given a take-over run; default
# "trixie": each run boots the scenario once more, and CI has 90 minutes for
# everything; "bookworm trixie" for both), REALXEN_TAKEOVER_RUN=0 (none),
# REALXEN_DEB, REALXEN_PACKAGE=0 (no package runs), and whatever run.sh and
# run-package.sh read (REALXEN_CACHE and REALXEN_SYSTEMD_CACHE are per suite
# there, so leave them unset here).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
daemon=${1:-$repo/target/release/rxenstored}
suites=${REALXEN_SUITES:-bookworm trixie}

[ -x "$daemon" ] || { echo "all.sh: $daemon is not built (cargo build --release --workspace)" >&2; exit 2; }

status=0
summary=()
t_all=$(date +%s)
takeover_suites=${REALXEN_TAKEOVER_SUITES:-trixie}
for suite in $suites; do
	runs="c $daemon"
	# Then C xenstored again, taken over by rxenstored through live update
	# and handed back, on the suites of REALXEN_TAKEOVER_SUITES.
	if [ "${REALXEN_TAKEOVER_RUN:-1}" != 0 ] && [[ " $takeover_suites " == *" $suite "* ]]; then
		runs="$runs takeover"
	fi
	for d in $runs; do
		case "$d" in
		c) name="C xenstored" dname=c args=(c) ;;
		takeover) name="C xenstored, taken over by $(basename "$daemon") and handed back" dname=c-takeover args=(c takeover) ;;
		*) name=$(basename "$d") dname=$(basename "$d") args=("$d") ;;
		esac
		echo "=== real Xen: $suite with $name" >&2
		results=$repo/target/realxen/results/$suite-$dname
		note=
		attempt=1
		while :; do
			t0=$(date +%s)
			# tee -a: without it, opening /dev/stderr truncates a log file
			# that standard error is redirected to.
			out=$(REALXEN_RESULTS=$results REALXEN_RXENSTORED=$daemon "$here/run.sh" "$suite" "${args[@]}" | tee -a /dev/stderr)
			rc=$?
			last=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1)
			[ "$rc" != 0 ] && [ "$attempt" -le "${REALXEN_RETRIES:-1}" ] || break
			note="$note; attempt $attempt: ${last:-no result}, $(printf '%s\n' "$out" | grep -m1 '^FAIL') (logs: $results-attempt$attempt)"
			rm -rf "$results-attempt$attempt"
			mv "$results" "$results-attempt$attempt"
			attempt=$((attempt + 1))
			echo "=== real Xen: $suite with $name failed; running it again" >&2
		done
		summary+=("$suite / $name: ${last:-no result} ($(($(date +%s) - t0)) s)$note")
		[ "$rc" = 0 ] || status=1
	done
done

# --- the Debian package, per suite
if [ "${REALXEN_PACKAGE:-1}" != 0 ]; then
	deb=${REALXEN_DEB:-$(ls -t "$repo"/target/deb/debian/rxenstored_*.deb 2>/dev/null | head -n 1)}
	if [ -z "$deb" ]; then
		echo "=== no package yet: tests/package/check.sh" >&2
		deb=$("$repo/tests/package/check.sh" | tail -n 1)
	fi
	for suite in $suites; do
		name="the package $(basename "${deb:-?}")"
		echo "=== real Xen: $suite with $name" >&2
		results=$repo/target/realxen/results/$suite-package
		note=
		attempt=1
		while :; do
			t0=$(date +%s)
			if [ -f "$deb" ]; then
				out=$(REALXEN_RESULTS=$results "$here/run-package.sh" "$suite" "$deb" | tee -a /dev/stderr)
				rc=$?
			else
				out="tests/package/check.sh gave no package"
				rc=1
			fi
			last=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1)
			[ "$rc" != 0 ] && [ -f "$deb" ] && [ "$attempt" -le "${REALXEN_RETRIES:-1}" ] || break
			note="$note; attempt $attempt: ${last:-no result}, $(printf '%s\n' "$out" | grep -m1 '^FAIL') (logs: $results-attempt$attempt)"
			rm -rf "$results-attempt$attempt"
			mv "$results" "$results-attempt$attempt"
			attempt=$((attempt + 1))
			echo "=== real Xen: $suite with $name failed; running it again" >&2
		done
		summary+=("$suite / $name: ${last:-no result} ($(($(date +%s) - t0)) s)$note")
		[ "$rc" = 0 ] || status=1
	done
fi

echo
echo "real Xen summary ($(($(date +%s) - t_all)) s):"
printf '  %s\n' "${summary[@]}"
exit $status
