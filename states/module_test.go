package states

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// A module is loaded once and compiled for many minions: each compile sees its own minion, the
// module's blocks are not changed by it, and what the master reads before any minion (peers()
// targets, secret names, variables) is there without a compile.
func TestModuleLoadedOnceCompiledForEach(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(`
variable "zone" { default = "a" }
variable "token" {
  default   = "t"
  sensitive = true
}
probe "p" { note = "${minion.id}/${var.zone}/${length(peers("group:db"))}/${secret("k")}" }
probe "q" {
  for_each = toset(minion.groups)
  note     = each.key
}
`)}}
	m, diags := Load(b, probeTypes)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if strings.Join(m.PeerTargets, ",") != "group:db" || strings.Join(m.SecretNames, ",") != "k" ||
		strings.Join(m.Variables, ",") != "token,zone" || strings.Join(m.SensitiveVariables, ",") != "token" || len(m.CallDiags) != 0 {
		t.Fatalf("module: peers %v secrets %v vars %v sensitive %v calls %v", m.PeerTargets, m.SecretNames, m.Variables, m.SensitiveVariables, m.CallDiags)
	}
	for _, mi := range []Minion{{ID: "web1", Groups: []string{"web", "eu"}}, {ID: "db1", Groups: []string{"db"}}, {ID: "web1", Groups: []string{"web", "eu"}}} {
		g, diags := Compile(m, Options{Minion: mi, Peers: map[string][]map[string]any{"group:db": {{"id": "db1"}}}, Secrets: map[string]string{"k": "s"}})
		if diags.HasErrors() {
			t.Fatalf("%s: %s", mi.ID, diags.Error())
		}
		if got, want := g.Resources()[0].(*probe).note, mi.ID+"/a/1/s"; got != want {
			t.Errorf("%s: note %q, want %q", mi.ID, got, want)
		}
		if g.Len() != 1+len(mi.Groups) {
			t.Errorf("%s: %v, want one q per group", mi.ID, g.Addresses())
		}
	}
	// Check reads the same blocks.
	if diags := Check(m, Options{Vars: map[string]string{"zone": "b"}}); diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if diags := Check(m, Options{Vars: map[string]string{"zoen": "b"}}); !diags.HasErrors() || !strings.Contains(diags.Error(), `Did you mean "zone"?`) {
		t.Fatalf("a misspelt --var: %v", diags)
	}
}

// peers() and secret() must name a literal: the master resolves them before it sends a job.
func TestModuleCallDiags(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(`
variable "t" { default = "group:db" }
probe "p" { note = jsonencode([peers(var.t), secret("a", "b")]) }
`)}}
	m, diags := Load(b, probeTypes)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var text string
	for _, d := range m.CallDiags {
		text += d.Detail + "\n"
	}
	if !m.CallDiags.HasErrors() || !strings.Contains(text, "peers() needs a literal string") || !strings.Contains(text, "secret() takes exactly one argument") {
		t.Fatalf("call diagnostics: %v", m.CallDiags)
	}
}

// Pack's digest is the sha256 of the bytes it packed, and the same files always pack the same.
func TestPackDigestIsOfItsBytes(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte("x"), "files/a": []byte("y")}}
	p := b.Pack()
	sum := sha256.Sum256(p.Bytes)
	if p.Digest != hex.EncodeToString(sum[:]) || p.Digest != b.Digest() || string(p.Bytes) != string(b.Marshal()) {
		t.Fatalf("packed %d bytes, digest %s", len(p.Bytes), p.Digest)
	}
}
