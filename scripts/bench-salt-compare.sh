#!/usr/bin/env bash
# The workload Salt 3006 was measured on (issue 7, BENCHMARKS.md "## master and minions"), with
# real processes: one `brine master` and 1, 10 and 50 `brine-minion` processes on loopback, each
# with its own data dir and keys. Everything is timed from the operator's side: the wall time of
# whole `brine ping` / `brine apply` processes. Medians of $RUNS runs (default 7).
#   ping '*'; apply of 20 small files into a per-minion directory, first run (fresh directory:
#   20 changes per minion) and second run (no change); RSS of one minion and of the master;
#   a fresh minion process's start to its answering ping; 100 minions started at once to all
#   of them answering.
#   RUNS=5 SIZES="1 10 50" ./scripts/bench-salt-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-7}
sizes=${SIZES:-"1 10 50"}
bin=$(realpath "${BRINE:-./bin/brine}")
[ -x "$bin" ] || { echo "build first: make build (or BRINE=path)" >&2; exit 1; }
# The minions run brine-minion, as hosts do (MINION=path for another; beside $bin by default).
minion=$(realpath "${MINION:-$(dirname "$bin")/brine-minion}")
[ -x "$minion" ] || { echo "build first: make build (or MINION=path)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/brine-bench-salt.XXXXXX")   # on disk: every fsync is real
# Where the minions write the 20 files (default on disk, under $work). All the minions share
# this one disk, where real hosts would each write to their own: FILES_DIR=/dev/shm/... shows
# the run without that contention.
files=${FILES_DIR:-$work/files}
pids=()
mpid=
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  if [ -n "$mpid" ]; then kill "$mpid" 2>/dev/null || true; wait "$mpid" 2>/dev/null || true; mpid=; fi
}
trap 'stop_all; rm -rf "$work" "$files"' EXIT
port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

. scripts/bench-master.sh
start_minion() { # start_minion ID
  rm -rf "$work/d/$1"
  mkdir -p "$work/d/$1"
  "$minion" --master "127.0.0.1:$((port + 1))" --id "$1" --data-dir "$work/d/$1" 2>"$work/d/$1.log" &
  pids+=($!)
}
sock() { echo "--socket=$work/m/master.sock"; }
# answering TARGET N: true when ping TARGET gets N successful answers
answering() {
  "$bin" ping "$1" "$(sock)" --timeout "${3:-2s}" 2>/dev/null | tail -1 | grep -q "^$2 minion(s): $2 succeeded"
}
wait_answering() { # wait_answering TARGET N LIMIT_S
  local deadline=$(( $(now_ms) + $3 * 1000 ))
  until answering "$1" "$2" 0.5s; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "not all $2 of $1 answer" >&2; return 1; }
    sleep 0.02
  done
}
timed() { # timed CMD...: prints wall ms; fails if CMD fails
  local t0 t1
  t0=$(now_ms); "$@" >"$work/last.out" 2>&1 || { cat "$work/last.out" >&2; return 1; }; t1=$(now_ms)
  echo $((t1 - t0))
}

"$bin" bench bundle "$work/files20" --files 20
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); runs: $runs"
printf '%-8s %12s %14s %14s %11s %11s\n' minions "ping '*'" "apply first" "apply again" "minion RSS" "master RSS"
for n in $sizes; do
  start_master
  for i in $(seq 1 "$n"); do start_minion "$(printf 'm%03d' "$i")"; done
  wait_answering '*' "$n" 60
  pt=(); at=(); nt=()
  for r in $(seq 1 "$runs"); do
    pt+=("$(timed "$bin" ping '*' "$(sock)")")
    grep -q "^$n minion(s): $n succeeded" "$work/last.out"
  done
  for r in $(seq 1 "$runs"); do
    # A fresh directory each run: 20 files change on every minion.
    at+=("$(timed "$bin" apply '*' "$work/files20" "$(sock)" --var "root=$files/$n-$r")")
    # Every minion changed its 20 files, and the second run changes none.
    [ "$(grep -c 'Applied 20 resources .*: 0 ok, 20 changed, 0 failed' "$work/last.out")" = "$n" ]
    nt+=("$(timed "$bin" apply '*' "$work/files20" "$(sock)" --var "root=$files/$n-$r")")
    [ "$(grep -c 'Applied 20 resources .*: 20 ok, 0 changed, 0 failed' "$work/last.out")" = "$n" ]
  done
  [ "$(ls "$files/$n-1/m001" | wc -l)" = 20 ]
  printf '%-8s %9s ms %11s ms %11s ms %8s MB %8s MB\n' "$n" \
    "$(printf '%s\n' "${pt[@]}" | median)" "$(printf '%s\n' "${at[@]}" | median)" \
    "$(printf '%s\n' "${nt[@]}" | median)" "$(rss_mb "${pids[0]}")" "$(rss_mb "$mpid")"
  stop_all
  rm -rf "$files" "$work/d"
  port=$((port + 2))
done

# A fresh minion process: from its start (new key, first contact, auto-accepted) to its first
# answered ping, as an operator polling `brine ping` sees it.
start_master
ft=()
for r in $(seq 1 "$runs"); do
  id=$(printf 'fresh%02d' "$r")
  t0=$(now_ms)
  start_minion "$id"
  wait_answering "$id" 1 30
  ft+=($(( $(now_ms) - t0 )))
done
echo "fresh minion start to answering ping: median $(printf '%s\n' "${ft[@]}" | median) ms (runs: ${ft[*]})"
stop_all
port=$((port + 2))

# 100 minion processes started at once, to all 100 answering one ping.
start_master
t0=$(now_ms)
for i in $(seq 1 100); do start_minion "$(printf 'burst%03d' "$i")"; done
wait_answering 'burst*' 100 120
echo "100 minions started at once, all answering: $(( $(now_ms) - t0 )) ms"
stop_all
