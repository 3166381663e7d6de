#!/usr/bin/env bash
# Runs `brine demo` RUNS times in a row (default 10) and prints each run's total and mesh time,
# then the spread (min, median, max) of both, with the load average before and after: on a
# shared machine the figures move with the load. Needs root (the demo's testbed hosts).
#   make build && RUNS=10 ./scripts/bench-demo.sh      (the hosts run bin/brine-minion)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-10}
bin=$(realpath "${BRINE:-./bin/brine}")
[ -x "$bin" ] || { echo "build first: make build (or BRINE=path)" >&2; exit 1; }
out=$(mktemp /tmp/brine-bench-demo.XXXXXX)
trap 'rm -f "$out"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
totals=() meshes=()
for i in $(seq 1 "$runs"); do
  if ! "$bin" demo >"$out" 2>&1; then
    echo "run $i failed:" >&2
    tail -40 "$out" >&2
    exit 1
  fi
  total=$(awk '$1=="total" {print $2}' "$out" | tr -d s)
  mesh=$(awk '/mesh up, all pairs ping/ {print $NF}' "$out" | tr -d s)
  # Phase 2 of the first apply: from its publication to its returns, and its slowest minion.
  p2=$(sed -n 's/^\[ *\([0-9.]*\)s\] .*phase 2:.*/\1/p' "$out" | head -1)
  p2end=$(sed -n 's/^\[ *\([0-9.]*\)s\] .* in [0-9.]*m\{0,1\}s$/\1/p' "$out" | head -1)
  slowest=$(grep -E '^\[ *[0-9.]+s\] .* in [0-9.]+m?s$' "$out" | head -4 |
    awk '{d=$NF; if (d ~ /ms$/) {sub(/ms/, "", d); d/=1000} else sub(/s/, "", d); if (d > m) m=d} END {printf "%.2f", m}')
  if [ -n "$p2" ]; then p2=$(printf "%.2f" "$(echo "$p2end - $p2" | bc)"); else p2=-; fi
  printf 'run %2d: total %6.2f s   mesh %5.2f s   phase 2 %s s (slowest minion %s s)   (load %s)\n' \
    "$i" "$total" "$mesh" "$p2" "$slowest" "$(cut -d' ' -f1 /proc/loadavg)"
  totals+=("$total") meshes+=("$mesh")
done
spread() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %.2f  median %.2f  max %.2f", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "total (s):   $(spread "${totals[@]}")"
echo "mesh (s):    $(spread "${meshes[@]}")"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
