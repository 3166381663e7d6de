package master_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

// Drift is the fleet's, not one master's: m1 runs a drift schedule (m2 has none) on a minion
// connected to m2; `brine drift` and `brine status` on m2 show what m1's check found, nothing
// is kept in either master's data dir, and deleting the key on m2 forgets the check in the
// store.
func TestDriftSharedAcrossMasters(t *testing.T) {
	out := t.TempDir()
	site := writeTree(t, map[string]string{
		"site.hcl": `assign "*" { bundles = ["motd"] }` + "\n",
		"motd/main.hcl": `file "motd" {
  path    = "` + out + `/${minion.id}"
  content = "managed ${minion.id}\n"
}
`,
	})
	url := pgtest.Shared(t).NewDatabase(t)
	m1 := master.TestMaster(t, func(c *master.Config) {
		c.Store, c.Site, c.JobTimeout = url, site, "20s"
		c.Schedules = []master.ScheduleConfig{{Name: "watch", Target: "w*", Every: "1s", Mode: master.ModeDrift}}
	})
	key, err := os.ReadFile(filepath.Join(m1.Config().DataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	m2 := master.TestMaster(t, func(c *master.Config) {
		c.Store, c.Site = url, site
		if err := os.WriteFile(filepath.Join(c.DataDir, "master.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	ms := []*master.Master{m1, m2}
	fleetMinion(t, ms, 1, "w1")
	tb.WaitFor(t, 10*time.Second, "w1 pending", func() bool { _, ok := m2.Keys().Get("w1"); return ok })
	if _, err := m2.Client().KeyAccept(t.Context(), control.KeyAcceptRequest{Glob: "w1"}); err != nil {
		t.Fatal(err)
	}
	presentOn(t, 10*time.Second, m1, m2, "w1")

	var rec control.DriftRecord
	tb.WaitFor(t, 60*time.Second, "w1's drift shown by m2", func() bool {
		r, err := m2.Client().Drift(t.Context(), control.DriftRequest{Target: "*"})
		if err != nil || len(r.Records) != 1 {
			return false
		}
		rec = r.Records[0]
		return true
	})
	if rec.Minion != "w1" || !rec.Drifted || rec.Schedule != "watch" || len(rec.Changes) != 1 ||
		!strings.Contains(rec.Changes[0].Address, "motd") || !strings.Contains(rec.Changes[0].Diff, "managed w1") {
		t.Fatalf("drift on m2: %+v", rec)
	}
	if _, err := os.Stat(filepath.Join(out, "w1")); !os.IsNotExist(err) {
		t.Fatalf("a drift check changed the host: %v", err)
	}
	// The check is m1's job (m2 has no schedule), and every master has it in its history.
	if j, err := m2.Client().Job(t.Context(), control.JobRequest{JID: rec.JID}); err != nil || j.Job.StartedBy != "schedule watch" || !j.Job.DryRun {
		t.Fatalf("the check's job on m2: %+v %v", j, err)
	}
	st, err := m2.Client().Status(t.Context(), control.StatusRequest{Target: "w1"})
	if err != nil || len(st.Minions) != 1 || st.Minions[0].LastDrift == nil || !st.Minions[0].LastDrift.Drifted ||
		st.Minions[0].LastDrift.JID != rec.JID || st.Minions[0].LastDrift.Changes != 1 {
		t.Fatalf("status on m2: %+v %v", st, err)
	}
	for _, m := range ms {
		if _, err := os.Stat(filepath.Join(m.Config().DataDir, "drift.json")); !os.IsNotExist(err) {
			t.Fatalf("%s keeps drift in its data dir: %v", m.Name(), err)
		}
	}

	// With m1 (and its schedule) stopped, deleting w1 on m2 forgets its check for the fleet.
	m1.Close()
	if _, err := m2.Client().KeyDelete(t.Context(), control.KeyRequest{Glob: "w1"}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM drift`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d drift checks left after the key was deleted: %v", n, err)
	}
}

// What a master reads back from the database is checked like what a peer sends: a stored drift
// check that is too large, names another minion, or is not JSON is not shown (and the master
// goes on); a valid one beside them is.
func TestDriftFromTheStoreChecked(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	m := master.TestMaster(t, func(c *master.Config) { c.Store = url })
	ids := []string{"h1", "h2", "h3", "h4"}
	for _, id := range ids {
		if _, err := m.Keys().Present(pki.Presentation{ID: id, Key: mustKey(t).Pub, Source: "operator"}, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rec := func(id string) string {
		return `{"minion":"` + id + `","schedule":"watch","jid":"j","checked":"2026-11-30T10:00:00Z","drifted":true,"changes":[{"address":"file.x"}]}`
	}
	rows := map[string][]byte{
		"h1": []byte(rec("h4")), // another minion's
		"h2": []byte(`{"minion":"h2","drifted":true,"error":"` + strings.Repeat("e", 17<<20) + `"}`),
		"h3": []byte("\x00\xff not json"),
		"h4": []byte(rec("h4")),
	}
	for id, data := range rows {
		if _, err := conn.Exec(t.Context(), `INSERT INTO drift (minion, checked, record) VALUES ($1, now(), $2)`, id, data); err != nil {
			t.Fatal(err)
		}
	}
	r, err := m.Client().Drift(t.Context(), control.DriftRequest{All: true})
	if err != nil || len(r.Records) != 1 || r.Records[0].Minion != "h4" || !r.Records[0].Drifted {
		t.Fatalf("drift: %+v %v", r.Records, err)
	}
	st, err := m.Client().Status(t.Context(), control.StatusRequest{Target: "*"})
	if err != nil || len(st.Minions) != 4 {
		t.Fatalf("status: %+v %v", st, err)
	}
	for _, s := range st.Minions {
		if (s.LastDrift != nil) != (s.ID == "h4") {
			t.Fatalf("status of %s: last drift %+v", s.ID, s.LastDrift)
		}
	}
}
