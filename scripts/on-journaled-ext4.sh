#!/usr/bin/env bash
# Runs a command with TMPDIR on a fresh journalled ext4, made in a file on this machine's disk
# and loop-mounted, then removes it. For the benchmarks that write on disk: a server's ext4
# has a journal, this VM's root filesystem has none, and without one ext4 checks every
# recently freed inode when it creates a file (BENCHMARKS.md, "The 50-minion apply on a
# journalled ext4"). The loop device passes each flush on to the image file, so every fsync
# still reaches the disk. Needs root.
#   ./scripts/on-journaled-ext4.sh env RUNS=5 SIZES=50 ./scripts/bench-salt-compare.sh
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
size=${EXT4_SIZE:-4G}
img=$(mktemp /var/tmp/brine-ext4.XXXXXX)
mnt=$(mktemp -d /tmp/brine-ext4-mnt.XXXXXX)
cleanup() {
  umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  rmdir "$mnt" 2>/dev/null || true
  rm -f "$img"
}
trap cleanup EXIT
truncate -s "$size" "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" "$mnt"
[ -d "/proc/fs/jbd2/$(basename "$(findmnt -n -o SOURCE "$mnt")")-8" ] || { echo "$mnt: no journal" >&2; exit 1; }
TMPDIR=$mnt "$@"
