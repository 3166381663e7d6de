package master_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
)

// stoppableMinion runs a minion that the test can stop before it ends.
func stoppableMinion(t *testing.T, m *master.Master, id, dataDir string) (stop func()) {
	t.Helper()
	cfg := minion.Config{Master: "127.0.0.1", ID: id, DataDir: dataDir, Heartbeat: "200ms", MaxBackoff: "300ms",
		FactsFunc: func() map[string]any { return map[string]any{"os": "linux"} }}
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
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// A job published while its minion was away (reconnecting, or its subscription not yet up) is
// not lost: the minion's first heartbeat after it reconnects learns the job is pending, asks for
// it again, applies it once and returns.
func TestMissedJobIsRedeliveredAfterReconnect(t *testing.T) {
	t.Run("heartbeat 200ms", func(t *testing.T) { missedJobRedelivered(t, master.TestMaster(t)) })
	// A job less than a heartbeat old is not listed for a resend (it may be in flight to the
	// minion) except at a session's first heartbeat: with an hour's heartbeat the minion that
	// comes back still gets it at once, as a fleet failing over from a dead master does.
	t.Run("heartbeat 1h", func(t *testing.T) {
		missedJobRedelivered(t, master.TestMaster(t, func(c *master.Config) { c.Heartbeat = "1h" }))
	})
}

func missedJobRedelivered(t *testing.T, m *master.Master) {
	dir := t.TempDir()
	stop := stoppableMinion(t, m, "away", dir)
	tb.WaitFor(t, 5*time.Second, "away pending", func() bool { _, ok := m.Keys().Get("away"); return ok })
	if _, err := m.Keys().Accept("away", nil, false); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 5*time.Second, "away connected", func() bool { return m.Facts("away") != nil })
	stop()

	out := filepath.Join(t.TempDir(), "runs")
	b := bundle(t, map[string]string{"main.hcl": `
exec "count" {
  command = "echo run >> ` + out + `"
}`})
	published := make(chan struct{}, 1)
	type result struct {
		res *master.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobApply, Target: "away", Minions: []string{"away"}, Bundle: b, Timeout: 15 * time.Second},
			func(e master.Event) {
				if e.Event == "published" {
					published <- struct{}{}
				}
			})
		done <- result{res, err}
	}()
	<-published
	stoppableMinion(t, m, "away", dir) // back, after the job went out
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.res.Missing) != 0 || !r.res.Returns["away"].Success {
		t.Fatalf("missing %v, returns %+v", r.res.Missing, r.res.Returns)
	}
	if data, _ := os.ReadFile(out); string(data) != "run\n" {
		t.Fatalf("the job ran %q, want exactly once", data)
	}
}
