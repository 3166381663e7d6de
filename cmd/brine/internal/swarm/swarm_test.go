package swarm_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/brinecm/brine/cmd/brine/internal/swarm"
	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// shmDir is a test directory on tmpfs when there is one: a swarm's minions each fsync their
// keys and returns, which on one shared disk would measure the disk, not brine.
func shmDir(t *testing.T) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "brine-swarm-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// TestSwarm500Ping: 500 real minions (own keys, own connections over loopback) connect to a
// real master and every one answers ping '*' through the control socket, as `brine ping` asks.
// The bounds are generous; the speed is in BENCHMARKS.md (brine bench swarm).
func TestSwarm500Ping(t *testing.T) {
	if testing.Short() {
		t.Skip("500 minions: skipped with -short")
	}
	const n = 500
	m := master.TestMaster(t, func(c *master.Config) { c.AutoAccept = true; c.Heartbeat = "1s" })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	s, err := swarm.Start(ctx, swarm.Config{N: n, PubAddr: m.PublishAddr(), ReqAddr: m.RequestAddr(), Dir: shmDir(t), Prefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d minions connected in %s", n, time.Since(start))
	// A subscription reaches the master a moment after the session: a minion that misses the
	// ping asks for it again on its next heartbeat, within the 20 s the ping waits.
	st, err := swarm.RunJob(ctx, m.Client(), swarm.PingJob(control.PingRequest{Target: "*", Timeout: 20 * time.Second}))
	if err != nil {
		t.Fatalf("ping: %v (%+v)", err, st)
	}
	if st.Minions != n || st.Returned != n {
		t.Fatalf("ping reached %d of %d minions, %d returned", st.Minions, n, st.Returned)
	}
	t.Logf("ping '*' of %d minions: %s", n, st.Wall)

	// A job for a few minions reaches only them: the others never open it.
	applied := map[string]int{}
	for _, mn := range s.Minions {
		applied[mn.ID()] = mn.Applied()
	}
	few := []string{swarm.ID("t", 7), swarm.ID("t", 300)}
	res, err := m.Run(ctx, master.JobSpec{Kind: wire.JobPing, Target: "few", Minions: few, Timeout: 20 * time.Second}, nil)
	if err != nil || len(res.Returns) != 2 {
		t.Fatalf("ping of 2 minions: %v, %d returns", err, len(res.Returns))
	}
	for _, mn := range s.Minions {
		want := applied[mn.ID()]
		if mn.ID() == few[0] || mn.ID() == few[1] {
			want++
		}
		if mn.Applied() != want {
			t.Fatalf("minion %s ran %d jobs, want %d", mn.ID(), mn.Applied()-applied[mn.ID()], want-applied[mn.ID()])
		}
	}
}

// TestFileBundle: the benchmark bundle writes its files under each minion's own root, and a
// second apply changes nothing.
func TestFileBundle(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.AutoAccept = true })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := shmDir(t)
	s, err := swarm.Start(ctx, swarm.Config{N: 3, PubAddr: m.PublishAddr(), ReqAddr: m.RequestAddr(), Dir: dir, Prefix: "fb"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	req := swarm.ApplyJob(control.ApplyRequest{Target: "fb-*", Bundle: swarm.FileBundle(20).Marshal(), Timeout: 20 * time.Second})
	first, err := swarm.RunJob(ctx, m.Client(), req)
	if err != nil || first.Changed != 60 {
		t.Fatalf("first apply: %v, %+v", err, first)
	}
	second, err := swarm.RunJob(ctx, m.Client(), req)
	if err != nil || second.Changed != 0 || second.Resources != 60 {
		t.Fatalf("second apply: %v, %+v", err, second)
	}
	data, err := os.ReadFile(filepath.Join(swarm.HostRoot(dir, swarm.ID("fb", 2)), "f20.conf"))
	if err != nil || string(data) != "# file 20 of 20\nminion = fb-00002\n" {
		t.Fatalf("f20.conf of fb-00002: %q, %v", data, err)
	}
}
