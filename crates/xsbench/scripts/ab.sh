#!/bin/bash
# ab.sh OLD NEW [ROUNDS]: two rxenstored binaries, alternating, through the
# same xsbench workloads (rw, tx, pipeline, watch with a 20,000-node
# prefill; the 10,000-child listing), each on a fresh daemon, 2 s each.
# Compare the two columns of one run, never figures of different runs.
set -u
old=$1 new=$2 rounds=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
xsb=${XSBENCH:-$here/../../../target/release/xsbench}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for round in $(seq "$rounds"); do
	for w in rw tx pipeline watch listing; do
		for b in old new; do
			bin=${!b}
			sock=$dir/$b.sock
			rm -f "$sock"
			RXENSTORED_LOG=warn "$bin" -N --no-xen --socket "$sock" >/dev/null 2>&1 &
			pid=$!
			for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
			extra="--prefill 20000"
			[ "$w" = listing ] && extra="--children 10000 --clients 1"
			# shellcheck disable=SC2086
			out=$("$xsb" --socket "$sock" --workload "$w" --seconds 2 $extra 2>&1 | tail -n 1)
			echo "round $round $w $b: $out"
			kill "$pid"
			wait "$pid" 2>/dev/null
		done
	done
done
