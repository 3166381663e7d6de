package master_test

import (
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
)

// Three addresses that connect, send a ZMTP greeting and READY and hang up, over and over,
// within every limit on counts (they hold next to no connection at any time): each connection
// costs the master a handshake, and 3,900 a second took 0.6 of a core and made a minion's ping
// 20 times as slow. New connections from a source are rate-limited now, like its messages: the
// rest are closed as soon as they are accepted, with no handshake.
func TestConnectionChurnRateLimited(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "steady", nil)
	ping := func() time.Duration { return timedPing(t, m, "steady") }
	calm := ping()
	attack := startFloods(t, floodSpec{Req: m.RequestAddr(), Pub: m.PublishAddr(), Floods: []string{"churn"}})
	tb.WaitFor(t, time.Minute, "the churn under way", func() bool { return attack.counts().Cmd > 1000 })
	n0, h0 := attack.counts().Cmd, m.TransportStats().Handshakes
	c0, w0 := cpuTime(t), time.Now()
	time.Sleep(3 * time.Second)
	took := time.Since(w0)
	cores := float64(cpuTime(t)-c0) / float64(took)
	rate := float64(attack.counts().Cmd-n0) / took.Seconds()
	shaken := float64(m.TransportStats().Handshakes-h0) / took.Seconds()
	busy := []time.Duration{ping(), ping(), ping()}
	t.Logf("ping calm %v, under the churn %v; %.0f connections a second, %.0f handshakes a second; the master used %.2f cores; %+v",
		calm, busy, rate, shaken, cores, m.TransportStats())
	// 3 sources at 50 connections a second, with their bursts of 100 (and a ping's own).
	if max := 3 * (50 + 100/took.Seconds()) * 1.2; shaken > max {
		t.Errorf("the master made %.0f handshakes a second for 3 addresses, want %.0f at most", shaken, max)
	}
}
