#!/usr/bin/env bash
# Where a minion's resident memory goes: one `brine master` and one minion (bin/brine-minion,
# or MINION=path; MINION="bin/brine minion" runs the full binary's subcommand) on loopback.
#   idle: once the minion answers a ping and has idled $IDLE s (default 2), its VmRSS (anonymous and file
#   pages) and its smaps summed per mapping (the binary's read-only data, its code, the heap and
#   stacks as anonymous memory), then the binary's section sizes;
#   applying: $APPLIES (default 5) applies of the 20-file bundle (`brine bench bundle`), each
#   into a fresh directory (20 changes); while each runs, VmRSS is sampled every 10 ms, and the
#   minion's VmHWM (peak over its life) is read after the last; then its VmRSS idle again.
#   make build && ./scripts/bench-minion-rss.sh            (or BRINE=path MINION=path IDLE=s)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${BRINE:-./bin/brine}")
read -r -a minion <<<"${MINION:-./bin/brine-minion}"
minion[0]=$(realpath "${minion[0]}")
applies=${APPLIES:-5}
idle=${IDLE:-2}
work=$(mktemp -d /tmp/perf-rss.XXXXXX)
port=$((20000 + RANDOM % 12000))
mpid=
mipid=
trap 'kill $mpid $mipid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
. scripts/bench-master.sh
start_master
mkdir -p $work/d
"${minion[@]}" --master "127.0.0.1:$((port + 1))" --id m1 --data-dir "$work/d" 2>"$work/minion.log" &
mipid=$!
for _ in $(seq 1 300); do "$bin" ping '*' --socket "$work/m/master.sock" >/dev/null 2>&1 && break; sleep 0.05; done
sleep "$idle"
echo "idle: ${minion[*]}"
grep -E "VmRSS|RssAnon|RssFile|Threads" /proc/$mipid/status
awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6" "$2; if ($6=="") name="[anon] "$2} /^Rss:/{rss[name]+=$2} END {for (n in rss) if (rss[n]>100) printf "%8d kB  %s\n", rss[n], n}' /proc/$mipid/smaps | sort -rn
readelf -SW "${minion[0]}" | grep -E " \.(text|rodata|gopclntab|typelink|noptrdata|data|bss|noptrbss) "

"$bin" bench bundle "$work/files20" --files 20 >/dev/null
peak=0
for r in $(seq 1 "$applies"); do
  "$bin" apply m1 "$work/files20" --socket "$work/m/master.sock" --var "root=$work/files/$r" >"$work/apply.out" 2>&1 &
  apid=$!
  while kill -0 $apid 2>/dev/null; do
    kb=$(awk '/^VmRSS/ {print $2}' /proc/$mipid/status)
    [ "$kb" -gt "$peak" ] && peak=$kb
    sleep 0.01
  done
  wait $apid || { cat "$work/apply.out" >&2; exit 1; }
  grep -q 'Applied 20 resources .*: 0 ok, 20 changed, 0 failed' "$work/apply.out" || { cat "$work/apply.out" >&2; exit 1; }
done
echo "applying: $applies applies of 20 files, each 20 changes"
echo "VmRSS sampled during the applies (max): $peak kB"
grep -E "VmHWM" /proc/$mipid/status
sleep "$idle"
echo "idle again, $idle s after the last apply:"
grep -E "VmRSS|RssAnon|RssFile" /proc/$mipid/status
