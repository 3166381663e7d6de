package master_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// Issue 10 item 2: hostile load from peers without an accepted key, on real sockets against a
// real master, with the effect asserted on the master and on legitimate minions.

// zmtpDial opens a TCP connection from the loopback address src to addr and sends a ZMTP 3.0
// NULL greeting and READY as sockType, as a hostile peer would by hand. It reads nothing: the
// master's greeting and READY stay in the socket buffer.
func zmtpDial(ctx context.Context, src, addr, sockType string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	body := append([]byte{5}, "READY"...)
	body = append(body, 11)
	body = append(body, "Socket-Type"...)
	body = binary.BigEndian.AppendUint32(body, uint32(len(sockType)))
	body = append(body, sockType...)
	hs := append(zmtpGreeting(), 0x04, byte(len(body)))
	if _, err := c.Write(append(hs, body...)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// zmtpFrame is one ZMTP message frame carrying body.
func zmtpFrame(body []byte) []byte {
	if len(body) < 256 {
		return append([]byte{0, byte(len(body))}, body...)
	}
	return append(binary.BigEndian.AppendUint64([]byte{0x02}, uint64(len(body))), body...)
}

// flood runs n copies of f until ctx ends, calling f again whenever it returns (the master
// dropped it).
func flood(ctx context.Context, wg *sync.WaitGroup, n int, f func(ctx context.Context, i int)) {
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				f(ctx, i)
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
}

// heapWatch samples the Go heap of this process (the master's and its minions': the attackers
// run in their own process) until stop, and returns the largest HeapInuse seen.
func heapWatch() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); <-finished; return peak.Load() }
}

// Eight connections that send the largest frames allowed before authentication (and announce
// 16 MiB ones) and never read, three that send hellos and never read the challenges, a hello
// flood from 40 other source addresses, a subscription flood and 300 silent connections, all from
// an attacker process of their own: the
// master's heap stays under 200 MB, a legitimate minion's ping succeeds, a restarted minion
// authenticates again, and the master shows it refused what it should.
func TestHostileFloodsStayBounded(t *testing.T) {
	m := master.TestMaster(t)
	legit := acceptedMinion(t, m, "legit", nil)
	dir := t.TempDir()
	late, stopLate := runMinion(t, m, "late", dir)
	tb.WaitFor(t, 10*time.Second, "late pending", func() bool { _, ok := m.Keys().Get("late"); return ok })
	m.Keys().Accept("late", nil, false)
	tb.WaitFor(t, 10*time.Second, "late connected", func() bool { return late.Status() == "connected" })
	start := time.Now()
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "legit", Timeout: 30 * time.Second}); res.Failed() {
		t.Fatalf("ping before the flood: %+v", res)
	}
	calm := time.Since(start)
	stopLate()

	runtime.GC()
	watch := heapWatch()
	attack := startFloods(t, floodSpec{Req: m.RequestAddr(), Pub: m.PublishAddr()})
	defer func() {
		if t.Failed() {
			t.Logf("the attacker sent %+v; the master's transport: %+v; legit is %s", attack.counts(), m.TransportStats(), legit.Status())
		}
	}()
	// A hang guard: the attacker runs under the race detector too, on a loaded machine in CI.
	tb.WaitFor(t, 2*time.Minute, "the floods under way", func() bool {
		c := attack.counts()
		return c.Big > 100 && c.Hello > 3000 && m.TransportStats().SubscribersRefused > 0
	})
	start = time.Now()
	res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "legit", Timeout: 60 * time.Second})
	busy := time.Since(start)
	if res.Failed() || len(res.Returns) != 1 {
		t.Fatalf("legitimate ping under the floods: %+v", res)
	}
	late, _ = runMinion(t, m, "late", dir)
	tb.WaitFor(t, 60*time.Second, "restarted minion authenticates during the floods", func() bool {
		return late.Status() == "connected" && legit.Status() == "connected"
	})
	s := m.TransportStats()
	attack.stop()
	c := attack.counts()
	peak := watch()
	t.Logf("ping %v calm, %v under the floods; %d big frames, %d hellos, %d subscriptions sent; stats %+v; peak heap %d MB",
		calm.Round(time.Millisecond), busy.Round(time.Millisecond), c.Big, c.Hello, c.Sub, s, peak>>20)
	if peak > 200<<20 {
		t.Errorf("master heap reached %d MB under the floods", peak>>20)
	}
	if s.Challenges > 20000 {
		t.Errorf("%d challenges held", s.Challenges)
	}
	if s.Subscriptions > 100 {
		t.Errorf("%d subscriptions held (4 flooding subscribers, 2 minions)", s.Subscriptions)
	}
	if s.RequestPending > 64+40 {
		t.Errorf("%d pending handshakes (300 silent connections from one source)", s.RequestPending)
	}
}

// Issue 10: three peers that send requests and never read the replies stalled every request
// worker. Now each peer has its own queue (zmtp's TestRouterDropsPeerThatDoesNotRead checks
// that one that fills it is dropped), unauthenticated sources are rate-limited, and a
// legitimate minion's pings keep being answered.
func TestNonReadersDoNotStallReplies(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "steady", nil)
	var sent atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	sink := zmtpFrame(helloBody("sink"))
	flood(ctx, &wg, 3, func(ctx context.Context, i int) {
		floodConn(ctx, "127.0.0.3", m.RequestAddr(), "DEALER", false, func(int) []byte { return sink }, func() { sent.Add(1) })
	})
	tb.WaitFor(t, 30*time.Second, "hellos sent and not read", func() bool { return sent.Load() > 200 })
	for i := range 5 {
		start := time.Now()
		res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "steady", Timeout: 30 * time.Second})
		t.Logf("ping %d: %v", i, time.Since(start).Round(time.Millisecond))
		if res.Failed() || len(res.Returns) != 1 {
			t.Fatalf("ping %d while peers do not read: %+v", i, res)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("ping %d took %v while peers do not read", i, took)
		}
	}
}

// The listener survives running out of file descriptors: Accept fails with EMFILE, the master
// retries with a backoff instead of closing the port, and a new minion connects once
// descriptors are free again.
func TestListenerSurvivesFdExhaustion(t *testing.T) {
	m := master.TestMaster(t)
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	restore := func() {
		for _, f := range files {
			f.Close()
		}
		files = nil
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	}
	defer restore()
	low := old
	low.Cur = uint64(countFDs(t) + 40)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	// Take every descriptor, then give back a few for our dials: the master's Accept of the
	// connections the kernel completed fails with EMFILE until descriptors are free again.
	// Descriptors that other goroutines of this test process free meanwhile (the closing of
	// earlier tests' connections) are taken again while we wait, so that none is left for
	// Accept; several dials keep a connection waiting even if one Accept got such a descriptor.
	soak := func() {
		for {
			f, err := os.Open(os.DevNull)
			if err != nil {
				return
			}
			files = append(files, f)
		}
	}
	soak()
	const dials = 4
	for _, f := range files[len(files)-dials:] {
		f.Close()
	}
	files = files[:len(files)-dials]
	var conns []net.Conn
	for range dials {
		c, err := net.DialTimeout("tcp", m.RequestAddr(), time.Second)
		if err != nil {
			break // a descriptor freed elsewhere was taken first: fewer dials
		}
		defer c.Close()
		conns = append(conns, c)
	}
	if len(conns) == 0 {
		t.Fatal("no descriptor left to dial with")
	}
	// One failed Accept shows the point: descriptors freed elsewhere in this process (other
	// tests' connections closing, more so under -race) can let later Accepts through first.
	tb.WaitFor(t, 20*time.Second, "Accept failing with EMFILE", func() bool {
		soak()
		return m.TransportStats().AcceptErrors > 0
	})
	restore()
	// The connections that waited are accepted now (the master greets them), and new minions
	// connect.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 10)); err != nil {
			t.Fatalf("no greeting on connection %d after EMFILE: %v", i, err)
		}
	}
	mn := startMinion(t, m, "after-emfile")
	tb.WaitFor(t, 20*time.Second, "a minion connecting after EMFILE", func() bool { _, ok := m.Keys().Get("after-emfile"); return ok })
	m.Keys().Accept("after-emfile", nil, false)
	tb.WaitFor(t, 20*time.Second, "after-emfile connected", func() bool { return mn.Status() == "connected" })
}

func countFDs(t *testing.T) int {
	ents, err := readDirNames("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
