#!/usr/bin/env bash
# The migration runbook of docs/capture.md as code (README.md here walks through it). As root:
#   BRINE=./bin/brine examples/migrate/run.sh
# Three "legacy" servers (web, app, db: systemd testbed hosts set up by this script, not by
# brine) are enrolled over SSH, captured, cloned in the (simulated) cloud, the clones converged
# from the capture, their content compared, and DNS cut over to the clones and back.
# Everything it makes is removed on exit.
set -euo pipefail
BRINE=${BRINE:-brine}
BRINE=$(command -v "$BRINE")
WORK=$(mktemp -d /tmp/brine-migrate.XXXXXX)
LEGACY=migl$$
SIM=migs$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$BRINE" testbed down --name "$LEGACY" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
inhost() { local h=$1; shift; "$BRINE" testbed exec --name "$LEGACY" "$h" -- "$@"; }
# unchanged TARGET: a dry-run converge of the site changes nothing on any of TARGET's 3 hosts.
unchanged() {
  local out
  out=$("$BRINE" converge "$1" --site "$WORK/site" --dry-run --socket "$SOCK")
  echo "$out"
  if [ "$(grep -c ' 0 to change, 0 failed' <<<"$out")" != 3 ]; then
    echo "the site would change $1" >&2
    exit 1
  fi
}

step "1. Three legacy servers, set up by hand"
"$BRINE" testbed up --systemd --name "$LEGACY" web1 app1 db1
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id_ed25519"
declare -A ADDR PORT
PORT=([web1]=80 [app1]=8080 [db1]=5432)
declare -A CONTENT=([web1]="<h1>The blog</h1>" [app1]='{"api": "v1", "posts": 3}' [db1]="posts: 3 rows")
for h in web1 app1 db1; do
  inhost "$h" sh -c '
set -e
mkdir -p /etc/legacy/data
printf "%s\n" "$1" > /etc/legacy/data/index.html
cat > /etc/systemd/system/legacy-'"$h"'.service <<UNIT
[Unit]
Description=the legacy '"$h"' service (a stand-in)
[Service]
ExecStart=/usr/bin/python3 -m http.server '"${PORT[$h]}"' --directory /etc/legacy/data
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now legacy-'"$h"'.service
rm -f /etc/ssh/ssh_host_*
ssh-keygen -A >/dev/null
mkdir -p /root/.ssh && chmod 0700 /root/.ssh
systemctl start ssh.service' sh "${CONTENT[$h]}" >/dev/null
  cat "$WORK/id_ed25519.pub" | inhost "$h" sh -c 'cat > /root/.ssh/authorized_keys; chmod 0600 /root/.ssh/authorized_keys'
  ADDR[$h]=$(inhost "$h" ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
  # The host key, read on the server's console (out of band), goes into known_hosts.
  echo "${ADDR[$h]} $(inhost "$h" cat /etc/ssh/ssh_host_ed25519_key.pub)" >> "$WORK/known_hosts"
  echo "$h at ${ADDR[$h]}: legacy-$h on port ${PORT[$h]}, sshd"
done

step "2. The cloud (a DigitalOcean simulator whose droplets boot as testbed hosts) and a master"
"$BRINE" cloud sim --boot testbed --boot-delay 0s --cluster "$SIM" --domain example.test --json > "$WORK/sim.json" 2> "$WORK/sim.log" &
PIDS+=($!)
for _ in $(seq 600); do [ -s "$WORK/sim.json" ] && break; sleep 0.1; done
read -r URL TOKEN BRIDGE < <(python3 -c 'import json,sys; j=json.loads(open(sys.argv[1]).readline()); print(j["url"], j["token"], j["bridge"])' "$WORK/sim.json")
export DIGITALOCEAN_TOKEN=$TOKEN
cat > "$WORK/master.hcl" <<HCL
data_dir       = "$WORK/master"
publish_addr   = "$BRIDGE:4505"
request_addr   = "$BRIDGE:4506"
bootstrap_addr = "$BRIDGE:4580"
heartbeat      = "1s"
HCL
"$BRINE" master -c "$WORK/master.hcl" > "$WORK/master.log" 2>&1 &
PIDS+=($!)
SOCK=$WORK/master/master.sock
for _ in $(seq 300); do "$BRINE" key list --socket "$SOCK" >/dev/null 2>&1 && break; sleep 0.1; done
echo "master at $BRIDGE, simulator at $URL"

step "3. Enrol the legacy servers over SSH"
"$BRINE" enroll --socket "$SOCK" --known-hosts "$WORK/known_hosts" --identity "$WORK/id_ed25519" --groups legacy \
  "ssh://root@${ADDR[web1]}" "ssh://root@${ADDR[app1]}" "ssh://root@${ADDR[db1]}"

step "4. Capture them: a site with what they share and what each has of its own"
# The testbed's own apt source (a directory of this machine mounted into its hosts) is no part
# of the servers: leave it out.
"$BRINE" capture group:legacy --out "$WORK/site" --socket "$SOCK" --exclude /etc/apt/sources.list.d/brine-testbed.list
cat "$WORK/site/site.hcl"
ls "$WORK/site"
unchanged group:legacy

step "5. Clone them: new droplets that enrol by themselves"
cat > "$WORK/cloud.hcl" <<HCL
provider "digitalocean" {
  api_url = "$URL"
}
profile "clone" {
  region     = "ams3"
  size       = "s-1vcpu-1gb"
  image      = "debian-12-x64"
  groups     = ["clone"]
  bundles    = []
}
HCL
"$BRINE" cloud create clone new-web1 new-app1 new-db1 -c "$WORK/cloud.hcl" --socket "$SOCK" --poll-interval 200ms

step "6. Converge each clone with the capture of the server it replaces"
cat >> "$WORK/site/site.hcl" <<HCL

# Added by the runbook: the clones get what their legacy server got.
assign "new-web1,new-app1,new-db1" { bundles = ["common"] }
assign "new-web1" { bundles = ["web1"] }
assign "new-app1" { bundles = ["app1"] }
assign "new-db1"  { bundles = ["db1"] }
HCL
"$BRINE" converge 'new-*' --site "$WORK/site" --socket "$SOCK"
unchanged 'new-*'

step "7. The clones serve what the legacy servers serve"
"$BRINE" cloud list -c "$WORK/cloud.hcl" --json > "$WORK/droplets.json"
for h in web1 app1 db1; do
  new=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    l = l.strip()
    if not l: continue
    d = json.loads(l)
    for x in (d if isinstance(d, list) else d.get("droplets", [d])):
        if x.get("name") == sys.argv[2]: print(x.get("public_ip") or x.get("private_ip"))' "$WORK/droplets.json" "new-$h" | head -1)
  old_body=$(curl -fsS --max-time 10 "http://${ADDR[$h]}:${PORT[$h]}/index.html")
  new_body=$(curl -fsS --max-time 10 "http://$new:${PORT[$h]}/index.html")
  if [ "$old_body" != "$new_body" ]; then
    echo "$h: the clone new-$h ($new) serves something else: '$new_body' vs '$old_body'" >&2
    exit 1
  fi
  echo "$h (${ADDR[$h]}) and new-$h ($new) serve the same content: $new_body"
  eval "NEW_$h=$new"
done

step "8. Cut DNS over to the clones, and back"
"$BRINE" cloud dns set example.test www A "${ADDR[web1]}" -c "$WORK/cloud.hcl"
"$BRINE" cloud dns set example.test www A "$NEW_web1" -c "$WORK/cloud.hcl" --ttl 60
"$BRINE" cloud dns list example.test -c "$WORK/cloud.hcl"
"$BRINE" cloud dns set example.test www A "${ADDR[web1]}" -c "$WORK/cloud.hcl"
"$BRINE" cloud dns list example.test -c "$WORK/cloud.hcl" | grep -q "${ADDR[web1]}"
echo
echo "migration runbook: done"
