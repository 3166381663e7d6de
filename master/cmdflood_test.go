package master_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// cpuTime is the CPU time this process (the master and its minions) has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Peers without a key that send nothing but ZMTP commands (PINGs, which zmq4 answers with a
// PONG) on both ports, from an attacker process: commands went around the rates of messages
// before authentication, and 8 such peers made the master answer 900,000 a second, a core's
// worth, while a minion's ping took 50 times as long. Every message counts against the rates
// now, and the master spends next to nothing on them.
func TestCommandFloodsRateLimited(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "steady", nil)
	ping := func() time.Duration { return timedPing(t, m, "steady") }
	calm := ping()
	attack := startFloods(t, floodSpec{Req: m.RequestAddr(), Pub: m.PublishAddr(), Floods: []string{"cmd"}})
	// What the socket buffers hold is sent at once; the master reads it at its own pace.
	tb.WaitFor(t, time.Minute, "the flood under way", func() bool { return attack.counts().Cmd > 100000 })
	c0, w0 := cpuTime(t), time.Now()
	time.Sleep(3 * time.Second)
	cores := float64(cpuTime(t)-c0) / float64(time.Since(w0))
	var busy []time.Duration
	for range 3 {
		busy = append(busy, ping())
	}
	t.Logf("ping calm %v, under the flood %v; the master used %.2f cores; the attacker sent %d commands; %+v",
		calm, busy, cores, attack.counts().Cmd, m.TransportStats())
	if cores > 0.25 {
		t.Errorf("the master used %.2f cores under a flood of ZMTP commands", cores)
	}
}

// timedPing pings the accepted minion id and returns how long its return took.
func timedPing(t *testing.T, m *master.Master, id string) time.Duration {
	t.Helper()
	start := time.Now()
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: id, Timeout: 60 * time.Second}); res.Failed() || len(res.Returns) != 1 {
		t.Fatalf("ping: %+v", res)
	}
	return time.Since(start)
}
