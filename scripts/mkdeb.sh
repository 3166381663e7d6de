#!/usr/bin/env bash
# Builds brine's Debian package from a staged tree with dpkg-deb (no packaging tool beyond dpkg):
#   scripts/mkdeb.sh BINARY OUTDIR [VERSION [MINION_BINARY]]
# VERSION defaults to `git describe`, made into a version dpkg accepts. MINION_BINARY (the
# minion-only binary, /usr/bin/brine-minion, which the brine-minion unit runs) defaults to
# brine-minion beside BINARY, as `make build` puts it. Prints the .deb's path.
set -euo pipefail
bin=$1 out=$2 ver=${3:-$(git describe --tags --always --dirty 2>/dev/null || echo 0)}
minion=${4:-$(dirname "$bin")/brine-minion}
[ -f "$minion" ] || { echo "mkdeb: no minion binary $minion (make build makes bin/brine-minion)" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)

# A Debian version: digits first, then [A-Za-z0-9.+~] (no '-': that would start a revision).
# v1.2.3-4-gabc1234-dirty -> 1.2.3+4+gabc1234+dirty; no tag (a bare commit abc1234) -> 0~gitabc1234.
ver=${ver#v}
ver=$(printf '%s' "$ver" | tr -- '-_' '++' | tr -cd 'A-Za-z0-9.+~')
case $ver in [0-9]*.*) ;; *) ver="0~git$ver" ;; esac

arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
install -D -m 0755 "$bin" "$stage/usr/bin/brine"
install -D -m 0755 "$minion" "$stage/usr/bin/brine-minion"
install -D -m 0644 "$here/dist/systemd/brine-master.service" "$stage/lib/systemd/system/brine-master.service"
install -D -m 0644 "$here/dist/systemd/brine-minion.service" "$stage/lib/systemd/system/brine-minion.service"
install -D -m 0644 "$here/dist/debian/master.hcl" "$stage/etc/brine/master.hcl"
install -D -m 0600 "$here/dist/debian/minion.hcl" "$stage/etc/brine/minion.hcl"
install -d -m 0755 "$stage/DEBIAN"
install -m 0755 "$here/dist/debian/postinst" "$here/dist/debian/prerm" "$here/dist/debian/postrm" "$stage/DEBIAN/"
printf '/etc/brine/master.hcl\n/etc/brine/minion.hcl\n' >"$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: brine
Version: $ver
Architecture: $arch
Maintainer: brine developers <brine@localhost>
Installed-Size: $size
Section: admin
Priority: optional
Homepage: https://github.com/brinecm/brine
Description: push configuration management: master and minion
 brine pushes signed HCL state bundles from a master to minions over ZeroMQ;
 minions verify and apply them idempotently. Two static binaries: /usr/bin/brine
 (master, operator CLI, everything) and /usr/bin/brine-minion (the minion alone),
 with the units brine-master and brine-minion (not enabled: enable the one
 this host runs).
CONTROL
mkdir -p "$out"
deb="$out/brine_${ver}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
echo "$deb"
