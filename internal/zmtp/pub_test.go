package zmtp

import (
	"bytes"
	"context"
	"io"
	"log"
	"strings"
	"sync"
	"sync/atomic"
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
	p, err := ListenPub("127.0.0.1:0", Limits{}, nil)
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
	p, err := ListenPub("127.0.0.1:0", Limits{}, nil)
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
	var received atomic.Int64
	got := make(chan int, 1)
	go func() {
		c := 0
		for c < n {
			if _, err := fast.Recv(); err != nil {
				break
			}
			c++
			received.Store(int64(c))
		}
		got <- c
	}()
	// Message i goes out once the fast subscriber has received all but 128 of those before it:
	// its queue (SendQueue, 256) never fills, however slowly the machine runs it, and only the
	// subscriber that does not read loses messages. Had the slow one held up the others, the
	// fast one would stop receiving, and so would the sender.
	var sent atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			for received.Load() < int64(i-128) {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
			if err := p.Send(zmq4.NewMsgFrom([]byte("a"), body)); err != nil {
				sendErr <- err
				return
			}
			sent.Add(1)
		}
	}()
	select {
	case c := <-got:
		if c != n {
			t.Fatalf("the fast subscriber got %d of %d", c, n)
		}
	case err := <-sendErr:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatalf("the fast subscriber was held up by the slow one: it received %d of %d sent (%d dropped in all)", received.Load(), sent.Load(), p.Dropped.Load())
	}
	if p.Dropped.Load() == 0 {
		t.Fatal("nothing dropped for the subscriber that does not read")
	}
}

// testAdmission admits the credentials "cred:<holder>" but "cred:bad", each to "all" and
// "own.<holder>", and cuts off the subscribers it has not admitted after timeout.
func testAdmission(timeout time.Duration) *Admission {
	return &Admission{
		Credential: func(topic []byte) bool { return bytes.HasPrefix(topic, []byte("cred:")) },
		Admit: func(topic []byte) (string, []string, bool) {
			h := string(topic[len("cred:"):])
			if h == "bad" {
				return "", nil, false
			}
			return h, []string{"all", "own." + h}, true
		},
		Timeout: timeout,
	}
}

// A subscriber that never proves itself is sent nothing and cut off at the admission timeout.
func TestPubAdmissionTimeout(t *testing.T) {
	p, err := ListenPub("127.0.0.1:0", Limits{}, testAdmission(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	lurker := rawPeer(t, p.Addr().String(), "SUB")
	lurker.Write([]byte{0, 1, 1}) // subscribe ""
	if !closedSoon(lurker, 10*time.Second) || p.Unadmitted.Load() != 1 {
		t.Fatalf("a subscriber that never proved itself was kept (unadmitted %d)", p.Unadmitted.Load())
	}
}

// With an Admission, a subscriber gets nothing until a credential admits it, then only the
// topics its holder may have; a false credential, a taken holder, a topic outside the holder's
// and Evict each disconnect it (silence past the timeout: TestPubAdmissionTimeout).
func TestPubAdmission(t *testing.T) {
	// The timeout is long: the subscribers to be admitted are, however slow the machine, and
	// those refused are refused for what they asked, not cut off for their silence (Refused
	// counts the first, Unadmitted the second).
	adm := testAdmission(time.Minute)
	var readyMu sync.Mutex
	var readies []string
	adm.Ready = func(h string) { readyMu.Lock(); readies = append(readies, h); readyMu.Unlock() }
	readyIs := func(want ...string) { // Ready is called right after the subscription is applied
		t.Helper()
		var got string
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			readyMu.Lock()
			got = strings.Join(readies, " ")
			readyMu.Unlock()
			if got == strings.Join(want, " ") {
				return
			}
		}
		t.Fatalf("ready: %q, want %q", got, want)
	}
	p, err := ListenPub("127.0.0.1:0", Limits{}, adm)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	addr := p.Addr().String()

	// Subscriptions made before the credential wait for it, and are applied once it comes.
	a := testSub(t, addr, "all", "own.a", "cred:a")
	waitSubscribed(t, p, "own.a", 1)
	waitSubscribed(t, p, "all", 1)
	p.Send(zmq4.NewMsgFrom([]byte("own.a"), []byte("for a")))
	if got := recvBody(t, a); got != "for a" {
		t.Fatalf("admitted subscriber got %q", got)
	}
	readyIs("a") // once, when it had all its topics

	refused := func(what string, topics ...string) {
		t.Helper()
		before := p.Refused.Load()
		c := rawPeer(t, addr, "SUB")
		for _, tp := range topics {
			c.Write(append([]byte{0, byte(1 + len(tp)), 1}, tp...))
		}
		if !closedSoon(c, 10*time.Second) { // well before the admission timeout
			t.Fatalf("%s: kept", what)
		}
		// Counted before the connection is closed.
		if n := p.Refused.Load() - before; n != 1 || p.Unadmitted.Load() != 0 {
			t.Fatalf("%s: closed, but %d refused and %d cut off for silence", what, n, p.Unadmitted.Load())
		}
	}
	refused("false credential", "cred:bad")
	refused("holder taken", "cred:a")
	refused("another's topic", "cred:b", "own.a")
	refused("another's topic, asked first", "own.a", "cred:c")
	refused("everything", "cred:d", "")
	refused("too many held", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17")
	if n := len(p.subs["own.a"]); n != 1 {
		t.Fatalf("%d subscribers of own.a", n)
	}

	// Evict: the holder's session ended; its subscriber goes, and the holder is free again.
	p.Evict("a")
	deadline := time.Now().Add(5 * time.Second)
	for p.Subscribers() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := p.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after evict", n)
	}
	b := testSub(t, addr, "cred:a", "own.a")
	waitSubscribed(t, p, "own.a", 1)
	p.Send(zmq4.NewMsgFrom([]byte("own.a"), []byte("again")))
	if got := recvBody(t, b); got != "again" {
		t.Fatalf("re-admitted subscriber got %q", got)
	}
	readyIs("a") // not yet: it lacks "all"
	if err := b.SetOption(zmq4.OptionSubscribe, "all"); err != nil {
		t.Fatal(err)
	}
	waitSubscribed(t, p, "all", 1)
	readyIs("a", "a")
}

// A holder ended (Evict) while Admit was deciding leaves no subscriber behind: Live is asked
// once the subscriber is registered, so either Evict finds it or Live says no.
func TestPubEvictRacingAdmission(t *testing.T) {
	entered, proceed := make(chan struct{}), make(chan struct{})
	live := true
	adm := &Admission{
		Credential: func(topic []byte) bool { return bytes.HasPrefix(topic, []byte("cred:")) },
		Admit: func(topic []byte) (string, []string, bool) {
			close(entered) // the holder stood when it was looked up...
			<-proceed      // ...and ends before the subscriber is registered
			return "a", []string{"own.a"}, true
		},
		Live:    func(string) bool { return live },
		Timeout: 5 * time.Second,
	}
	p, err := ListenPub("127.0.0.1:0", Limits{}, adm)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	testSub(t, p.Addr().String(), "cred:a", "own.a")
	<-entered
	live = false
	p.Evict("a") // finds nobody yet
	close(proceed)
	deadline := time.Now().Add(5 * time.Second)
	for p.Subscribers() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n, subs := p.Subscribers(), p.Subscriptions(); n != 0 || subs != 0 {
		t.Fatalf("%d subscribers (%d subscriptions) left for a holder that ended", n, subs)
	}
}
