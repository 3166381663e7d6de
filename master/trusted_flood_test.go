package master_test

import (
	"encoding/json"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// A compromised minion holds its accepted key and its session: its connection is trusted, so
// the pre-authentication limits (16 KiB messages, 50 a second, the in-flight budget) no longer
// apply to it. It sends one sealed request of 15 MiB and then the same bytes again and again:
// each copy costs the master a read, a secretbox open and a JSON scan of 15 MiB before the
// sequence number refuses it. The master must take them one at a time from that connection
// (its heap stays bounded) and keep serving the others.
func TestAcceptedMinionCannotQueueLargeRequests(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "legit", nil)
	evil := evilMinion(t, m, "evil", nil, nil)

	body, _ := json.Marshal(strings.Repeat("A", 15<<20))
	frame := evil.requestFrame(wire.KindFacts, json.RawMessage(body))

	runtime.GC()
	watch := heapWatch()
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			evil.send(frame)
			sent.Add(1)
		}
	}()
	// The attack stops at 2 GiB of master heap (the bound below is missed: no need to take the
	// machine down), after 3 GB have gone through, or after 10 s (the connection's byte rate
	// holds it back: TestAcceptedMinionBytesRateLimited).
	var peak uint64
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
		if sent.Load() >= 200 || ms.HeapInuse > 2<<30 {
			break
		}
	}
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "legit", Timeout: time.Minute}); res.Failed() {
		t.Errorf("a legitimate minion's ping during the flood: %+v", res)
	}
	close(stop)
	<-done
	peak = max(peak, watch())
	t.Logf("evil sent %d requests of %d MiB; master heap peak %d MiB", sent.Load(), len(frame)>>20, peak>>20)
	// One message of that connection being read and one being handled, with their copies
	// (decoded, opened), beside the master's own heap: well under 512 MiB.
	if peak > 512<<20 {
		t.Fatalf("one accepted minion replaying a 15 MiB request took the master's heap to %d MiB (%d sent)", peak>>20, sent.Load())
	}
}

// A connection is trusted (the pre-authentication limits lifted) for as long as the session
// that proved itself on it lives, and a minion's session has one such connection. A compromised
// minion that authenticates on a second connection, or whose key the operator rejects, does not
// keep a connection that can send 16 MiB messages (or hellos, each a signature) without limits.
func TestTrustEndsWithTheSession(t *testing.T) {
	m := master.TestMaster(t)
	key := mustKey(t)
	a := evilMinion(t, m, "evil", nil, key)
	if r, _, ok := a.request(wire.KindHeartbeat, nil); !ok || !r.OK {
		t.Fatalf("first connection: %+v", r)
	}
	b := evilMinion(t, m, "evil", nil, key)
	conns := func() int { return m.TransportStats().RequestConns }
	if n := conns(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	// 100 KiB: over the 16 KiB a peer may send before it authenticates.
	big := wire.Encode(wire.THello, make([]byte, 100<<10))

	// The connection whose session moved on is bounded again: the big message closes it.
	a.send(big)
	tb.WaitFor(t, 10*time.Second, "the first connection closed for a message over the pre-auth limit", func() bool { return conns() == 1 })
	// The current one is still trusted: it takes the big message and goes on.
	b.send(big)
	if r, _, ok := b.request(wire.KindHeartbeat, nil); !ok || !r.OK {
		t.Fatalf("current connection after a large message: %+v", r)
	}

	// Rejected: the session ends, and so does the trust of its connection.
	ids, _ := m.Keys().Reject("evil")
	m.RemoveMinions(ids, false)
	b.send(big)
	tb.WaitFor(t, 10*time.Second, "the rejected minion's connection closed for a message over the pre-auth limit", func() bool { return conns() == 0 })
}

// An authenticated connection is rate-limited too: a compromised minion that sends hellos (a
// signature each) on it as fast as the master answers them is read at its rate, and the master
// counts it.
func TestAcceptedMinionRequestsRateLimited(t *testing.T) {
	m := master.TestMaster(t)
	evil := evilMinion(t, m, "evil", nil, nil)
	challenges := countFrames(t, evil)
	hello, _ := json.Marshal(wire.Hello{ID: "evil", Key: evil.key.Pub.String(), Nonce: make([]byte, 32)})
	frame := wire.Encode(wire.THello, hello)
	const n = 1000 // over the burst of 400 a connection may send at once
	// At most 128 hellos unanswered at once, fewer than the 256 replies the master queues for a
	// peer: its workers answer a hello in tens of microseconds, and could queue 256 answers
	// before the peer's writer goroutine was next scheduled, so that the master dropped the
	// peer as one that does not read (NotReadingDropped) before it was throttled. That was 1 run
	// in 3 to 8 on a 2-core machine. The master still reads the hellos faster than its rate.
	const window = 128
	deadline := time.Now().Add(time.Minute)
	for i := range n {
		for int64(i)-challenges.Load() >= window {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d hellos answered: %+v", challenges.Load(), i, m.TransportStats())
			}
			time.Sleep(time.Millisecond)
		}
		evil.send(frame)
	}
	tb.WaitFor(t, time.Minute, "the master throttling the flood", func() bool { return m.TransportStats().TrustedThrottled > 0 })
	tb.WaitFor(t, time.Minute, "every hello answered, at the connection's rate", func() bool { return challenges.Load() == n })
}

// An authenticated minion's bytes are rate-limited too: a compromised minion that sends fresh
// 2 MiB requests as fast as it can (each one the master must open and scan before it can refuse
// it) has them read at 1 MiB a second once its burst of 32 MiB is spent, and the master's other
// minions are served meanwhile. Without the limit the master answered a few hundred in 4 s.
func TestAcceptedMinionBytesRateLimited(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "legit", nil)
	evil := evilMinion(t, m, "evil", nil, nil)
	answered := countFrames(t, evil)
	junk, _ := json.Marshal(strings.Repeat("A", 2<<20))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			evil.send(evil.requestFrame(wire.KindFacts, json.RawMessage(junk)))
		}
	}()
	tb.WaitFor(t, time.Minute, "the flood throttled", func() bool { return m.TransportStats().TrustedThrottled > 0 })
	before := answered.Load()
	time.Sleep(3 * time.Second)
	// 1 MiB a second: one request of 2 MiB every 2 s, and the one read before each wait.
	if n := answered.Load() - before; n > 5 {
		t.Fatalf("once throttled, the master answered %d requests of 2 MiB from one minion in 3 s", n)
	}
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "legit"}); res.Failed() {
		t.Errorf("a legitimate minion's ping during the flood: %+v", res)
	}
}

// The rates are the minion's, not its connection's: one that authenticates again on a new
// connection after each burst gets no new burst (each connection used to start with 32 MiB).
//
// The test does not count answers against the clock (how many the master serves in a few seconds
// depends on the machine): the first connection spends the burst, the second sends less than a
// burst and must be throttled. Had the second connection a burst of its own, nothing it sends
// would be throttled, however long the test waits.
func TestRatesOutliveTheConnection(t *testing.T) {
	m := master.TestMaster(t)
	// junk is 2 MiB the master reads and drops at once: a request sealed under a key id that is
	// not the session's. It counts against the rates as any request does, and costs the master
	// hardly any CPU, so that how fast it serves requests does not decide whether the minion
	// reaches its rates.
	junk := func(c *rawClient) []byte {
		keyID := c.session.ID
		keyID[0] ^= 0xff
		return wire.SessionFrame(wire.TRequest, c.sid, keyID, make([]byte, 2<<20))
	}
	// The first connection spends the burst (32 MiB): 16 frames of 2 MiB, then a heartbeat
	// whose answer says the master has read them all (it reads a connection's messages in order).
	first := evilMinion(t, m, "evil", nil, nil)
	for range 16 {
		first.send(junk(first))
	}
	first.send(first.requestFrame(wire.KindHeartbeat, nil))
	if r, ok := first.replyWithin(time.Minute); !ok || !r.OK {
		t.Fatalf("heartbeat after the burst: %+v %v", r, ok)
	}
	// The master's reader of the first connection may still wait for the rates after the
	// heartbeat, and that wait counts as a throttle: the count is taken once the connection is
	// gone, so that only the second connection's waits can raise it.
	first.dealer.Close()
	tb.WaitFor(t, 30*time.Second, "the first connection gone", func() bool { return m.TransportStats().RequestConns == 0 })
	before := m.TransportStats().TrustedThrottled

	// A new connection and session sends 24 MiB, less than a burst: it is throttled only if the
	// spent burst is the minion's. Its sends wait for the master to read them, so they go on in
	// the background (until the test ends and the connection with it).
	second := evilMinion(t, m, "evil", nil, first.key)
	frames := make([][]byte, 12)
	for i := range frames {
		frames[i] = junk(second)
	}
	go func() {
		for _, f := range frames {
			second.send(f)
		}
	}()
	tb.WaitFor(t, time.Minute, "the new connection throttled", func() bool { return m.TransportStats().TrustedThrottled > before })
}

// countFrames reads every frame c receives from now on, until the test ends, and counts them.
func countFrames(t *testing.T, c *rawClient) *atomic.Int64 {
	var n atomic.Int64
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-c.frames:
				n.Add(1)
			case <-done:
				return
			}
		}
	}()
	return &n
}
