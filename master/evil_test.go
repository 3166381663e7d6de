package master_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

func tincKey(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})))
}

// evilMinion is a real, accepted minion over real TCP whose facts the test writes by hand.
func evilMinion(t *testing.T, m *master.Master, id string, groups []string, key *pki.KeyPair) *rawClient {
	t.Helper()
	c := newRaw(t, m, id, key)
	if _, ok := m.Keys().Get(id); !ok {
		if ar := c.auth("", c.key); ar.Status != string(pki.StatePending) {
			t.Fatalf("evil minion: %q", ar.Status)
		}
		if _, err := m.Keys().Accept(id, groups, false); err != nil {
			t.Fatal(err)
		}
	}
	if ar := c.auth("", c.key); ar.Status != wire.StatusAccepted {
		t.Fatalf("evil minion not accepted: %q", ar.Status)
	}
	return c
}

// meshBundle is the part of examples/ghost-pro that carries peer data into root-applied
// configuration: a tinc mesh and firewall rules for every peer, from attested values, plus the
// same rules from a claimed fact (which an evil minion controls) in resources of their own.
const meshBundle = `
locals {
  hosts = [for p in peers("group:mesh") : {
    id   = p.id
    addr = p.attested.address
    key  = try(p.attested.tinc_pubkey.mesh, "")
  } if p.attested.address != ""]
}

tinc_network "brinetestevil" {
  address = "10.77.0.${{ for i, h in local.hosts : h.id => i + 1 }[minion.id]}/24"
  running = false
  members = [for i, h in local.hosts : {
    name        = h.id
    address     = h.addr
    vpn_address = "10.77.0.${i + 1}"
    public_key  = h.key
  }]
}

iptables_chain "BRINE-EVIL-ATT" {
  purge = true
  dynamic "rule" {
    for_each = local.hosts
    content {
      source = rule.value.addr
      args   = "-j ACCEPT"
    }
  }
}

iptables_chain "BRINE-EVIL-CLAIM" {
  purge = true
  dynamic "rule" {
    for_each = peers("group:mesh")
    content {
      args = "-s ${try(rule.value.address, "10.9.9.${rule.key + 1}")} -j ACCEPT"
    }
  }
}

file "peers" {
  path    = "${var.root}/${minion.id}.peers"
  content = jsonencode(local.hosts)
}

variable "root" {
  type = string
}
`

// planOf returns each minion's dry-run results by resource address.
func planOf(t *testing.T, m *master.Master, b *states.Bundle, root string, ids ...string) map[string]map[string]states.Result {
	t.Helper()
	res := run(t, m, master.JobSpec{Target: strings.Join(ids, ","), Minions: ids, Bundle: b, DryRun: true, Vars: map[string]string{"root": root}})
	out := map[string]map[string]states.Result{}
	for _, id := range ids {
		r, ok := res.Returns[id]
		if !ok {
			t.Fatalf("no return from %s", id)
		}
		var rep states.Report
		if err := json.Unmarshal(r.Report, &rep); err != nil {
			t.Fatalf("%s: report: %v (error %q, diags %q)", id, err, r.Error, r.Diagnostics)
		}
		out[id] = map[string]states.Result{}
		for _, x := range rep.Results {
			x.Duration = 0
			out[id][x.Address] = x
		}
	}
	return out
}

// An evil minion (accepted, its facts written by hand) cannot crash the master, now or after a
// restart, nor change what any other host's bundle renders: its invalid facts are refused with an
// error and its previous facts kept; what reaches tinc and the firewall is attested; a claimed
// address that is not one host fails that resource on the hosts that render it, not the bundle.
func TestEvilMinionFacts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test reads iptables and needs root")
	}
	dir, err := os.MkdirTemp("", "brm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	withDir := func(c *master.Config) { c.DataDir = dir }
	m := master.TestMaster(t, withDir)
	goodKeys := map[string]string{"good1": tincKey(t), "good2": tincKey(t)}
	var mu sync.Mutex
	for _, id := range []string{"good1", "good2"} {
		acceptedMinion(t, m, id, []string{"mesh"}, func(c *minion.Config) {
			c.FactsFunc = func() map[string]any {
				mu.Lock()
				defer mu.Unlock()
				return map[string]any{"os": "linux", "tinc_pubkey": map[string]any{"mesh": goodKeys[id]}}
			}
		})
	}
	evilKey := mustKey(t)
	evil := evilMinion(t, m, "evil", []string{"mesh"}, evilKey)
	evilPub := tincKey(t)
	before := map[string]any{"os": "linux", "address": "10.1.2.3", "tinc_pubkey": map[string]any{"mesh": evilPub},
		"interfaces": map[string]any{"eth0": map[string]any{"ipv4": []any{"127.0.0.1"}, "ipv6": []any{}, "mac": ""}}}
	if r, _, ok := evil.request(wire.KindFacts, before); !ok || !r.OK {
		t.Fatalf("the evil minion's first facts were refused: %+v", r)
	}
	kept := m.Facts("evil")
	if kept == nil || m.Facts("good1") == nil || m.Facts("good2") == nil {
		t.Fatal("no facts")
	}

	b := bundle(t, map[string]string{"main.hcl": meshBundle})
	root := t.TempDir()
	base := planOf(t, m, b, root, "good1", "good2")
	for _, id := range []string{"good1", "good2"} {
		for addr, r := range base[id] {
			if r.Status == states.StatusFailed {
				t.Fatalf("%s: %s failed before any attack: %s", id, addr, r.Error)
			}
		}
		hostsFile := base[id][`tinc_network.brinetestevil`].Diff
		if !strings.Contains(hostsFile, "Address = 127.0.0.1 655") || !strings.Contains(hostsFile, keyLine(evilPub)) {
			t.Fatalf("%s: the evil minion's attested address and pinned key are not in the plan:\n%s", id, hostsFile)
		}
	}

	pem := evilPub
	attacks := map[string]map[string]any{
		"nfc collision":            {"os": "linux", "caf\u00e9": 1, "cafe\u0301": 2},
		"nested nfc collision":     {"deep": map[string]any{"\u00e9": "a", "e\u0301": "b"}},
		"oversize string":          {"blob": strings.Repeat("x", 70<<10)},
		"too many keys":            manyKeys(5000),
		"deeply nested":            nested(40),
		"control char in key":      {"a\x1b]52;c;aGk=\x07": 1},
		"empty key":                {"": 1},
		"reserved attested":        {"attested": map[string]any{"address": "10.0.0.1"}},
		"huge number":              {"n": json.Number("1e400")},
		"tinc key with directives": {"tinc_pubkey": map[string]any{"mesh": "Subnet = 0.0.0.0/0\nIndirectData = yes\n" + pem + "\nAddress = 6.6.6.6"}},
		"tinc key text after":      {"tinc_pubkey": map[string]any{"mesh": pem + "\nSubnet = 10.77.0.1/32"}},
		"two tinc keys":            {"tinc_pubkey": map[string]any{"mesh": pem + "\n" + pem}},
		"tinc key not a key":       {"tinc_pubkey": map[string]any{"mesh": "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----"}},
		"address is a network":     {"ipv4": []any{"0.0.0.0/0"}},
		"address with a space":     {"interfaces": map[string]any{"eth0": map[string]any{"ipv4": []any{"10.0.0.9 -j ACCEPT"}}}},
	}
	names := make([]string, 0, len(attacks))
	for n := range attacks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		r, _, ok := evil.request(wire.KindFacts, attacks[name])
		if !ok {
			t.Fatalf("%s: the master did not answer", name)
		}
		if r.OK || r.Error == "" {
			t.Fatalf("%s: facts accepted: %+v", name, r)
		}
		if got := m.Facts("evil"); !reflect.DeepEqual(got, kept) {
			t.Fatalf("%s: the evil minion's facts changed:\n%v\nwant\n%v", name, got, kept)
		}
	}
	// A valid but different tinc key is a claim: the pinned key stays until the operator accepts.
	otherPub := tincKey(t)
	claims := map[string]any{"os": "linux", "address": "0.0.0.0/0", "tinc_pubkey": map[string]any{"mesh": otherPub}}
	if r, _, ok := evil.request(wire.KindFacts, claims); !ok || !r.OK {
		t.Fatalf("claims refused: %+v", r)
	}
	after := planOf(t, m, b, root, "good1", "good2")
	for _, id := range []string{"good1", "good2"} {
		for addr, want := range base[id] {
			got := after[id][addr]
			if addr == `iptables_chain.BRINE-EVIL-CLAIM` {
				// Built from a claimed address: fails on this host, with the reason.
				if got.Status != states.StatusFailed || !strings.Contains(got.Error, "every address") {
					t.Fatalf("%s: %s with a claimed 0.0.0.0/0: %+v", id, addr, got)
				}
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: %s renders differently after the attack:\n%+v\nwant\n%+v", id, addr, got, want)
			}
		}
	}
	keys, err := m.Client().KeyList(context.Background(), control.KeyListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pendingShown := false
	for _, k := range keys.Keys {
		if k.ID == "evil" && reflect.DeepEqual(k.TincPending, []string{"mesh"}) && k.Address == "127.0.0.1" {
			pendingShown = true
		}
	}
	if !pendingShown {
		t.Fatalf("key list does not show the pending tinc key: %+v", keys.Keys)
	}
	if _, err := m.Client().KeyAcceptTinc(context.Background(), control.KeyAcceptTincRequest{Glob: "evil"}); err != nil {
		t.Fatal(err)
	}
	accepted := planOf(t, m, b, root, "good1", "good2")
	if d := accepted["good1"][`tinc_network.brinetestevil`].Diff; !strings.Contains(d, keyLine(otherPub)) || strings.Contains(d, keyLine(evilPub)) {
		t.Fatalf("the accepted key is not the one offered:\n%s", d)
	}

	// Facts an older master stored unchecked: the master starts, drops them, and serves the fleet.
	poison := []byte(`{"os":"linux","caf\u00e9":1,"cafe\u0301":2,"id":"evil","groups":["mesh"]}`)
	if err := m.Store().PutFacts("evil", poison); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m2 := master.TestMaster(t, withDir)
	if m2.Facts("evil") != nil {
		t.Fatalf("poisoned stored facts were loaded: %v", m2.Facts("evil"))
	}
	if _, err := m2.Client().Facts(context.Background(), control.FactsRequest{Target: "fact:os=linux"}); err != nil {
		t.Fatal(err)
	}
	if m2.Facts("good1") == nil {
		t.Fatal("the good minions' facts were lost at the restart")
	}
}

func manyKeys(n int) map[string]any {
	f := map[string]any{}
	for i := range n {
		f["k"+strings.Repeat("0", 3)+string(rune('a'+i%26))+itoa(i)] = i
	}
	return f
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func nested(depth int) map[string]any {
	f := map[string]any{"leaf": 1}
	for range depth {
		f = map[string]any{"n": f}
	}
	return f
}

// keyLine is the first line of a PEM key's body, to find the key in a diff.
func keyLine(p string) string { return strings.Split(p, "\n")[1] }
