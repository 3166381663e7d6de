package master_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
)

// The master stops mid-job and starts again on the same data dir and ports: the minion
// reconnects and re-authenticates, its return (kept on disk) reaches the store, and nothing is
// applied twice.
func TestMasterRestartMidJob(t *testing.T) {
	dir, _ := os.MkdirTemp("", "brr")
	t.Cleanup(func() { os.RemoveAll(dir) })
	m1 := master.TestMaster(t, func(c *master.Config) { c.DataDir = dir })
	pubAddr, reqAddr := m1.PublishAddr(), m1.RequestAddr()
	mn := acceptedMinion(t, m1, "slow", nil)
	out := filepath.Join(t.TempDir(), "runs")
	b := bundle(t, map[string]string{"main.hcl": `
exec "slow" {
  command = "echo run >> ` + out + ` && sleep 1"
}`})
	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan string, 1)
	go m1.Run(ctx, master.JobSpec{Target: "slow", Minions: []string{"slow"}, Bundle: b, Timeout: 20 * time.Second},
		func(e master.Event) {
			if e.Event == "published" {
				published <- e.JID
				cancel()
			}
		})
	jid := <-published // the callback runs on Run's goroutine: hand the jid over, do not share it
	tb.WaitFor(t, 5*time.Second, "job running", func() bool { _, err := os.Stat(out); return err == nil })
	m1.Close()

	m2 := master.TestMaster(t, func(c *master.Config) {
		c.DataDir, c.PublishAddr, c.RequestAddr = dir, pubAddr, reqAddr
	})
	tb.WaitFor(t, 10*time.Second, "return after restart", func() bool {
		d, err := m2.Job(jid)
		return err == nil && len(d.Returns) == 1
	})
	d, _ := m2.Job(jid)
	if !d.Returns["slow"].Success {
		t.Fatalf("return: %+v", d.Returns["slow"])
	}
	tb.WaitFor(t, 10*time.Second, "reconnected", func() bool { return mn.Status() == "connected" })
	res := run(t, m2, master.JobSpec{Kind: wire.JobPing, Target: "slow"})
	if len(res.Returns) != 1 {
		t.Fatalf("ping after restart: %+v", res)
	}
	if runs, _ := os.ReadFile(out); strings.Count(string(runs), "run") != 1 {
		t.Fatalf("applied %d times", strings.Count(string(runs), "run"))
	}
	tb.WaitFor(t, 5*time.Second, "outbox drained", func() bool {
		kept, err := minion.UnsentReturns(mn.DataDir())
		return err == nil && len(kept) == 0
	})
}

// A bundle whose peers() facts change during its apply runs again in the same command, so a
// fresh set of hosts converges at once (the tinc key exchange has this shape).
func TestPeersConvergeInOneRun(t *testing.T) {
	m := master.TestMaster(t)
	dir := t.TempDir()
	for _, id := range []string{"n1", "n2"} {
		id := id
		acceptedMinion(t, m, id, []string{"mesh"}, func(c *minion.Config) {
			// A fact that exists only once the bundle has run, like a generated public key.
			c.FactsFunc = func() map[string]any {
				f := map[string]any{"os": "linux"}
				if data, err := os.ReadFile(filepath.Join(dir, id+".pub")); err == nil {
					f["pubkey"] = string(data)
				}
				return f
			}
		})
	}
	b := bundle(t, map[string]string{"main.hcl": `
file "key" {
  path    = "` + dir + `/${minion.id}.pub"
  content = "key-of-${minion.id}"
}
file "hosts" {
  path    = "` + dir + `/${minion.id}.hosts"
  content = join(",", [for p in peers("group:mesh") : lookup(p, "pubkey", "?")])
}`})
	res := run(t, m, master.JobSpec{Target: "group:mesh", Bundle: b})
	if len(res.JIDs) != 2 {
		t.Fatalf("phases: %v", res.JIDs)
	}
	for _, id := range []string{"n1", "n2"} {
		got, _ := os.ReadFile(filepath.Join(dir, id+".hosts"))
		if string(got) != "key-of-n1,key-of-n2" {
			t.Fatalf("%s hosts: %q", id, got)
		}
	}
	// Converged: another run is one phase with no changes.
	res = run(t, m, master.JobSpec{Target: "group:mesh", Bundle: b})
	if len(res.JIDs) != 1 {
		t.Fatalf("second run phases: %v", res.JIDs)
	}
}
