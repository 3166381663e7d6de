#!/usr/bin/env bash
# make demo: brine's main job on built-in defaults. A master and four testbed hosts (core, cache,
# app, db) on this machine, each running a real minion that enrols with a token; one apply of the
# reference deployment (examples/ghost-pro) converges them: packages, a tinc mesh, ufw denying all
# but SSH, the services. The demo proves the mesh and the firewall, applies again (0 changes),
# prints a summary with timings and removes everything. It needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "make demo builds a real 4-host cluster with network namespaces and overlay mounts: run it as root (sudo make demo)" >&2
  exit 1
fi
exec ./bin/brine demo "$@"
