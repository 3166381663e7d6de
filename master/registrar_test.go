package master

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
)

// gatedKeys is the master's real key store whose first PresentAll waits until open is closed,
// so that a test knows the registrar is busy while the other auths arrive.
type gatedKeys struct {
	store.Keys
	entered atomic.Bool
	open    chan struct{}
}

func (g *gatedKeys) PresentAll(ps []pki.Presentation, autoAccept bool, allow func(pki.Presentation) bool) ([]pki.MinionKey, []error) {
	if g.entered.CompareAndSwap(false, true) {
		<-g.open
	}
	return g.Keys.PresentAll(ps, autoAccept, allow)
}

// Many new minions register with a group commit each batch, not an fsynced file each, and the
// pre-authentication workers answer hellos while the key store writes: with the registrar held
// at its first write, the other 39 of 40 new minions get their challenges and queue their
// auths; released, they are all registered in one more commit, and all connect.
func TestNewKeysGroupCommitted(t *testing.T) {
	dir, err := os.MkdirTemp("", "brm") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := Config{DataDir: dir, PublishAddr: "127.0.0.1:0", RequestAddr: "127.0.0.1:0", Heartbeat: "200ms",
		AutoAccept: true, PreAuthRate: 100000, PreAuthRatePerSource: 100000}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	gate := &gatedKeys{Keys: m.keys, open: make(chan struct{})}
	m.keys = gate
	var release sync.Once
	open := func() { release.Do(func() { close(gate.open) }) }
	if err := m.Start(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { open(); m.Close() })

	const n = 40
	mns := make([]*minion.Minion, n)
	for i := range mns {
		mns[i] = minion.TestMinion(t, m.PublishAddr(), m.RequestAddr(), fmt.Sprintf("new-%d", i))
	}
	tb.WaitFor(t, 20*time.Second, "the registrar at its first write and the other auths queued", func() bool {
		return gate.entered.Load() && len(m.regQ) >= n-1
	})
	open()
	tb.WaitFor(t, 20*time.Second, "all connected", func() bool {
		for _, mn := range mns {
			if mn.Status() != "connected" {
				return false
			}
		}
		return true
	})
	commits := m.st.Keys().(interface{ Commits() int }).Commits()
	files, _ := os.ReadDir(filepath.Join(dir, "pki", "minions"))
	if commits != 2 || len(files) != n || len(m.keys.Accepted()) != n {
		t.Fatalf("%d new keys: %d commits, %d files, %d accepted; want 2 commits", n, commits, len(files), len(m.keys.Accepted()))
	}
}
