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

// Facts are claims: the value of a sensitive variable, sealed to every minion a job addresses,
// never reaches a minion that the job (or a converge's site) selects only by what it claims.
// web1 (key group web), a compromised minion, claims role=db; db1 is in key group db. An apply to
// "group:db or fact:role=db" and a converge whose site puts fact:role=db in the db bundle both
// carry the database password as a sensitive variable: web1 must not write it, and the job says
// why. db1 still gets it when web1 is not selected.
func TestSensitiveVariablesNotSentByClaimedFacts(t *testing.T) {
	m := master.TestMaster(t)
	claims := func(c *minion.Config) {
		c.FactsFunc = func() map[string]any { return map[string]any{"os": "linux", "role": "db"} }
	}
	acceptedMinion(t, m, "web1", []string{"web"}, claims)
	acceptedMinion(t, m, "db1", []string{"db"})
	out := t.TempDir()
	main := `
variable "db_pass" {
  type      = string
  sensitive = true
}
file "pw" {
  path    = "` + out + `/${minion.id}"
  content = var.db_pass
}`
	vars := map[string]string{"db_pass": "pw-for-db-only"}
	leaked := func() bool {
		data, err := os.ReadFile(filepath.Join(out, "web1"))
		return err == nil && strings.Contains(string(data), "pw-for-db-only")
	}

	b := bundle(t, map[string]string{"main.hcl": main})
	for _, target := range []string{"fact:role=db", "group:db or fact:role=db"} {
		ids, err := m.ResolveTarget(target)
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Run(context.Background(), master.JobSpec{Target: target, Minions: ids, Bundle: b, Vars: vars, Timeout: 10 * time.Second}, nil)
		if leaked() {
			t.Fatalf("apply %q: web1 claimed role=db and received the sensitive variable", target)
		}
		if err == nil || !strings.Contains(err.Error(), "db_pass") || !strings.Contains(err.Error(), "web1") {
			t.Fatalf("apply %q: %v", target, err)
		}
	}

	site, errs := siteOf(t, map[string]string{
		"site.hcl": `group "dbs" { target = "group:db or fact:role=db" }
assign "group:dbs" { bundles = ["db"] }
`,
		"db/main.hcl": main,
	})
	if errs != "" {
		t.Fatal(errs)
	}
	_, err := m.Converge(context.Background(), master.ConvergeSpec{Target: "*", Site: site, Vars: vars, Timeout: 10 * time.Second}, master.Rollout{}, nil)
	if leaked() {
		t.Fatal("converge: web1 claimed role=db, joined the site group dbs and received the sensitive variable")
	}
	if err == nil || !strings.Contains(err.Error(), "db_pass") {
		t.Fatalf("converge: %v", err)
	}

	// Selected by what the master decides, db1 gets it.
	if res := run(t, m, master.JobSpec{Target: "group:db", Bundle: b, Vars: vars}); res.Failed() {
		t.Fatalf("apply group:db: %+v", res)
	}
	tb.WaitFor(t, 10*time.Second, "db1's file", func() bool {
		data, _ := os.ReadFile(filepath.Join(out, "db1"))
		return string(data) == "pw-for-db-only"
	})
}
