package zmtp

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/tb"
)

// Untrusted peers that announce frames and never send them held the whole in-flight budget,
// and every frame of a newcomer was refused (its connection closed). Now the frames that have
// waited longest give their place to the newcomer's, and their connections are closed.
func TestInFlightBudgetGoesToNewFrames(t *testing.T) {
	r, err := ListenRouter("127.0.0.1:0", Limits{MaxMsg: 1 << 20, PreAuthMsg: 1024, InFlight: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	g := make([]byte, 64)
	g[0], g[9], g[10] = 0xff, 0x7f, 3
	copy(g[12:], "NULL")
	ready := append(append([]byte{5}, "READY"...), append(append([]byte{11}, "Socket-Type"...), 0, 0, 0, 6, 'D', 'E', 'A', 'L', 'E', 'R')...)
	hs := append(append(g, flagCommand, byte(len(ready))), ready...)
	var stalled []net.Conn
	for i := range 8 { // 8 KiB announced: the first four take the budget, the next ones the places of the oldest
		c, err := net.Dial("tcp", r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(append(append([]byte{}, hs...), binary.BigEndian.AppendUint64([]byte{flagLong}, 1024)...))
		stalled = append(stalled, c)
		// In order, oldest first: the next connection announces its frame once this one's
		// holds its place in the budget.
		tb.WaitFor(t, 10*time.Second, fmt.Sprintf("stalled frame %d reserved", i), func() bool { return reserved(r.l, c.LocalAddr()) })
	}
	d := zmq4.NewDealer(context.Background(), quiet(), zmq4.WithDialerMaxRetries(0))
	defer d.Close()
	if err := d.Dial(Endpoint(r.Addr().String(), 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := d.Send(zmq4.NewMsg(make([]byte, 900))); err != nil {
		t.Fatal(err)
	}
	if !recvWithin(t, r, 5*time.Second) {
		t.Fatalf("the newcomer's frame did not arrive while the budget was held (evicted %d)", r.Evicted())
	}
	// The oldest stalled frame gave its place; the newest still holds one. (The deadline stays
	// well under FrameTimeout, which would close the oldest too.)
	stalled[0].SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.Copy(io.Discard, stalled[0]); err != nil {
		t.Errorf("the oldest stalled frame's connection is still open: %v", err)
	}
	stalled[7].SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := io.Copy(io.Discard, stalled[7]); err == nil {
		t.Error("the newest stalled frame's connection was closed")
	}
}

// reserved says whether l holds a reservation of its in-flight budget for a frame of the peer
// whose address is peer.
func reserved(l *listener, peer net.Addr) bool {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	for e := l.reservations.Front(); e != nil; e = e.Next() {
		if c, ok := e.Value.(*reservation).owner.(net.Conn); ok && c.RemoteAddr().String() == peer.String() {
			return true
		}
	}
	return false
}

// recvWithin reports whether s receives a message within d (failing the test on an error).
func recvWithin(t *testing.T, s interface{ Recv() (zmq4.Msg, error) }, d time.Duration) bool {
	t.Helper()
	got := make(chan error, 1)
	go func() { _, err := s.Recv(); got <- err }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		return true
	case <-time.After(d):
		return false
	}
}
