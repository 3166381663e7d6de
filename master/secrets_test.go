package master_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	if err := apply("fact:role=db"); err == nil || !strings.Contains(err.Error(), "not available to minion web1") {
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
