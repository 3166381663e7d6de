#!/usr/bin/env bash
# make demo: brine's main job on built-in defaults. Until the master/minion demo lands this applies
# the example bundle on this host, into a scratch directory, twice: the second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d /tmp/brine-demo.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
echo "== plan (changes nothing)"
./bin/brine local plan examples/hello --var root="$scratch/root"
echo
echo "== apply"
./bin/brine local apply examples/hello --var root="$scratch/root"
echo
echo "== apply again: nothing to do"
./bin/brine local apply examples/hello --var root="$scratch/root" -v
echo
echo "== what was written"
find "$scratch/root" -type f | sort | sed "s|$scratch/||"
cat "$scratch/root/etc/motd"
