package master_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// Issue 10: peers that complete the ZeroMQ handshake and never authenticate took every place of
// a port (each port holds as many connections as the master's descriptors hold minions), and a
// minion coming then was refused for as long as they stayed. Now a newcomer evicts the oldest
// connection that has not authenticated: a new minion joins, enrols and answers, while the
// strangers lose their places.
func TestStrangersCannotKeepMinionsOut(t *testing.T) {
	const places = 16
	m := master.TestMaster(t, master.FileLimit(512+2*places)) // 16 connections per port
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var strangers []net.Conn
	for i := range places {
		src := fmt.Sprintf("127.0.3.%d", i+1)
		for _, p := range []struct{ addr, typ string }{{m.RequestAddr(), "DEALER"}, {m.PublishAddr(), "SUB"}} {
			c, err := zmtpDial(ctx, src, p.addr, p.typ)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			strangers = append(strangers, c)
		}
	}
	tb.WaitFor(t, 10*time.Second, "the strangers holding every place", func() bool {
		s := m.TransportStats()
		return s.RequestConns == places && s.PublishConns == places && s.RequestPending == 0 && s.PublishPending == 0
	})

	acceptedMinion(t, m, "newcomer", nil)
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "newcomer"}); res.Failed() {
		t.Fatalf("the newcomer's ping: %+v", res)
	}
	evicted := 0
	for _, c := range strangers {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := io.Copy(io.Discard, c); err == nil { // EOF: closed by the master
			evicted++
		}
	}
	if evicted < 2 || m.TransportStats().Evicted < int64(evicted) {
		t.Fatalf("%d strangers evicted (the master counts %d), want one per port at least", evicted, m.TransportStats().Evicted)
	}
	if s := m.TransportStats(); s.RequestConns > places || s.PublishConns > places {
		t.Fatalf("over the limit: %+v", s)
	}
}
