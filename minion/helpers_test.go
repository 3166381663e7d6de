package minion

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

// running is a minion started by runMinion.
type running struct {
	*Minion
	cancel context.CancelFunc
	done   chan struct{}
}

// stop ends the minion's Run and waits for it to return.
func (r *running) stop() {
	r.cancel()
	<-r.done
}

// runMinion starts a minion in dir (a fresh one when dir is "") against the publish and request
// addresses given; opts adjust its config. It is stopped when the test ends, if not before.
func runMinion(t *testing.T, pub, req, id, dir string, opts ...func(*Config)) *running {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := Config{Master: "127.0.0.1", ID: id, DataDir: dir, Heartbeat: "200ms", MaxBackoff: "300ms",
		FactsFunc: func() map[string]any { return map[string]any{"os": "linux", "hostname": id} }}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Fill(); err != nil {
		t.Fatal(err)
	}
	cfg.SetAddrs(pub, req)
	m, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Minion: m, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); _ = m.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// accept accepts the pending key of id on ms and waits until mn is connected.
func accept(t *testing.T, ms *master.Master, mn *Minion, groups []string) {
	t.Helper()
	id := mn.ID()
	tb.WaitFor(t, 5*time.Second, id+" pending", func() bool {
		k, ok := ms.Keys().Get(id)
		return ok && k.State == pki.StatePending
	})
	if _, err := ms.Keys().Accept(id, groups, false); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 5*time.Second, id+" connected", func() bool { return mn.Status() == "connected" && ms.Facts(id) != nil })
}

// outboxFiles lists the jobs whose returns a minion keeps in dir.
func outboxFiles(t *testing.T, dir string) []string {
	t.Helper()
	jids, err := UnsentReturns(dir)
	if err != nil {
		t.Fatal(err)
	}
	return jids
}

// minionGoroutines returns the stacks of the goroutines that run code of this package's minion
// machinery (a session, the executor, Run), leaving out the test's own goroutines and the
// wrapper of goTracked after its Done (the goroutine is then returning and holds nothing).
func minionGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "\ngithub.com/brinecm/brine/minion.Test") {
			continue // a test's own
		}
		for _, line := range strings.Split(g, "\n") {
			fn, ok := strings.CutPrefix(line, "github.com/brinecm/brine/minion.")
			if !ok || strings.HasPrefix(fn, "goTracked.func1(") || strings.HasPrefix(fn, "runMinion.func") {
				continue
			}
			out = append(out, g)
			break
		}
	}
	return out
}
