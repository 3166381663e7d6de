package states

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
)

func testTincKey(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	return strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})))
}

func TestParseTincPublicKey(t *testing.T) {
	key := testTincKey(t)
	other := testTincKey(t)
	if got, err := ParseTincPublicKey("\n  " + key + "\n\n"); err != nil || got != key {
		t.Fatalf("a valid key: %q, %v", got, err)
	}
	withHeader := strings.Replace(key, "-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1)
	for name, bad := range map[string]string{
		"directives before": "Subnet = 0.0.0.0/0\nIndirectData = yes\n" + key,
		"directive after":   key + "\nAddress = 198.51.100.9",
		"two keys":          key + "\n" + other,
		"headers":           withHeader,
		"other type":        strings.ReplaceAll(key, "RSA PUBLIC KEY", "PUBLIC KEY"),
		"not a key":         "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----",
		"empty":             "",
		"ssh key":           "ssh-rsa AAAAB3NzaC1yc2E",
	} {
		if got, err := ParseTincPublicKey(bad); err == nil {
			t.Errorf("%s: accepted as %q", name, got)
		}
	}
}

func TestCheckDataNoPanic(t *testing.T) {
	if err := CheckData(map[string]any{"caf\u00e9": 1, "cafe\u0301": 2}); err == nil {
		t.Fatal("keys equal after NFC were accepted")
	}
	if err := CheckData(map[string]any{"ok": []any{"a", 1.0}}); err != nil {
		t.Fatal(err)
	}
}

// A peer's bad data (a key with directives around it, an address with a space, an address that
// is every network) fails the resource that renders it on this host; the bundle still compiles,
// and the other resources run. The same value written in the bundle is a compile error.
func TestPeerDataFailsOneResource(t *testing.T) {
	old, oldSystemd := tincRoot, tincSystemd
	tincRoot, tincSystemd = t.TempDir(), func() bool { return false }
	t.Cleanup(func() { tincRoot, tincSystemd = old, oldSystemd })
	key := testTincKey(t)
	src := `
tinc_network "mesh" {
  name     = "a"
  address  = "10.8.0.1/24"
  key_size = 1024
  running  = false
  members  = [for i, p in peers("*") : { name = p.id, address = p.addr, vpn_address = "10.8.0.${i + 2}", public_key = p.key }]
}
ufw {
  rule "peers" {
    from = peers("*")[0].addr
    port = "22"
  }
}
iptables_rule "peer" {
  chain  = "INPUT"
  source = peers("*")[0].addr
  rule   = "-j ACCEPT"
}
file "marker" {
  path    = "` + filepath.Join(t.TempDir(), "marker") + `"
  content = "ok"
}
`
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}
	peers := func(addr, k string) Options {
		return Options{Minion: Minion{ID: "a"}, Peers: map[string][]map[string]any{"*": {{"id": "evil", "addr": addr, "key": k}}}}
	}
	for name, o := range map[string]Options{
		"key with directives": peers("192.0.2.9", "Subnet = 0.0.0.0/0\n"+key+"\nAddress = 6.6.6.6"),
		"address with space":  peers("192.0.2.9 -j ACCEPT", key),
		"every address":       peers("0.0.0.0/0", key),
		"empty address":       peers("", key),
	} {
		g, diags := Compile(b, o)
		if diags.HasErrors() {
			t.Fatalf("%s: the bundle does not compile: %s", name, diags.Error())
		}
		rep := Run(context.Background(), g, true)
		failed := map[string]string{}
		for _, r := range rep.Results {
			if r.Status == StatusFailed {
				failed[r.Address] = r.Error
			}
			if r.Type == "file" && r.Status != StatusChanged {
				t.Errorf("%s: an unrelated resource did not run: %+v", name, r)
			}
		}
		if len(failed) == 0 {
			t.Errorf("%s: no resource failed", name)
		}
		for addr, e := range failed {
			if !strings.Contains(e, "refused data") && !strings.Contains(addr, "iptables") && !strings.Contains(addr, "ufw") {
				t.Errorf("%s: %s failed for another reason: %s", name, addr, e)
			}
		}
		if name == "key with directives" {
			if _, bad := failed["tinc_network.mesh"]; !bad {
				t.Errorf("%s: tinc_network did not fail: %v", name, failed)
			}
		} else if _, bad := failed["iptables_rule.peer"]; !bad || !strings.Contains(failed["iptables_rule.peer"], "refused data") {
			t.Errorf("%s: iptables_rule did not fail on the data: %v", name, failed)
		}
	}
	// A valid peer: the hosts file holds the key and address, each on its own line.
	g, diags := Compile(b, peers("192.0.2.9", "\n"+key+"\n"))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var tinc *tincNet
	for _, n := range g.nodes {
		if tn, ok := n.res.(*tincNet); ok {
			tinc = tn
		}
	}
	if tinc == nil {
		t.Fatal("no tinc_network")
	}
	files, _ := tinc.files("(self)")
	want := "# Managed by brine.\nAddress = 192.0.2.9 655\nSubnet = 10.8.0.2/32\n\n" + key + "\n"
	if got := string(files["hosts/evil"]); got != want {
		t.Fatalf("hosts/evil:\n%s\nwant\n%s", got, want)
	}
	// Written in the bundle, the same mistakes are compile errors with a position.
	wantCompileError(t, `ufw {
  rule "x" {
    from = "0.0.0.0/0"
  }
}`, "every address")
	wantCompileError(t, `ufw {
  rule "x" {
    from = ""
  }
}`, "not one address")
	wantCompileError(t, `iptables_rule "x" {
  chain = "INPUT"
  rule  = "-s 10.0.0.1,0.0.0.0/0 -j ACCEPT"
}`, "not one address")
	wantCompileError(t, "tinc_network \"mesh\" {\n name = \"a\"\n address = \"10.8.0.1/24\"\n members = [{ name = \"b\", vpn_address = \"10.8.0.2\", address = \"1.2.3.4\\nSubnet = 0.0.0.0/0\" }]\n}", "one host name or IP address")
}
