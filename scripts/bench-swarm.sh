#!/usr/bin/env bash
# Scale (issue 7, BENCHMARKS.md "## swarm"): one real `brine master` process and N swarm minions
# in a second process (`brine bench swarm N --master`), for each N in $SIZES (default
# "100 1000 5000"). Each minion has its own keys, data dir and ZeroMQ connections over loopback.
# Prints connect time, median ping '*' and no-change 20-file apply, and the master's RSS and
# open descriptors.
#   RUNS=5 SIZES="1000" ./scripts/bench-swarm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"100 1000 5000"}
runs=${RUNS:-5}
bin=${BRINE:-./bin/brine}
[ -x "$bin" ] || { echo "build first: make build (or BRINE=path)" >&2; exit 1; }
work=$(mktemp -d /tmp/brine-bench-swarm.XXXXXX)   # the master's data: on disk, fsyncs are real
mpid=
cleanup() { [ -n "$mpid" ] && kill "$mpid" 2>/dev/null && wait "$mpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
# The master holds two descriptors per minion (docs/master.md, "File descriptors"): raise the
# hard limit to the systemd unit's 65536 where root may (CAP_SYS_RESOURCE). The swarm splits
# itself over several processes when one cannot hold all its minions.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 65536 ]; then
  ulimit -n 65536 2>/dev/null ||
    echo "file limit stays $hard (no CAP_SYS_RESOURCE): a master holds at most $(((hard - 512) / 2)) minions" >&2
fi
. scripts/bench-master.sh
for n in $sizes; do
  start_master
  echo "== swarm of $n minions, master pid $mpid"
  "$bin" bench swarm "$n" --runs "$runs" --master "127.0.0.1:$((port + 1))" \
    --socket "$work/m/master.sock" --master-pid "$mpid" "$@"
  kill "$mpid"; wait "$mpid" 2>/dev/null || true; mpid=
  port=$((port + 2))
done
