package master_test

import (
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
)

// A connected minion holds its presence lease for as long as it stays, however far apart its
// requests are: its master renews the leases of all its minions together. Here the lease is
// 1.5 s and the minion's requests come every 5 s; presence renewed only on authentication
// or on requests would lapse between them.
func TestPresenceOutlivesSparseRequests(t *testing.T) {
	m := master.TestMaster(t, master.PresenceLease(1500*time.Millisecond))
	mn := minion.TestMinion(t, m.PublishAddr(), m.RequestAddr(), "sparse", func(c *minion.Config) { c.Heartbeat = "5s" })
	tb.WaitFor(t, 10*time.Second, "a pending key", func() bool { total, _ := m.Keys().Pending(""); return total == 1 })
	m.Keys().Accept("sparse", nil, false)
	tb.WaitFor(t, 20*time.Second, "connected", func() bool { return mn.Status() == "connected" })
	tb.WaitFor(t, 5*time.Second, "a lease", func() bool { p, err := m.Presence(); return err == nil && p["sparse"].Master == m.Name() })
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if p, err := m.Presence(); err != nil || p["sparse"].Master != m.Name() {
			t.Fatalf("the lease lapsed while the minion was connected: %+v %v", p, err)
		}
	}
}
