// Package minionbin names the minion-only binary and finds it: what the paths that install a
// minion on a host (the Debian package, the master's bootstrap endpoint for cloud droplets,
// `brine enroll`, the demo) install as /usr/bin/brine-minion.
package minionbin

import (
	"os"
	"path/filepath"
)

// Name is the minion-only binary's name (cmd/brine-minion). The full brine binary run under
// this name is brine-minion too (cmd/brine's runAsMinion).
const Name = "brine-minion"

// Path is where hosts have it: the Debian package, the cloud bootstrap and `brine enroll`
// install it there, and the brine-minion unit runs it.
const Path = "/usr/bin/" + Name

// Beside returns the brine-minion binary in exe's directory (bin/ after `make build`,
// /usr/bin from the Debian package) when there is a regular file of that name, else exe
// itself: the full binary, which is brine-minion when installed under that name.
func Beside(exe string) string {
	p := filepath.Join(filepath.Dir(exe), Name)
	if p == exe {
		return exe
	}
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return p
	}
	return exe
}
