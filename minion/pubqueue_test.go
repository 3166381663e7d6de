package minion

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"golang.org/x/sync/semaphore"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/internal/zmtp"
)

// Whoever sits on the path to the master's publish port can send the minion frames of up to
// wire.MaxJobFrame (100 MiB). While the session does not take them (it waits for a reply, its
// job queue is full), 16 such frames waited in memory, 1.6 GB on a host that may have 1. Now
// the frames read and not yet handled take at most maxPubQueued bytes, and the SUB socket is
// not read beyond that: TCP holds back the rest.
func TestPublishedFramesBoundedWhileBusy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pub := zmq4.NewPub(ctx, quiet())
	if err := pub.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s := &session{ctx: ctx, cancel: cancel, pubs: make(chan []byte, 16), pubMem: semaphore.NewWeighted(maxPubQueued), subDone: make(chan struct{})}
	s.sub = zmq4.NewSub(ctx, quiet(), zmq4.WithDialerMaxRetries(0))
	if err := s.sub.Dial(zmtp.Endpoint(pub.Addr().String(), wire.MaxJobFrame+1024)); err != nil {
		t.Fatal(err)
	}
	_ = s.sub.SetOption(zmq4.OptionSubscribe, "")
	s.spawn(s.readSub)
	sent := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		s.sub.Close()
		pub.Close()
		select { // zmq4's PUB may not give up a write to a peer that does not read
		case <-sent:
		case <-time.After(10 * time.Second):
		}
		s.wg.Wait()
	})
	// The subscription is up once a small frame comes through; what serve does with a frame.
	tb.WaitFor(t, 10*time.Second, "the subscription up", func() bool {
		_ = pub.Send(zmq4.NewMsgFrom([]byte("t"), []byte("ping")))
		select {
		case f := <-s.pubs:
			s.pubMem.Release(int64(len(f)))
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	for len(s.pubs) > 0 {
		s.pubMem.Release(int64(len(<-s.pubs)))
	}

	// Nobody handles frames now. Eight of 40 MiB: two fit in the budget.
	big := bytes.Repeat([]byte{'x'}, 40<<20)
	go func() {
		defer close(sent)
		for range 8 {
			if pub.Send(zmq4.NewMsgFrom([]byte("t"), big)) != nil {
				return
			}
		}
	}()
	tb.WaitFor(t, 30*time.Second, "two large frames waiting", func() bool { return len(s.pubs) >= 2 })
	time.Sleep(2 * time.Second) // the others had their time to come through
	if n := len(s.pubs); n != 2 {
		t.Fatalf("%d frames of 40 MiB wait for the session, want 2 (%d bytes at most)", n, maxPubQueued)
	}
}
