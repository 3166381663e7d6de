// Command brine-minion is brine's minion alone: what `brine minion` runs, in a binary that
// links the minion, the states engine and its resources and nothing else (no master, cloud
// client, simulator, testbed or operator commands). Hosts run it: the Debian package's
// brine-minion unit, the cloud bootstrap and `brine enroll` install it as /usr/bin/brine-minion.
// It maps a third of the full binary's pages (BENCHMARKS.md, "One minion's memory").
package main

import (
	"os"

	"github.com/brinecm/brine/internal/daemoncli"
	"github.com/brinecm/brine/internal/minioncli"
)

// version is set at build time with -ldflags "-X main.version=...", as brine's is.
var version = "dev"

func main() {
	os.Exit(minioncli.Main(daemoncli.Version(version), os.Args[1:]))
}
