# Sourced by the benchmark scripts: start_master starts a fresh `brine master` with its own data
# dir under $work, auto_accept on, per-source limits lifted (one source: loopback), on loopback ports $port and $port+1, and sets $mpid. It needs
# $bin, $work and $port; it fails the script if the master does not come up within 4 s.
start_master() {
  rm -rf "$work/m" && mkdir -p "$work/m"
  cat > "$work/master.hcl" <<HCL
data_dir     = "$work/m"
publish_addr = "127.0.0.1:$port"
request_addr = "127.0.0.1:$((port + 1))"
auto_accept  = true
# every swarm minion connects from 127.0.0.1: lift the per-source limits meant for the internet
max_conns_per_source      = 50000
max_handshakes_per_source = 4096
preauth_rate_per_source   = 100000
preauth_rate              = 100000
HCL
  "$bin" master -c "$work/master.hcl" 2>"$work/master.log" &
  mpid=$!
  for _ in $(seq 1 200); do [ -S "$work/m/master.sock" ] && return; sleep 0.02; done
  echo "master did not start" >&2; cat "$work/master.log" >&2; exit 1
}
