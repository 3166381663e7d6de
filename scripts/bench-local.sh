#!/usr/bin/env bash
# Wall time and peak RSS of whole `brine local apply` processes on a 200-resource bundle:
# 150 files, 40 packages that are already installed, 10 execs guarded by `creates`.
#   no-change: every resource already as wanted (the common case on a converged fleet)
#   changes:   all 150 files differ (their content is rewritten each run)
# Reports the median of RUNS runs (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-15}
work=$(mktemp -d /tmp/brine-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
bundle=$work/bundle
mkdir -p "$bundle" "$work/root"
{
  echo 'variable "root" { type = string }'
  echo 'variable "gen" { default = "0" }'
  for i in $(seq 1 150); do
    printf 'file "f%d" {\n  path    = "${var.root}/files/f%d.conf"\n  content = "generation ${var.gen}\\nfile %d of 150\\nhost ${minion.id}\\n"\n  mode    = "0644"\n}\n' "$i" "$i" "$i"
  done
  dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1=="ii" && n<40 {print $2; n++}' |
    while read -r p; do printf 'package "%s" { state = "installed" }\n' "$p"; done
  for i in $(seq 1 10); do
    printf 'exec "e%d" {\n  command = "touch ${var.root}/stamp%d"\n  creates = "${var.root}/stamp%d"\n}\n' "$i" "$i" "$i"
  done
} > "$bundle/main.hcl"

measure() { # measure LABEL MODE: median wall ms and median peak RSS over $runs runs
  local label=$1 mode=$2
  local times=() rss=() gen=0
  for _ in $(seq 1 "$runs"); do
    if [ "$mode" = changes ]; then gen=$((gen + 1)); else gen=0; fi
    local start end out
    start=$(date +%s%N)
    out=$( { /usr/bin/time -f 'rss %M' ./bin/brine local apply "$bundle" --var root="$work/root" --var gen="$label$gen" >/dev/null; } 2>&1 )
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000000 )))
    rss+=("$(echo "$out" | awk '/^rss/ {print $2}')")
  done
  local mt mr
  mt=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  mr=$(printf '%s\n' "${rss[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-10s median wall %4d ms   median peak RSS %5.1f MB   (%d runs)\n' "$label" "$mt" "$(echo "$mr / 1024" | bc -l)" "$runs"
}

./bin/brine local apply "$bundle" --var root="$work/root" --var gen=no-change0 >/dev/null   # converge first
# The no-change run must really be one: 200 resources, 0 changed, 0 failed.
summary=$(./bin/brine local apply "$bundle" --var root="$work/root" --var gen=no-change0 | tail -1)
echo "check: $summary"
case "$summary" in *"200 resources"*"200 ok, 0 changed, 0 failed"*) ;; *) echo "bench bundle did not converge" >&2; exit 1 ;; esac
measure no-change same
measure changes changes
