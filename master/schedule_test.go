package master_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
)

// runStoppableMinion runs a minion with dataDir until the returned stop is called (or the test ends), so
// a test can take it down and bring it back with the same key.
func runStoppableMinion(t *testing.T, m *master.Master, id, dataDir string) (stop func()) {
	t.Helper()
	cfg := minion.Config{Master: "127.0.0.1", ID: id, DataDir: dataDir, Heartbeat: "200ms", MaxBackoff: "300ms",
		FactsFunc: func() map[string]any { return map[string]any{"os": "linux", "hostname": id} }}
	if err := cfg.Fill(); err != nil {
		t.Fatal(err)
	}
	cfg.SetAddrs(m.PublishAddr(), m.RequestAddr())
	mn, err := minion.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = mn.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("minion %s did not stop", id)
		}
	}
	t.Cleanup(stop)
	return stop
}

func connected(m *master.Master, id string) bool {
	st, err := m.Status(context.Background(), id, nil)
	return err == nil && len(st) == 1 && st[0].Connected
}

// Schedules on real minions over TCP: a converge schedule puts back a file changed by hand,
// also on a minion that was down at its turn once it returns; a drift schedule records the
// difference without changing anything, and `drift` reports it.
func TestSchedules(t *testing.T) {
	out := t.TempDir()
	site := t.TempDir()
	files := map[string]string{
		"site.hcl": `group "conv" { target = "c*" }
group "watch" { target = "d*" }
assign "*" { bundles = ["motd"] }
`,
		"motd/main.hcl": `file "motd" {
  path    = "` + out + `/${minion.id}"
  content = "managed ${minion.id}\n"
}
`,
	}
	for name, data := range files {
		p := filepath.Join(site, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := master.TestMaster(t, func(c *master.Config) {
		c.Site = site
		// A round waits for the returns until the job times out: one that includes c2 just
		// after it stopped (before the master sees it as down) must not hold the test for 5m.
		c.JobTimeout = "5s"
		c.Schedules = []master.ScheduleConfig{
			{Name: "keep", Target: "group:conv", Every: "1s", Splay: "500ms"},
			{Name: "watch", Target: "group:watch", Every: "1s", Mode: "drift"},
		}
	})
	acceptedMinion(t, m, "c1", nil)
	dDir := t.TempDir()
	stopD := runStoppableMinion(t, m, "d1", dDir)
	tb.WaitFor(t, 10*time.Second, "d1 pending", func() bool { _, ok := m.Keys().Get("d1"); return ok })
	if _, err := m.Keys().Accept("d1", nil, false); err != nil {
		t.Fatal(err)
	}
	c2Dir := t.TempDir()
	stopC2 := runStoppableMinion(t, m, "c2", c2Dir)
	tb.WaitFor(t, 10*time.Second, "c2 pending", func() bool { _, ok := m.Keys().Get("c2"); return ok })
	if _, err := m.Keys().Accept("c2", nil, false); err != nil {
		t.Fatal(err)
	}
	read := func(id string) string { b, _ := os.ReadFile(filepath.Join(out, id)); return string(b) }

	// The converge schedule writes the file, and writes it again after a hand edit.
	tb.WaitFor(t, 60*time.Second, "c1 converged by the schedule", func() bool { return read("c1") == "managed c1\n" })
	os.WriteFile(filepath.Join(out, "c1"), []byte("edited by hand\n"), 0o644)
	tb.WaitFor(t, 60*time.Second, "c1's hand edit undone by the schedule", func() bool { return read("c1") == "managed c1\n" })

	// c2 is down when its turn comes: it is converged once it is back.
	tb.WaitFor(t, 60*time.Second, "c2 converged", func() bool { return read("c2") == "managed c2\n" })
	stopC2()
	tb.WaitFor(t, 60*time.Second, "c2 seen as down", func() bool { return !connected(m, "c2") })
	os.WriteFile(filepath.Join(out, "c2"), []byte("edited while down\n"), 0o644)
	// Rounds pass while c2 is down (c1 is converged by them); c2's file stays as edited.
	before := len(jobsBy(t, m, "schedule keep"))
	tb.WaitFor(t, 60*time.Second, "two more rounds of the schedule", func() bool { return len(jobsBy(t, m, "schedule keep")) >= before+2 })
	if got := read("c2"); got != "edited while down\n" {
		t.Fatalf("c2 changed while down: %q", got)
	}
	runStoppableMinion(t, m, "c2", c2Dir)
	tb.WaitFor(t, 60*time.Second, "c2 converged after it came back", func() bool { return read("c2") == "managed c2\n" })

	// The drift schedule: d1's file does not exist; a dry run reports it and creates nothing.
	var recs []master.DriftRecord
	tb.WaitFor(t, 60*time.Second, "d1's drift recorded", func() bool {
		r, err := m.Client().Drift(t.Context(), control.DriftRequest{Target: "*"})
		recs = r.Records
		return err == nil && len(recs) == 1
	})
	if r := recs[0]; r.Minion != "d1" || !r.Drifted || r.Schedule != "watch" || len(r.Changes) != 1 ||
		!strings.Contains(r.Changes[0].Address, "motd") || !strings.Contains(r.Changes[0].Diff, "managed d1") {
		t.Fatalf("drift record: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(out, "d1")); !os.IsNotExist(err) {
		t.Fatalf("a drift check changed the host: %v", err)
	}
	for _, j := range jobsBy(t, m, "schedule watch") {
		if !j.DryRun || j.Kind != "converge" {
			t.Fatalf("a drift schedule's job is not a dry-run converge: %+v", j)
		}
	}
	// Once the host is as the site says, the next check clears it.
	os.WriteFile(filepath.Join(out, "d1"), []byte("managed d1\n"), 0o644)
	tb.WaitFor(t, 60*time.Second, "d1 no longer in drift", func() bool {
		r, err := m.Client().Drift(t.Context(), control.DriftRequest{})
		return err == nil && len(r.Records) == 0
	})
	stopD()
}

func jobsBy(t *testing.T, m *master.Master, who string) []master.JobSummary {
	t.Helper()
	all, err := m.JobsList(1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []master.JobSummary
	for _, j := range all {
		if j.StartedBy == who {
			out = append(out, j)
		}
	}
	return out
}
