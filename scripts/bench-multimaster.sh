#!/usr/bin/env bash
# Many masters (issue 15, BENCHMARKS.md "### Three masters on PostgreSQL"): a private PostgreSQL
# cluster in a temp dir (unix socket only; run as the postgres user when this runs as root, as
# internal/pgtest does), three `brine master` processes on it sharing one master key, and N swarm
# minions listing all three (`brine bench swarm N --master a,b,c`), for each N in $SIZES
# (default "300"). The pings go through m1; then m2 is killed (SIGKILL) and pings through m1 are
# repeated until one reaches all N minions: the time from the kill is the failover figure.
# Prints the figures and every master's RSS. Everything it starts (masters, PostgreSQL, swarm
# processes) is stopped and every dir removed at exit, also on failure.
#   RUNS=3 SIZES="300" ./scripts/bench-multimaster.sh
#   RUNS=1 SIZES="9000" ./scripts/bench-multimaster.sh --json    # extra args go to bench swarm
# PGBIN overrides the PostgreSQL binaries (default /usr/lib/postgresql/15/bin); APPLY=1 also
# runs the applies and `run uptime` after the failover (slow at thousands of minions).
# PG_STATS=1 loads pg_stat_statements and prints, per size, the statements by total time and
# the commits and WAL flushes (where a ping's time goes in the database).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"300"}
runs=${RUNS:-3}
bin=${BRINE:-./bin/brine}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$bin" ] || { echo "build first: make build (or BRINE=path)" >&2; exit 1; }
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL server binaries not in $pgbin (apt-get install postgresql)" >&2; exit 1; }
bin=$(realpath "$bin")

work=$(mktemp -d /tmp/brine-bench-mm.XXXXXX) # the masters' data dirs: on disk, fsyncs are real
pg=$(mktemp -d /tmp/brine-bench-pg.XXXXXX)   # the cluster's data and socket
shm=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp)/brine-bench-mm.XXXXXX") # the minions' dirs
pids=()                                      # masters still running
pg_started=
as_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
  id postgres >/dev/null 2>&1 || { echo "running as root and there is no postgres user (apt-get install postgresql)" >&2; exit 1; }
  chown postgres: "$pg"
  as_pg() { runuser -u postgres -- "$@"; }
fi
stop_masters() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_masters
  if [ -n "$pg_started" ]; then
    as_pg "$pgbin/pg_ctl" stop -D "$pg/data" -m fast -w -t 30 >/dev/null 2>&1 ||
      as_pg "$pgbin/pg_ctl" stop -D "$pg/data" -m immediate -w >/dev/null 2>&1 || true
  fi
  rm -rf "$work" "$pg" "$shm"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Durable defaults (fsync, synchronous commit), as the bbolt master fsyncs every commit.
as_pg "$pgbin/initdb" -D "$pg/data" -U postgres --auth=trust -E UTF8 --no-sync --no-instructions >"$pg/initdb.log" 2>&1 ||
  { cat "$pg/initdb.log" >&2; exit 1; }
pg_started=1
pgopts="-k $pg -c listen_addresses= -c max_connections=200"
[ "${PG_STATS:-}" = 1 ] && pgopts+=" -c shared_preload_libraries=pg_stat_statements -c track_wal_io_timing=on"
as_pg "$pgbin/pg_ctl" start -D "$pg/data" -l "$pg/server.log" -w -t 60 -o "$pgopts" >/dev/null ||
  { cat "$pg/server.log" >&2; exit 1; }
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') in $pg (unix socket only)"

port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 65536 ]; then
  ulimit -n 65536 2>/dev/null || echo "file limit stays $hard (no CAP_SYS_RESOURCE)" >&2
fi

# start_master I URL: master mI on ports $port+2I-2 (publish) and $port+2I-1 (request), its data
# dir $work/mI; appends its pid to pids.
start_master() {
  local i=$1 url=$2 d=$work/m$1
  mkdir -p "$d"
  cat >"$work/m$i.hcl" <<HCL
name         = "m$i"
data_dir     = "$d"
store        = "$url"
publish_addr = "127.0.0.1:$((port + 2 * i - 2))"
request_addr = "127.0.0.1:$((port + 2 * i - 1))"
auto_accept  = true
# every swarm minion connects from 127.0.0.1: lift the per-source limits meant for the internet
max_conns_per_source      = 50000
max_handshakes_per_source = 4096
preauth_rate_per_source   = 100000
preauth_rate              = 100000
HCL
  "$bin" master -c "$work/m$i.hcl" 2>"$work/m$i.log" &
  pids+=($!)
  for _ in $(seq 1 500); do [ -S "$d/master.sock" ] && return; sleep 0.02; done
  echo "master m$i did not start" >&2; cat "$work/m$i.log" >&2; exit 1
}

rss() { awk '/^VmRSS|^VmHWM/ {printf "%s %.1f MB  ", $1, $2/1024}' "/proc/$1/status" 2>/dev/null || echo -n "gone"; }

for n in $sizes; do
  db=brine_${n}_$RANDOM
  as_pg "$pgbin/createdb" -h "$pg" -U postgres "$db"
  url="postgres://postgres@/$db?host=$pg&sslmode=disable"
  psql() { as_pg "$pgbin/psql" -h "$pg" -U postgres -d "$db" -X -q "$@"; }
  if [ "${PG_STATS:-}" = 1 ]; then
    psql -c 'CREATE EXTENSION pg_stat_statements' -c 'SELECT pg_stat_reset(), pg_stat_statements_reset()' >/dev/null
  fi
  rm -rf "$work"/m? && start_master 1 "$url"
  # One identity: m1 made the master key; the others get a copy before their first start.
  for i in 2 3; do mkdir -p "$work/m$i" && cp "$work/m1/master.key" "$work/m$i/master.key"; done
  start_master 2 "$url"
  start_master 3 "$url"
  echo "== swarm of $n minions over 3 masters (pids ${pids[*]}); ping through m1, kill -9 m2"
  steps=(--ping-only)
  [ "${APPLY:-}" = 1 ] && steps=()
  rc=0
  rm -rf "${shm:?}"/* # --dir: the swarm's minions, removed here also when the bench is killed
  "$bin" bench swarm "$n" --runs "$runs" --dir "$shm" \
    --master "127.0.0.1:$((port + 1)),127.0.0.1:$((port + 3)),127.0.0.1:$((port + 5))" \
    --socket "$work/m1/master.sock" --master-pid "${pids[0]}" --kill-master-pid "${pids[1]}" \
    "${steps[@]}" "$@" || rc=$?
  echo "m1 (pinged through): $(rss "${pids[0]}")"
  echo "m3:                  $(rss "${pids[2]}")"
  echo "(m2's RSS right before its kill is in the figures above)"
  if [ "${PG_STATS:-}" = 1 ]; then
    psql -P pager=off -c "SELECT calls, round(total_exec_time::numeric, 0) AS total_ms,
        round(mean_exec_time::numeric, 3) AS mean_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
      FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25" \
      -c "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()" \
      -c "SELECT wal_records, wal_fpi, wal_write, wal_sync, round(wal_sync_time::numeric, 0) AS wal_sync_ms FROM pg_stat_wal" \
      -c "SELECT j.jid, count(*) AS returns, $(for q in 0.1 0.5 0.9 0.99 1; do
            printf "round(percentile_cont(%s) WITHIN GROUP (ORDER BY t)::numeric, 2) AS \"s_%s\", " $q $q; done | sed 's/, $//')
          FROM jobs j JOIN (SELECT jid, extract(epoch FROM (convert_from(record, 'UTF8')::jsonb->>'received')::timestamptz) AS r FROM returns) x USING (jid),
            LATERAL (SELECT x.r - extract(epoch FROM (convert_from(j.record, 'UTF8')::jsonb->>'created')::timestamptz) AS t) y
          GROUP BY j.jid ORDER BY j.jid" || true
  fi
  stop_masters
  [ "$rc" = 0 ] || { echo "bench swarm failed (exit $rc); master logs:" >&2; tail -n 20 "$work"/m?.log >&2; exit "$rc"; }
  port=$((port + 6))
done
