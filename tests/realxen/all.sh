#!/usr/bin/env bash
# The real-Xen scenario on every suite, first with Debian's C xenstored (the
# baseline that proves the harness), then with rxenstored; one summary line
# per run at the end. Exit status 0 only if every run passed.
#
# Usage: all.sh [PATH-TO-RXENSTORED]   (default: target/release/rxenstored)
#
# A run that fails is run once more (REALXEN_RETRIES, default 1), its first
# logs kept in <results>-attempt1; the summary says so. Under software
# emulation a dom0 has been seen to stall now and then, with C xenstored as
# with rxenstored (tests/realxen/README.md, "Known flake"); a daemon bug
# fails both attempts.
#
# Environment: REALXEN_SUITES (default "bookworm trixie"), REALXEN_RETRIES,
# and whatever run.sh reads (REALXEN_CACHE is per suite there, so leave it
# unset here).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
daemon=${1:-$repo/target/release/rxenstored}
suites=${REALXEN_SUITES:-bookworm trixie}

[ -x "$daemon" ] || { echo "all.sh: $daemon is not built (cargo build --release --workspace)" >&2; exit 2; }

status=0
summary=()
t_all=$(date +%s)
for suite in $suites; do
	for d in c "$daemon"; do
		name=$([ "$d" = c ] && echo "C xenstored" || basename "$d")
		echo "=== real Xen: $suite with $name" >&2
		dname=$([ "$d" = c ] && echo c || basename "$d")
		results=$repo/target/realxen/results/$suite-$dname
		note=
		attempt=1
		while :; do
			t0=$(date +%s)
			# tee -a: without it, opening /dev/stderr truncates a log file
			# that standard error is redirected to.
			out=$(REALXEN_RESULTS=$results "$here/run.sh" "$suite" "$d" | tee -a /dev/stderr)
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
echo
echo "real Xen summary ($(($(date +%s) - t_all)) s):"
printf '  %s\n' "${summary[@]}"
exit $status
