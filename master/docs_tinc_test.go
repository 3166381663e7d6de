package master_test

import (
	"os"
	"strings"
	"testing"

	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
)

// The tinc mesh example of docs/states.md compiles for a member with the peers() the master
// gives it: only facts and functions that exist.
func TestDocsTincExampleCompiles(t *testing.T) {
	doc, err := os.ReadFile("../docs/states.md")
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for _, part := range strings.Split(string(doc), "```hcl\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		if strings.Contains(body, `tinc_network "ghost"`) && strings.Contains(body, "peers(") {
			block = body
		}
	}
	if block == "" {
		t.Fatal("no tinc_network example with peers() in docs/states.md")
	}
	b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(block)}}
	mod, diags := states.Load(b, builtin.Types())
	if diags.HasErrors() || len(mod.CallDiags) > 0 || len(mod.PeerTargets) != 1 || mod.PeerTargets[0] != "group:ghost" {
		t.Fatalf("peers() targets %v %v %v", mod.PeerTargets, diags, mod.CallDiags)
	}
	peer := func(id, addr string) map[string]any {
		return map[string]any{"id": id, "groups": []any{"ghost"}, "os": "linux",
			"attested": map[string]any{"address": addr, "tinc_pubkey": map[string]any{"ghost": "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"}}}
	}
	peers := map[string][]map[string]any{"group:ghost": {peer("app1", "192.0.2.1"), peer("db1", "192.0.2.2")}}
	if d := master.Validate(mod, master.MinionInfo{ID: "db1", Groups: []string{"ghost"}, Facts: map[string]any{"os": "linux"}}, peers, nil, nil); d.HasErrors() {
		t.Fatalf("the docs' tinc example does not compile: %s", d.Error())
	}
}
