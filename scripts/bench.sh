#!/usr/bin/env bash
# make bench: the benchmarks of BENCHMARKS.md. Each section prints its figures; copy them into
# BENCHMARKS.md with the date and machine when they change.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

echo "== brine local apply: 200 resources (150 files, 40 installed packages, 10 guarded execs)"
./scripts/bench-local.sh
echo; echo "== master and minions: Salt's workload, real processes"; ./scripts/bench-salt-compare.sh
echo; echo "== swarm: 100, 1,000 and 5,000 minions, one master process"; ./scripts/bench-swarm.sh

echo
echo "== Go benchmarks"
go test -run '^$' -bench . -benchtime 3x ./... 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' || true
