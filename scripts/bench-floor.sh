#!/usr/bin/env bash
# The floor of the 50-minion rows (BENCHMARKS.md, "The floor of the 50-minion rows"): what their
# pieces cost at least on this machine (internal/floor's benchmarks: starting a process, loopback
# round trips to 50 peers, a job's signatures, the fsyncs of 50 x 20 files), then the rows
# themselves (scripts/bench-salt-compare.sh at 50 minions), back to back, with the load average:
# on a shared machine both move with it, so compare figures of the same run.
#   make build && RUNS=5 ./scripts/bench-floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
go test -run XXX -bench . -benchtime "${BENCHTIME:-10x}" ./internal/floor/ | grep -E '^Benchmark'
echo "load average between: $(cut -d' ' -f1-3 /proc/loadavg)"
RUNS=${RUNS:-5} SIZES=50 ./scripts/bench-salt-compare.sh | sed -n '1,3p'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
