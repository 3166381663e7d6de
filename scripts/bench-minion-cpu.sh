#!/usr/bin/env bash
# One minion's CPU per apply of the 20-file bundle (BENCHMARKS.md, "A minion's CPU per apply"):
# one `brine master` and one minion (bin/brine-minion, or MINION=path) on loopback; after a first
# apply, $APPLIES (default 200) applies into that same directory (no change), then $APPLIES each
# into a fresh one (20 changes). The minion's user and system CPU (/proc/PID/stat) and the wall
# time, per apply. Run two binaries one after the other (MINION=a ...; MINION=b ...), twice, to
# compare them on a shared machine.
#   make build && ./scripts/bench-minion-cpu.sh            (or BRINE=path MINION=path APPLIES=n)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${BRINE:-./bin/brine}")
minion=$(realpath "${MINION:-./bin/brine-minion}")
applies=${APPLIES:-200}
work=$(mktemp -d /tmp/brine-bench-cpu.XXXXXX)
port=$((20000 + RANDOM % 12000))
mpid=
mipid=
trap 'kill $mpid $mipid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
. scripts/bench-master.sh
start_master
mkdir -p "$work/d"
"$minion" --master "127.0.0.1:$((port + 1))" --id m1 --data-dir "$work/d" 2>"$work/minion.log" &
mipid=$!
for _ in $(seq 1 300); do "$bin" ping '*' --socket "$work/m/master.sock" >/dev/null 2>&1 && break; sleep 0.05; done
"$bin" bench bundle "$work/files20" --files 20 >/dev/null
apply() { # apply ROOT WANT: one apply into ROOT, whose summary must say WANT
  "$bin" apply m1 "$work/files20" --socket "$work/m/master.sock" --var "root=$1" >"$work/apply.out" 2>&1 || { cat "$work/apply.out" >&2; exit 1; }
  grep -q "$2" "$work/apply.out" || { cat "$work/apply.out" >&2; exit 1; }
}
apply "$work/files/0" '0 ok, 20 changed, 0 failed'
ticks=$(getconf CLK_TCK)
echo "minion: $minion; $applies applies each; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in "no change" "20 changes"; do
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$mipid/stat")
  t0=$(date +%s%N)
  for r in $(seq 1 "$applies"); do
    if [ "$mode" = "no change" ]; then
      apply "$work/files/0" '20 ok, 0 changed, 0 failed'
    else
      apply "$work/files/$r" '0 ok, 20 changed, 0 failed'
    fi
  done
  t1=$(date +%s%N)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$mipid/stat")
  awk -v m="$mode" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t=$(((t1 - t0) / 1000)) -v n="$applies" -v k="$ticks" \
    'BEGIN {printf "%-10s CPU per apply %5.1f ms (user %4.1f, system %4.1f); wall per apply %5.1f ms\n", m, (u+s)*1000/k/n, u*1000/k/n, s*1000/k/n, t/1000/n}'
done
