package zmtp

import (
	"bytes"
	"context"
	"io"
	"log"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

func testSub(t *testing.T, addr string, topics ...string) zmq4.Socket {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := zmq4.NewSub(ctx, zmq4.WithLogger(log.New(io.Discard, "", 0)), zmq4.WithDialerMaxRetries(0))
	t.Cleanup(func() { s.Close(); cancel() })
	if err := s.Dial(Endpoint(addr, 8<<20)); err != nil {
		t.Fatal(err)
	}
	for _, tp := range topics {
		if err := s.SetOption(zmq4.OptionSubscribe, tp); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func waitSubscribed(t *testing.T, p *Pub, topic string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.RLock()
		got := len(p.subs[topic])
		p.mu.RUnlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers of %q, want %d", got, topic, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func recvBody(t *testing.T, s zmq4.Socket) string {
	t.Helper()
	type res struct {
		m   zmq4.Msg
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := s.Recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return string(r.m.Frames[len(r.m.Frames)-1])
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
	}
	return ""
}

// Messages reach exactly the subscribers whose subscription is a prefix of their topic, once.
func TestPubTopics(t *testing.T) {
	p, err := ListenPub("127.0.0.1:0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	addr := p.Addr().String()
	all := testSub(t, addr, "")
	web1 := testSub(t, addr, "a", "mweb1\x00")
	web10 := testSub(t, addr, "a", "mweb10\x00")
	waitSubscribed(t, p, "", 1)
	waitSubscribed(t, p, "a", 2)
	waitSubscribed(t, p, "mweb10\x00", 1)
	waitSubscribed(t, p, "mweb1\x00", 1)

	send := func(topic, body string) {
		if err := p.Send(zmq4.NewMsgFrom([]byte(topic), []byte(body))); err != nil {
			t.Fatal(err)
		}
	}
	send("mweb10\x00", "for web10")
	send("a", "for all")
	if got := recvBody(t, web10); got != "for web10" {
		t.Fatalf("web10 got %q first", got)
	}
	if got := recvBody(t, web1); got != "for all" {
		t.Fatalf("web1 got %q, want only the broadcast (web1 is a prefix of web10, not its topic)", got)
	}
	if got := recvBody(t, all); got != "for web10" {
		t.Fatalf("the catch-all subscriber got %q first", got)
	}
	if got := recvBody(t, all); got != "for all" {
		t.Fatalf("the catch-all subscriber got %q second", got)
	}
	if got := recvBody(t, web10); got != "for all" {
		t.Fatalf("web10 got %q second", got)
	}
}

// A subscriber that stops reading does not hold up the others; it loses messages instead.
func TestPubSlowSubscriber(t *testing.T) {
	p, err := ListenPub("127.0.0.1:0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	addr := p.Addr().String()
	_ = testSub(t, addr, "a") // never read: zmq4 buffers a little, then TCP fills up
	fast := testSub(t, addr, "a")
	waitSubscribed(t, p, "a", 2)
	body := bytes.Repeat([]byte("x"), 256<<10)
	n := DefaultLimits.SendQueue + 128
	got := make(chan int, 1)
	go func() {
		c := 0
		for c < n {
			if _, err := fast.Recv(); err != nil {
				break
			}
			c++
		}
		got <- c
	}()
	for range n {
		if err := p.Send(zmq4.NewMsgFrom([]byte("a"), body)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // the fast reader keeps up; its queue never fills
	}
	select {
	case c := <-got:
		if c != n {
			t.Fatalf("the fast subscriber got %d of %d", c, n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the fast subscriber was held up by the slow one")
	}
	if p.Dropped.Load() == 0 {
		t.Fatal("nothing dropped for the subscriber that does not read")
	}
}
