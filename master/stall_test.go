package master_test

import (
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// Peers without a key announce the largest frame allowed before authentication (16 KiB) and
// send none of it: 1,200 connections from three addresses, about 90 bytes each, held every
// byte of the 16 MiB that unauthenticated peers' frames may have in flight, reconnecting as
// they were cut off, and every frame of a minion that had not authenticated yet (a new one, or
// all of them after a restart of the master) was refused: a newcomer was kept out for as long
// as the attack lasted. Now the frames that have waited longest give their place to a new one;
// a new minion enrols and answers during the attack, and a minion that was away authenticates
// again.
func TestStalledFramesCannotKeepMinionsOut(t *testing.T) {
	m := master.TestMaster(t)
	dir := t.TempDir()
	back, stop := runMinion(t, m, "back", dir)
	tb.WaitFor(t, 10*time.Second, "back pending", func() bool { _, ok := m.Keys().Get("back"); return ok })
	m.Keys().Accept("back", nil, false)
	tb.WaitFor(t, 20*time.Second, "back connected", func() bool { return back.Status() == "connected" })
	stop()

	attack := startFloods(t, floodSpec{Req: m.RequestAddr(), Pub: m.PublishAddr(), Floods: []string{"stall"}})
	tb.WaitFor(t, time.Minute, "the stalls under way", func() bool { return attack.counts().Cmd > 2000 })
	newcomer := startMinion(t, m, "newcomer")
	tb.WaitFor(t, 30*time.Second, "the newcomer pending during the stalls", func() bool { _, ok := m.Keys().Get("newcomer"); return ok })
	m.Keys().Accept("newcomer", nil, false)
	tb.WaitFor(t, 30*time.Second, "the newcomer connected", func() bool { return newcomer.Status() == "connected" })
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "newcomer", Timeout: 30 * time.Second}); res.Failed() || len(res.Returns) != 1 {
		t.Fatalf("the newcomer's ping during the stalls: %+v", res)
	}
	back, _ = runMinion(t, m, "back", dir)
	tb.WaitFor(t, 30*time.Second, "back authenticated again during the stalls", func() bool { return back.Status() == "connected" })
	t.Logf("%d stalled frames announced; %+v", attack.counts().Cmd, m.TransportStats())
}
