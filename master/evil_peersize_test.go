package master_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// A minion's facts are copied into every job whose bundle names it in peers(), once per peers()
// target, and every minion of the job receives them: a compromised minion that reports 1 MiB of
// facts (within the limits of a report) made a job with 8 peers() targets 7.9 MB for every host
// of the fleet, each apply and each schedule round. What its claims put into a peers() entry is
// bounded: beyond maxPeerClaims the entry holds only what the master decides (id, groups,
// attested), and the mesh built from those goes on.
func TestEvilMinionFactsDoNotInflateOthersJobs(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "good1", []string{"mesh"})
	evil := evilMinion(t, m, "evil", []string{"mesh"}, nil)
	f := map[string]any{"os": "linux"}
	for k := range 16 {
		f[fmt.Sprintf("k%d", k)] = strings.Repeat("x", 60<<10)
	}
	if r, _, ok := evil.request(wire.KindFacts, f); !ok || !r.OK {
		t.Fatalf("facts within the limits refused: %+v", r)
	}
	var calls []string
	for i := range 8 {
		calls = append(calls, fmt.Sprintf("[for p in peers(\"group:mesh%s\") : \"${p.id} ${p.attested.address} ${try(p.os, \"-\")} ${strlen(try(p.k0, \"\"))}\"]", strings.Repeat("*", i)))
	}
	b := bundle(t, map[string]string{"main.hcl": `
variable "root" {
  type = string
}

file "peers" {
  path    = "${var.root}/peers"
  content = join("\n", distinct(concat(` + strings.Join(calls, ", ") + `)))
}
`})
	pub := m.Published(t)
	got := planOf(t, m, b, t.TempDir(), "good1")["good1"]["file.peers"]
	largest := 0
	for len(pub) > 0 {
		n := 0
		for _, p := range <-pub {
			n += len(p)
		}
		largest = max(largest, n)
	}
	if largest > 1<<20 {
		t.Errorf("good1's job took %d bytes: the evil minion's facts are in it", largest)
	}
	// evil is in peers() with its id and attested address, without its claims; good1 keeps its own.
	if !strings.Contains(got.Diff, "+evil 127.0.0.1 - 0") || !strings.Contains(got.Diff, "+good1 127.0.0.1 linux 0") {
		t.Errorf("good1 renders:\n%s", got.Diff)
	}
}
