#!/usr/bin/env bash
# Installs, idempotently, the Debian packages brine's tests and demo use. Fast when everything is
# there (one dpkg-query per package); otherwise apt-get update + install, which needs root.
#   iptables, ufw, tinc:          the network resources and the demo's mesh and firewall
#   dpkg-dev:                     dpkg-scanpackages, for the test apt repository
#   iproute2, kmod, util-linux:   the testbed (netns, veth, bridge, overlayfs, nsenter, unshare)
#   iputils-ping, netcat-openbsd: mesh and firewall checks, the stand-in daemons of the demo
#   procps, psmisc, make, git:    process checks and the build itself
#   python3-zmq:                  libzmq (pyzmq), a ZeroMQ peer nobody here wrote, for the interop test
#   conntrack:                    `conntrack -L`, the connection tracking table, in the ufw tests' failure output
#   systemd:                      PID 1 of the testbed's systemd hosts (Options.Systemd)
#   postgresql:                   the server binaries (initdb, postgres) of the tests' private clusters (internal/pgtest)
#   curl:                         the cloud bootstrap's download in testbed droplets; the mirror proxy test
#   openssh-server:               the real sshd in testbed hosts that `brine enroll` connects to
set -euo pipefail
pkgs=(iptables ufw tinc python3-zmq dpkg-dev iproute2 iputils-ping netcat-openbsd kmod util-linux procps psmisc make git ca-certificates conntrack systemd postgresql curl openssh-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "brine needs these Debian packages: ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
