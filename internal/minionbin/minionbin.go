// Package minionbin names the minion-only binary and finds it: what the paths that install a
// minion on a host (the Debian package, the master's bootstrap endpoint for cloud droplets,
// `brine enroll`, the demo) install as /usr/bin/brine-minion.
package minionbin

import (
	"debug/buildinfo"
	"os"
	"path/filepath"
	"runtime/debug"
)

// Name is the minion-only binary's name (cmd/brine-minion). The full brine binary run under
// this name is brine-minion too (cmd/brine's runAsMinion).
const Name = "brine-minion"

// Path is where hosts have it: the Debian package, the cloud bootstrap and `brine enroll`
// install it there, and the brine-minion unit runs it.
const Path = "/usr/bin/" + Name

// Beside returns the brine-minion binary in exe's directory (bin/ after `make build`,
// /usr/bin from the Debian package) when there is a regular file of that name built from the
// same source as exe, else exe itself: the full binary, which is brine-minion when installed
// under that name. A brine-minion left from an older build (`go build ./cmd/brine` alone after
// a pull) is not sent to hosts in place of this version.
func Beside(exe string) string {
	p := filepath.Join(filepath.Dir(exe), Name)
	if p == exe {
		return exe
	}
	st, err := os.Stat(p)
	if err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return exe
	}
	a, errA := buildinfo.ReadFile(exe)
	b, errB := buildinfo.ReadFile(p)
	if errA == nil && errB == nil && !SameSource(a, b) {
		return exe
	}
	return p
}

// SameSource reports whether two builds are known to come from the same source: the same
// commit and working tree state, as `go build` stamps them (vcs.revision, vcs.modified), and
// the same Go. Builds without a commit stamp (outside a git checkout, -buildvcs=false) are
// taken as the same.
func SameSource(a, b *debug.BuildInfo) bool {
	if a.GoVersion != b.GoVersion {
		return false
	}
	ra, rb := setting(a, "vcs.revision"), setting(b, "vcs.revision")
	if ra == "" || rb == "" {
		return true
	}
	return ra == rb && setting(a, "vcs.modified") == setting(b, "vcs.modified")
}

func setting(bi *debug.BuildInfo, key string) string {
	for _, s := range bi.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}
