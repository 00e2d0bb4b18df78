#!/bin/sh
# bench.sh OUTFILE RXENSTORED CXENSTORED: the two daemons, one after the
# other in this dom0 under the same hypervisor, through the same xsbench
# workloads; figures only (no PASS/FAIL: benchmarks assert nothing). Run by
# dom0.sh after the scenario, when run.sh put xsbench on the scenario disk
# (REALXEN_BENCH=1), with the host's own xenstored and xenconsoled stopped.
# Compare the two daemons' lines of one run; under QEMU's emulation every
# figure is many times the hardware's.
set -u
out=$1 rx=$2 c=$3
R=$(dirname "$0")
XSB=$R/xsbench
XSM=$R/xsbench-memory
# Store shapes for memory per node (run.sh passes REALXEN_BENCH_SHAPES).
SHAPES=${BENCH_SHAPES:-20000:8,10000:100}
: >"$out"
log() { echo "$*" | tee -a "$out"; }

# start NAME DIR: the daemon NAME (rx or c) serving DIR/socket, foreground.
start() {
	rm -rf "$2" && mkdir -p "$2"
	case "$1" in
	rx) XENSTORED_RUNDIR=$2 RXENSTORED_LOG=warn "$rx" -N --socket "$2/socket" >"$2/log" 2>&1 & ;;
	c) XENSTORED_RUNDIR=$2 "$c" -N >"$2/log" 2>&1 & ;;
	esac
	dpid=$!
	_t=100
	while [ "$_t" -gt 0 ]; do
		[ -S "$2/socket" ] && XENSTORED_PATH=$2/socket timeout 5 xenstore-read / >/dev/null 2>&1 && return 0
		sleep 0.2
		_t=$((_t - 1))
	done
	log "bench: $1 did not serve $2/socket: $(tail -n 3 "$2/log" | tr '\n' ' ')"
	return 1
}
stop() {
	kill "$dpid" 2>/dev/null
	wait "$dpid" 2>/dev/null
}

log "bench: $(uname -r), Xen $(xl info 2>/dev/null | awk '/^xen_version/ {print $3}'), $(nproc) vCPU(s) in dom0"
for d in c rx; do
	dir=/run/bench-$d
	# Memory per node: a fresh daemon per shape (xsbench-memory starts it).
	case "$d" in
	rx) cmd="env RXENSTORED_LOG=warn $rx -N --socket \$SOCKET" ;;
	c) cmd="sh -c 'D=\$(mktemp -d) && ln -sf \$D/socket \$SOCKET && XENSTORED_RUNDIR=\$D exec $c -N'" ;;
	esac
	timeout -k 5 1200 "$XSM" --shapes "$SHAPES" --daemon-cmd "$cmd" >"$dir-memory.txt" 2>&1
	sed "s/^/bench: $d memory: /" "$dir-memory.txt" | tee -a "$out"
	for w in "fanout --watchers 1" "fanout --watchers 100" "fanout --watchers 500" "fanout --watchers 1000" \
		"listing --children 10000 --clients 1" "rw --clients 4" "pipeline --clients 4" "tx --clients 4"; do
		start "$d" "$dir" || break
		# shellcheck disable=SC2086
		r=$(timeout -k 5 120 "$XSB" --socket "$dir/socket" --seconds 5 --workload $w 2>&1 | tail -n 1)
		log "bench: $d $w: $r"
		stop
	done
done
