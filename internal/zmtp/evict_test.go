package zmtp

import (
	"net"
	"testing"
	"time"
)

// At the connection limit, a new connection takes the place of the oldest one that has not
// been trusted; trusted ones are never evicted, and when all are trusted the newcomer is
// refused. At the limit of handshakes in progress, the oldest handshake goes.
func TestEvictionForNewcomers(t *testing.T) {
	r, err := ListenRouter("127.0.0.1:0", Limits{MaxConns: 3, MaxPending: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	addr := r.Addr().String()
	hello := func(c net.Conn) []byte { // sends a message, returns the router's id of c
		t.Helper()
		c.Write([]byte{0, 2, 'h', 'i'})
		m, err := r.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return m.Frames[0]
	}

	// Three untrusted connections fill the port; a fourth evicts the oldest.
	old := rawPeer(t, addr, "DEALER")
	hello(old)
	mid := rawPeer(t, addr, "DEALER")
	idMid := hello(mid)
	young := rawPeer(t, addr, "DEALER")
	idYoung := hello(young)
	newcomer := rawPeer(t, addr, "DEALER")
	hello(newcomer)
	if !closedSoon(old, 5*time.Second) || r.l.Evicted.Load() != 1 {
		t.Fatalf("the oldest untrusted connection kept (evicted %d)", r.l.Evicted.Load())
	}

	// Trusted: mid and young are never evicted; the newcomer (untrusted) goes for the next one,
	// and once all three are trusted, a further connection is refused.
	r.Trust(idMid, "mid")
	r.Trust(idYoung, "young")
	next := rawPeer(t, addr, "DEALER")
	idNext := hello(next)
	if !closedSoon(newcomer, 5*time.Second) {
		t.Fatal("the untrusted newcomer kept while trusted connections were there")
	}
	r.Trust(idNext, "next")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !closedSoon(c, 5*time.Second) {
		t.Fatal("a connection over the limit accepted while all others are trusted")
	}
	for _, tc := range []net.Conn{mid, young, next} {
		if closedSoon(tc, 100*time.Millisecond) {
			t.Fatal("a trusted connection was evicted")
		}
	}

}

// At the limit of handshakes in progress, a new connection takes the place of the oldest one:
// silent connects cannot keep a real peer from completing its handshake.
func TestEvictionOfSilentHandshakes(t *testing.T) {
	r, err := ListenRouter("127.0.0.1:0", Limits{MaxPending: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	addr := r.Addr().String()
	var silent []net.Conn
	for range 2 {
		s, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		silent = append(silent, s)
		time.Sleep(50 * time.Millisecond) // in this order
	}
	peer := rawPeer(t, addr, "DEALER") // fails the test if it gets no greeting
	peer.Write([]byte{0, 2, 'h', 'i'})
	if m, err := r.Recv(); err != nil || string(m.Frames[1]) != "hi" {
		t.Fatalf("the real peer's message: %v", err)
	}
	if !closedSoon(silent[0], 5*time.Second) || r.l.Evicted.Load() != 1 {
		t.Fatalf("the oldest silent handshake kept (evicted %d)", r.l.Evicted.Load())
	}
}
