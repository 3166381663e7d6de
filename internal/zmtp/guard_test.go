package zmtp

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

func quiet() zmq4.Option { return zmq4.WithLogger(log.New(io.Discard, "", 0)) }

// router starts a guarded ROUTER on loopback and returns it with its address.
func router(t *testing.T, max int) (zmq4.Socket, string) {
	t.Helper()
	r := zmq4.NewRouter(context.Background(), quiet())
	if err := r.Listen(Endpoint("127.0.0.1:0", max)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, r.Addr().String()
}

func dealer(t *testing.T, addr string, max int) zmq4.Socket {
	t.Helper()
	d := zmq4.NewDealer(context.Background(), quiet(), zmq4.WithDialerMaxRetries(0), zmq4.WithTimeout(2*time.Second))
	if err := d.Dial(Endpoint(addr, max)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// receiver drains s into a channel from one goroutine, so no message is lost to a timed-out wait.
func receiver(s zmq4.Socket) chan zmq4.Msg {
	ch := make(chan zmq4.Msg, 16)
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				return
			}
			ch <- m
		}
	}()
	return ch
}

func recv(t *testing.T, ch chan zmq4.Msg, d time.Duration) (zmq4.Msg, bool) {
	t.Helper()
	select {
	case m := <-ch:
		return m, true
	case <-time.After(d):
		return zmq4.Msg{}, false
	}
}

func TestRoundTripAndOversizedFrameDropped(t *testing.T) {
	r, addr := router(t, 1024)
	rc := receiver(r)
	d := dealer(t, addr, 1<<20)
	if err := d.Send(zmq4.NewMsg([]byte("hello"))); err != nil {
		t.Fatal(err)
	}
	m, ok := recv(t, rc, 3*time.Second)
	if !ok || string(m.Frames[1]) != "hello" {
		t.Fatalf("round trip: %v %q", ok, m.Frames)
	}
	// A message above the limit: the connection is dropped and the router never sees it.
	big := dealer(t, addr, 1<<20)
	_ = big.Send(zmq4.NewMsg(make([]byte, 4096)))
	if m, ok := recv(t, rc, 300*time.Millisecond); ok {
		t.Fatalf("oversized message delivered: %d bytes", len(m.Frames[len(m.Frames)-1]))
	}
	// Others still work.
	if err := d.Send(zmq4.NewMsg([]byte("again"))); err != nil {
		t.Fatal(err)
	}
	if _, ok := recv(t, rc, 3*time.Second); !ok {
		t.Fatal("router dead after oversized frame")
	}
}

// A silent peer, a garbage peer and a peer announcing a 2^62-byte frame after a valid greeting
// do not keep a legitimate dealer out.
func TestHostileRawConnections(t *testing.T) {
	// Long, so that the silent peer's handshake is still pending when the dealer gets through,
	// however slow the machine: that order, not a duration, shows the dealer did not wait behind
	// it (an accept loop that ran handshakes itself would hold the dealer until the silent peer's
	// timeout). 500 ms also cut off the dealer's own handshake on a loaded machine.
	old := HandshakeTimeout
	HandshakeTimeout = 30 * time.Second
	t.Cleanup(func() { HandshakeTimeout = old })
	r, addr := router(t, 1024)
	rc := receiver(r)

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// The guard sends its greeting as it takes the connection: once it is read, the silent peer
	// is ahead of the dealer.
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(silent, make([]byte, greetingLen)); err != nil {
		t.Fatalf("silent peer: no greeting from the guard: %v", err)
	}
	garbage, _ := net.Dial("tcp", addr)
	defer garbage.Close()
	garbage.Write([]byte("GET / HTTP/1.0\r\n\r\n" + string(make([]byte, 100))))
	huge, _ := net.Dial("tcp", addr)
	defer huge.Close()
	g := make([]byte, 64)
	g[0], g[9], g[10], g[11] = 0xff, 0x7f, 3, 0
	copy(g[12:], "NULL")
	huge.Write(g)
	hdr := make([]byte, 9)
	hdr[0] = 0x06 // long command
	binary.BigEndian.PutUint64(hdr[1:], 1<<62)
	huge.Write(hdr)

	d := dealer(t, addr, 1<<20)
	_ = d.Send(zmq4.NewMsg([]byte("ok")))
	if _, ok := recv(t, rc, 20*time.Second); !ok {
		t.Fatal("legitimate dealer starved by hostile connections")
	}
	// The silent peer is still waiting (a read gives a timeout of our own, not EOF).
	silent.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err = silent.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("the silent peer was cut off (%v) before the dealer got through: the dealer waited behind it", err)
	}
	// The huge-frame peer has been cut off, long before its handshake timeout.
	if !closedSoon(huge, 10*time.Second) {
		t.Fatal("the peer announcing a 2^62-byte command was kept")
	}
}

func TestPubSubThroughGuard(t *testing.T) {
	pub := zmq4.NewPub(context.Background(), quiet())
	if err := pub.Listen(Endpoint("127.0.0.1:0", 4096)); err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub := zmq4.NewSub(context.Background(), quiet(), zmq4.WithDialerMaxRetries(0))
	defer sub.Close()
	if err := sub.Dial(Endpoint(pub.Addr().String(), 1<<20)); err != nil {
		t.Fatal(err)
	}
	sub.SetOption(zmq4.OptionSubscribe, "")
	sc := receiver(sub)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		pub.Send(zmq4.NewMsg(make([]byte, 100000))) // larger than the PUB's inbound limit: outbound is not limited
		if m, ok := recv(t, sc, 100*time.Millisecond); ok {
			if len(m.Frames[0]) != 100000 {
				t.Fatalf("got %d bytes", len(m.Frames[0]))
			}
			return
		}
	}
	t.Fatal("no message through PUB/SUB")
}

func FuzzParser(f *testing.F) {
	f.Add([]byte{0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f}, 3)
	f.Add(append(make([]byte, 64), 0x06, 0, 0, 0, 0, 0, 0, 1, 0), 1)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		p := parser{max: 1 << 10, greetLeft: greetingLen}
		if chunk <= 0 {
			chunk = 1
		}
		for len(data) > 0 {
			k := min(chunk, len(data))
			if err := p.feed(data[:k]); err != nil {
				return
			}
			data = data[k:]
		}
	})
}

// Peers that send a whole greeting (or a greeting and part of the READY command) and then stop
// do not hold zmq4's accept loop: a legitimate dealer gets through while they are still pending
// (an order, not a timing).
func TestStalledHandshakeDoesNotHoldAccept(t *testing.T) {
	r, addr := router(t, 1024)
	rc := receiver(r)
	g := make([]byte, 64)
	g[0], g[9], g[10] = 0xff, 0x7f, 3
	copy(g[12:], "NULL")
	var stalled []net.Conn
	for i := range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stalled = append(stalled, c)
		c.Write(g)
		if i%2 == 1 {
			c.Write([]byte{0x04, 0x30, 5, 'R', 'E'}) // a READY announced as 48 bytes, 3 sent
		}
		// The guard sends its greeting as it takes the connection: once it is read, this
		// stalled peer is ahead of the dealer.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, greetingLen)); err != nil {
			t.Fatalf("stalled peer %d: no greeting from the guard: %v", i, err)
		}
	}
	d := dealer(t, addr, 1<<20)
	_ = d.Send(zmq4.NewMsg([]byte("ok")))
	if _, ok := recv(t, rc, 2*HandshakeTimeout); !ok {
		t.Fatal("legitimate dealer held up by stalled handshakes")
	}
	// The dealer got through while every stalled handshake was still pending: none has been cut
	// off by its handshake timeout (a read gives a timeout of our own, not EOF).
	for i, c := range stalled {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("stalled peer %d was cut off (%v) before the dealer got through: the dealer waited behind it", i, err)
		}
	}
}

// A greeting with another security mechanism, or a first frame that is not a command, is cut
// off by the guard before zmq4 sees it.
func TestHandshakeRefusals(t *testing.T) {
	_, addr := router(t, 1024)
	for name, payload := range map[string][]byte{
		"mechanism": func() []byte {
			g := make([]byte, 64)
			g[0], g[9], g[10] = 0xff, 0x7f, 3
			copy(g[12:], "CURVE")
			return g
		}(),
		"not a command": func() []byte {
			g := make([]byte, 64)
			g[0], g[9], g[10] = 0xff, 0x7f, 3
			copy(g[12:], "NULL")
			return append(g, 0x00, 0x01, 'x')
		}(),
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(payload)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = io.Copy(io.Discard, c) // until the guard hangs up
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: connection kept open", name)
		}
		c.Close()
	}
}
