package master_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/states"
)

// Facts are claims: the value of a sensitive variable, sealed to every minion a job addresses,
// never reaches a minion that the job (or a converge's site) selects only by what it claims.
// web1 (key group web), a compromised minion, claims role=db; db1 is in key group db. An apply to
// "fact:role=db" or to "group:db or fact:role=db", and a converge whose site puts fact:role=db in
// the db bundle, all carry the database password as a sensitive variable: web1 is left out (and
// reported missing) and never writes it; db1 gets it.
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
	got := func(what string) {
		t.Helper()
		tb.WaitFor(t, 10*time.Second, what+": db1's file", func() bool {
			data, _ := os.ReadFile(filepath.Join(out, "db1"))
			return string(data) == "pw-for-db-only"
		})
		os.Remove(filepath.Join(out, "db1"))
	}
	apply := func(target string) (*master.Result, []master.Event, error) {
		ids, err := m.ResolveTarget(target)
		if err != nil {
			t.Fatal(err)
		}
		var evs []master.Event
		res, err := m.Run(context.Background(), master.JobSpec{Target: target, Minions: ids, Bundle: b(main), Vars: vars, Timeout: 10 * time.Second},
			func(e master.Event) { evs = append(evs, e) })
		return res, evs, err
	}

	// Only web1 selected, by its claim: nothing is sent.
	if _, _, err := apply("fact:role=db"); err == nil || !strings.Contains(err.Error(), "web1") || leaked() {
		t.Fatalf("apply fact:role=db: %v (leaked %v)", err, leaked())
	}
	// db1 by its key group, web1 by its claim: db1 only, web1 reported.
	res, evs, err := apply("group:db or fact:role=db")
	if err != nil || leaked() {
		t.Fatalf("apply group:db or fact:role=db: %v (leaked %v)", err, leaked())
	}
	got("apply")
	if len(res.Missing) != 1 || res.Missing[0] != "web1" || len(res.Returns) != 1 {
		t.Fatalf("web1 not reported as left out: %+v", res)
	}
	if !hasEvent(evs, "left_out", "web1") {
		t.Fatalf("no left_out event for web1: %+v", evs)
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
	cres, err := m.Converge(context.Background(), master.ConvergeSpec{Target: "*", Site: site, Vars: vars, Timeout: 10 * time.Second}, master.Rollout{}, nil)
	if leaked() {
		t.Fatal("converge: web1 claimed role=db, joined the site group dbs and received the sensitive variable")
	}
	if err != nil {
		t.Fatalf("converge: %v %+v", err, cres)
	}
	got("converge")
}

func b(main string) *states.Bundle {
	return &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(main)}}
}

func hasEvent(evs []master.Event, kind, minion string) bool {
	for _, e := range evs {
		if e.Event == kind && slices.Contains(e.Minions, minion) {
			return true
		}
	}
	return false
}

// A compromised minion cannot stop the configuration of the hosts it claims to resemble: web1
// claims role=db and so joins a converge's site group meant for the databases, whose bundle
// uses a secret scoped to key group db. The master leaves web1 out (it is not entitled to the
// secret, and was selected only by its claim) and configures db1.
func TestClaimedFactsDoNotBlockOthers(t *testing.T) {
	m := master.TestMaster(t)
	claims := func(c *minion.Config) {
		c.FactsFunc = func() map[string]any { return map[string]any{"os": "linux", "role": "db"} }
	}
	acceptedMinion(t, m, "web1", []string{"web"}, claims)
	acceptedMinion(t, m, "db1", []string{"db"})
	os.WriteFile(m.Config().SecretsFile, []byte(`
secret "db_password" {
  value  = "pw-for-db"
  target = "group:db"
}
`), 0o600)
	out := t.TempDir()
	site, errs := siteOf(t, map[string]string{
		"site.hcl": `group "dbs" { target = "group:db or fact:role=db" }
assign "group:dbs" { bundles = ["db"] }
`,
		"db/main.hcl": `
file "pw" {
  path    = "` + out + `/${minion.id}"
  content = secret("db_password")
}`,
	})
	if errs != "" {
		t.Fatal(errs)
	}
	res, cerr := m.Converge(context.Background(), master.ConvergeSpec{Target: "*", Site: site, Timeout: 10 * time.Second}, master.Rollout{}, nil)
	if _, err := os.Stat(filepath.Join(out, "db1")); err != nil {
		t.Fatalf("web1's claim stopped db1's converge: %v (converge: %v %+v)", err, cerr, res)
	}
	if _, err := os.Stat(filepath.Join(out, "web1")); err == nil {
		t.Fatal("web1 received the secret")
	}
}
