package master_test

import (
	"strings"
	"testing"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/states"
)

// examples/ghost-pro derives a member's VPN address from the last part of its attested address
// ("10.8.0.${split(".", p.attested.address)[3]}"), as a fleet on one /24 may. A compromised
// minion chooses where it connects to the master from: from an address ending like a good
// host's (here both connect from 127.0.0.1), it got the good host's VPN address, and every
// member's tinc hosts files gave that address to both, so that tincd could send the good host's
// mesh traffic to it. Two members with one VPN address (or a member with this host's) fail the
// tinc_network on the hosts that render it, naming both, and nothing of it changes.
func TestEvilMinionCannotShareAVPNAddress(t *testing.T) {
	m := master.TestMaster(t)
	good := tincKey(t)
	acceptedMinion(t, m, "good1", []string{"mesh"}, withFacts(map[string]any{"os": "linux", "tinc_pubkey": map[string]any{"mesh": good}}))
	evil := evilMinion(t, m, "evil", []string{"mesh"}, nil)
	if r, _, ok := evil.request(wire.KindFacts, map[string]any{"os": "linux", "tinc_pubkey": map[string]any{"mesh": tincKey(t)}}); !ok || !r.OK {
		t.Fatalf("facts refused: %+v", r)
	}
	for name, self := range map[string]string{
		"members":   `address = "10.77.0.${split(".", [for p in peers("group:mesh") : p.attested.address if p.id == minion.id][0])[3]}/24"`,
		"self only": `address = "10.77.0.1/24"`,
	} {
		filter := ""
		if name == "self only" {
			filter = " if p.id != minion.id"
		}
		b := bundle(t, map[string]string{"main.hcl": `
variable "root" {
  type = string
}

tinc_network "brinetestvpn" {
  ` + self + `
  running = false
  members = [for p in peers("group:mesh") : {
    name        = p.id
    address     = p.attested.address
    vpn_address = "10.77.0.${split(".", p.attested.address)[3]}"
    public_key  = try(p.attested.tinc_pubkey.mesh, "")
  }` + filter + `]
}
`})
		got := planOf(t, m, b, t.TempDir(), "good1")["good1"]["tinc_network.brinetestvpn"]
		if got.Status != states.StatusFailed || !strings.Contains(got.Error, "10.77.0.1") || !strings.Contains(got.Error, "evil") {
			t.Errorf("%s: good1's tinc network with the evil minion on its VPN address: %s %s\n%s", name, got.Status, got.Error, got.Diff)
		}
	}
}

func withFacts(f map[string]any) func(*minion.Config) {
	return func(c *minion.Config) { c.FactsFunc = func() map[string]any { return f } }
}
