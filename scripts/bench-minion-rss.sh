#!/usr/bin/env bash
# Where an idle minion's resident memory goes: one `brine master` and one `brine minion` on
# loopback; once the minion answers a ping and has idled 2 s, its VmRSS (anonymous and file
# pages) and its smaps summed per mapping (the binary's read-only data, its code, the heap and
# stacks as anonymous memory), then the binary's section sizes.
#   make build && ./scripts/bench-minion-rss.sh            (or BRINE=path)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${BRINE:-./bin/brine}")
work=$(mktemp -d /tmp/perf-rss.XXXXXX)
port=$((20000 + RANDOM % 12000))
mpid=
mipid=
trap 'kill $mpid $mipid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
. scripts/bench-master.sh
start_master
mkdir -p $work/d
"$bin" minion --master "127.0.0.1:$((port + 1))" --id m1 --data-dir "$work/d" 2>"$work/minion.log" &
mipid=$!
for _ in $(seq 1 300); do "$bin" ping '*' --socket "$work/m/master.sock" >/dev/null 2>&1 && break; sleep 0.05; done
sleep 2
grep -E "VmRSS|RssAnon|RssFile|Threads" /proc/$mipid/status
awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6" "$2; if ($6=="") name="[anon] "$2} /^Rss:/{rss[name]+=$2} END {for (n in rss) if (rss[n]>100) printf "%8d kB  %s\n", rss[n], n}' /proc/$mipid/smaps | sort -rn; readelf -SW $bin | grep -E " \.(text|rodata|gopclntab|typelink|noptrdata|data|bss|noptrbss) "
