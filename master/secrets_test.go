package master_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
)

// A secret is scoped by what the master decides (ids, groups), never by what a minion claims:
// a secrets file whose target uses fact: is refused with a clear error, and a real minion that
// claims role=db gets no secret meant for group:db.
func TestSecretScopeIgnoresClaimedFacts(t *testing.T) {
	m := master.TestMaster(t)
	claims := func(c *minion.Config) {
		c.FactsFunc = func() map[string]any { return map[string]any{"os": "linux", "role": "db"} }
	}
	acceptedMinion(t, m, "web1", []string{"web"}, claims)
	acceptedMinion(t, m, "db1", []string{"db"})
	out := t.TempDir()
	b := bundle(t, map[string]string{"main.hcl": `
file "pw" {
  path    = "` + out + `/${minion.id}"
  content = secret("db_password")
}`})
	apply := func(target string) error {
		ids, err := m.ResolveTarget(target)
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Run(context.Background(), master.JobSpec{Target: target, Minions: ids, Bundle: b, Timeout: 10 * time.Second}, nil)
		return err
	}

	for _, target := range []string{"fact:role=db", "group:db or fact:role=db", "not fact:role=web"} {
		os.WriteFile(m.Config().SecretsFile, []byte(`
secret "db_password" {
  value  = "pw-for-db"
  target = "`+target+`"
}
`), 0o600)
		if _, err := master.LoadSecrets(m.Config().SecretsFile); err == nil || !strings.Contains(err.Error(), "claimed by the minion") {
			t.Fatalf("target %q: LoadSecrets: %v", target, err)
		}
		err := apply("web1")
		if err == nil || !strings.Contains(err.Error(), "claimed by the minion") {
			t.Fatalf("target %q: a job with a fact-scoped secret was sent: %v", target, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "web1")); err == nil {
		t.Fatal("web1 received the secret")
	}

	// Scoped by group: web1's claim does not help it; db1, granted group db, gets it. The job
	// target may use facts (a convenience); the secret's own scope still decides.
	os.WriteFile(m.Config().SecretsFile, []byte(`
secret "db_password" {
  value  = "pw-for-db"
  target = "group:db"
}
`), 0o600)
	// web1, selected only by its claim, is left out: here that is everyone, so nothing is sent.
	if err := apply("fact:role=db"); err == nil || !strings.Contains(err.Error(), "web1") || !strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("web1 claimed role=db and got the secret: %v", err)
	}
	if err := apply("db1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "db1")); string(got) != "pw-for-db" {
		t.Fatalf("db1 got %q", got)
	}
	if _, err := os.Stat(filepath.Join(out, "web1")); err == nil {
		t.Fatal("web1 received the secret")
	}
}

// The values of sensitive variables travel sealed to each minion, like secrets: another minion
// the same job addresses (it reads the job's meta; protocol v2 keeps the job from every other
// minion) does not read them, whether they came by --var or in a --var-file; the addressed
// minion applies them; other variables stay in the job's meta.
func TestSensitiveVariablesTravelSealed(t *testing.T) {
	m := master.TestMaster(t)
	jobs := capture(t, m)
	acceptedMinion(t, m, "app1", []string{"app"})
	spy := newRaw(t, m, "spy", nil)
	spy.auth("", spy.key)
	m.Keys().Accept("spy", []string{"app"}, false)
	spy.auth("", spy.key)
	out := t.TempDir()
	b := bundle(t, map[string]string{"main.hcl": `
variable "db_pass" {
  type      = string
  sensitive = true
}
variable "api_key" {
  sensitive = true
}
variable "colour" {}
file "cfg" {
  path    = "` + out + `/${minion.id}"
  content = "${var.db_pass} ${var.api_key} ${var.colour}"
}`})
	// spy never returns: the run ends at its timeout.
	run(t, m, master.JobSpec{Target: "app1,spy", Minions: []string{"app1", "spy"}, Bundle: b, Timeout: 3 * time.Second,
		Vars:     map[string]string{"db_pass": "pw-sealed-1", "colour": "blue-public"},
		VarFiles: map[string][]byte{"prod.hcl": []byte(`api_key = "key-sealed-2"`)}})
	meta, _, _ := spy.jobFor(jobs)
	raw := mustJSON(meta)
	for _, v := range []string{"pw-sealed-1", "key-sealed-2"} {
		if strings.Contains(string(raw), v) {
			t.Fatalf("a sensitive variable is readable by another minion of the job: %s", raw)
		}
	}
	for name, data := range meta.VarFiles { // []byte: base64 in the JSON above
		if strings.Contains(string(data), "key-sealed-2") {
			t.Fatalf("var file %s with a sensitive variable is readable by another minion of the job", name)
		}
	}
	if meta.Vars["colour"] != "blue-public" {
		t.Fatalf("public variable missing from the job: %s", raw)
	}
	if _, ok := spy.key.OpenFrom(spy.master.Box, meta.Secrets["app1"]); ok {
		t.Fatal("another minion opened app1's sealed inputs")
	}
	tb.WaitFor(t, 10*time.Second, "app1's file", func() bool {
		got, _ := os.ReadFile(filepath.Join(out, "app1"))
		return string(got) == "pw-sealed-1 key-sealed-2 blue-public"
	})
}
