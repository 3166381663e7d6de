package zmtp

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// rawPeer completes a ZMTP 3.0 NULL handshake by hand as sockType, sending its signature
// first and the rest of its greeting only after the server's signature arrived, as libzmq does.
func rawPeer(t *testing.T, addr, sockType string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	g := make([]byte, 64)
	g[0], g[9], g[10], g[11] = 0xff, 0x7f, 3, 1 // ZMTP 3.1, as libzmq 4.3
	copy(g[12:], "NULL")
	c.Write(g[:10])
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	sig := make([]byte, 10)
	if _, err := io.ReadFull(c, sig); err != nil {
		t.Fatalf("no signature from the server before the rest of our greeting: %v", err)
	}
	c.Write(g[10:])
	body := append([]byte{5}, "READY"...)
	body = append(body, 11)
	body = append(body, "Socket-Type"...)
	body = binary.BigEndian.AppendUint32(body, uint32(len(sockType)))
	body = append(body, sockType...)
	c.Write(append([]byte{0x04, byte(len(body))}, body...))
	return c
}

func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{0x02}, uint64(len(body))), body...)
}

// closedSoon says whether the server hangs up on c within d.
func closedSoon(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	ne, ok := err.(net.Error)
	return !(ok && ne.Timeout())
}

// A peer whose messages are over the pre-authentication limit is dropped; once trusted, the
// same peer may send up to MaxMsg. A peer that never reads its replies fills its queue and is
// dropped, while Send never waits.
func TestRouterPreAuthLimitTrustAndNonReader(t *testing.T) {
	r, err := ListenRouter("127.0.0.1:0", Limits{MaxMsg: 1 << 20, PreAuthMsg: 1024, SendQueue: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	addr := r.Addr().String()

	big := rawPeer(t, addr, "DEALER")
	big.Write(frame(make([]byte, 2048)))
	if !closedSoon(big, 5*time.Second) {
		t.Fatal("untrusted peer sent 2 KiB over a 1 KiB pre-auth limit and was kept")
	}

	ok := rawPeer(t, addr, "DEALER")
	ok.Write(frame([]byte("hello")))
	m, err := r.Recv()
	if err != nil || string(m.Frames[1]) != "hello" {
		t.Fatalf("recv: %v %q", err, m.Frames)
	}
	id := m.Frames[0]
	if r.Trusted(id) || r.Source(id) != "127.0.0.1" {
		t.Fatalf("trusted %v, source %q", r.Trusted(id), r.Source(id))
	}
	r.Trust(id, "peer")
	ok.Write(frame(make([]byte, 100<<10)))
	if m, err = r.Recv(); err != nil || len(m.Frames[1]) != 100<<10 {
		t.Fatalf("trusted peer's 100 KiB message: %v", err)
	}

	// ok never reads: Send returns at once every time, and the peer is dropped.
	reply := make([]byte, 64<<10)
	deadline := time.Now().Add(30 * time.Second)
	for r.Dropped.Load() == 0 {
		start := time.Now()
		r.Send(zmq4.NewMsgFrom(id, reply))
		if took := time.Since(start); took > time.Second {
			t.Fatalf("Send waited %v on a peer that does not read", took)
		}
		if time.Now().After(deadline) {
			t.Fatal("a peer that does not read was never dropped")
		}
	}
	if !closedSoon(ok, 5*time.Second) {
		t.Fatal("dropped peer's connection kept open")
	}
}

// A libzmq-like peer (signature first) completes the handshake; one with CURVE gets an ERROR
// command and the connection closes.
func TestGreetingSignatureFirstAndMechanismRefused(t *testing.T) {
	r, err := ListenRouter("127.0.0.1:0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := rawPeer(t, r.Addr().String(), "DEALER")
	c.Write(append([]byte{0, 2}, "hi"...))
	if m, err := r.Recv(); err != nil || string(m.Frames[1]) != "hi" {
		t.Fatalf("signature-first peer: %v", err)
	}

	cc, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	g := make([]byte, 64)
	g[0], g[9], g[10], g[11] = 0xff, 0x7f, 3, 1
	copy(g[12:], "CURVE")
	cc.Write(g)
	cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(cc)
	if len(got) < 64+8 || got[64] != 0x04 || string(got[66:72]) != "\x05ERROR" {
		t.Fatalf("CURVE peer got %q, want our greeting and an ERROR command", got)
	}
}

// Subscriptions over the per-peer count or topic length disconnect the subscriber.
func TestPubSubscriptionLimits(t *testing.T) {
	p, err := ListenPub("127.0.0.1:0", Limits{MaxSubsPerPeer: 3, MaxTopic: 16}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	long := rawPeer(t, p.Addr().String(), "SUB")
	long.Write(append([]byte{0, 18, 1}, make([]byte, 17)...))
	if !closedSoon(long, 5*time.Second) {
		t.Fatal("17-byte topic over a 16-byte limit kept")
	}
	many := rawPeer(t, p.Addr().String(), "SUB")
	for i := range 4 {
		many.Write([]byte{0, 2, 1, byte('a' + i)})
	}
	if !closedSoon(many, 5*time.Second) {
		t.Fatal("4 subscriptions over a limit of 3 kept")
	}
	if n := p.Subscriptions(); n != 0 {
		t.Fatalf("%d subscriptions left", n)
	}
}

// Per-source limits: pending handshakes from one address are capped; others still connect.
func TestPerSourcePendingLimit(t *testing.T) {
	r, err := ListenRouter("127.0.0.1:0", Limits{MaxPendingPerSource: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for range 10 {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.l.Shed.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, pending := r.Conns(); pending > 4 || r.l.Shed.Load() < 6 {
		t.Fatalf("%d pending, %d shed", pending, r.l.Shed.Load())
	}
	c := rawPeer(t, r.Addr().String(), "DEALER")
	c.Write([]byte{0, 2, 'o', 'k'})
	if m, err := r.Recv(); err != nil || string(m.Frames[1]) != "ok" {
		t.Fatalf("another source: %v", err)
	}
}

// A trusted peer's rates are its holder's: every connection trusted for the same holder draws
// on one budget, and a peer over it has its message read (not held back half-read) and then is
// not read until it is within the budget again. Another holder is not held up.
func TestTrustedRatesPerHolder(t *testing.T) {
	r, err := ListenRouter("127.0.0.1:0", Limits{MaxMsg: 100 << 10, TrustedBytes: 10 << 10}) // burst 200 KiB
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	trusted := func(holder string) net.Conn {
		c := rawPeer(t, r.Addr().String(), "DEALER")
		c.Write([]byte{0, 2, 'h', 'i'})
		m, err := r.Recv()
		if err != nil {
			t.Fatal(err)
		}
		r.Trust(m.Frames[0], holder)
		return c
	}
	recv := func(d time.Duration) bool {
		got := make(chan bool, 1)
		go func() { _, err := r.RecvTrusted(); got <- err == nil }()
		select {
		case ok := <-got:
			return ok
		case <-time.After(d):
			return false
		}
	}
	a := trusted("h")
	for range 3 { // 270 KiB: the burst and 70 KiB of debt, 7 s at 10 KiB/s
		a.Write(frame(make([]byte, 90<<10)))
	}
	for i := range 3 {
		if !recv(5 * time.Second) {
			t.Fatalf("message %d within the burst not received", i+1)
		}
	}
	other := trusted("other")
	other.Write(frame(make([]byte, 90<<10)))
	if !recv(5 * time.Second) {
		t.Fatal("another holder's message held up")
	}
	// The same holder on a new connection: no new burst. (The connection was being read when
	// it was trusted, so its first message may come through: it is paid for after.)
	b := trusted("h")
	b.Write(frame([]byte("small")))
	b.Write(frame([]byte("small")))
	recv(time.Second)
	if recv(time.Second) {
		t.Fatal("a holder in debt was read on its new connection")
	}
	if r.Throttled.Load() == 0 {
		t.Fatal("nothing throttled")
	}
}

// A holder's rates outlive its connections until its buckets are full again, then are
// forgotten: the table holds the holders with connections and a few recent ones.
func TestRateTableForgetsFullHolders(t *testing.T) {
	var tab rateTable
	lim := Limits{MaxMsg: 1000, TrustedRate: 10, TrustedBytes: 100} // bursts: 20 messages, 2,000 bytes
	now := time.Now()
	rs := tab.join("h", lim, now)
	rs.take(now, 1500) // full again 15 s later
	tab.leave(rs, now)
	tab.sweep(now.Add(10 * time.Second))
	if tab.by["h"] != rs {
		t.Fatal("a holder forgotten before its buckets were full again")
	}
	if again := tab.join("h", lim, now.Add(10*time.Second)); again != rs {
		t.Fatal("a holder that connected again got new buckets")
	}
	tab.leave(rs, now.Add(10*time.Second))
	tab.sweep(now.Add(30 * time.Second))
	if len(tab.by) != 0 || len(tab.idle) != 0 {
		t.Fatalf("%d holders, %d idle left once full", len(tab.by), len(tab.idle))
	}
}
