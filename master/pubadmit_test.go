package master_test

import (
	"context"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/internal/zmtp"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

// credential is the subscription credential of the client's session (wire.SubCredential).
func (c *rawClient) credential() string {
	return wire.SubCredential(c.sid, c.session.ID, c.session.SealTagged(wire.DomainSubscribe, c.sid))
}

// subscriber is a SUB on the master's publish port with topics, counting what it receives.
type subscriber struct {
	s   zmq4.Socket
	got chan [][]byte
}

func subscribe(t *testing.T, m *master.Master, topics ...string) *subscriber {
	t.Helper()
	s := zmq4.NewSub(context.Background(), zmq4.WithLogger(log.New(io.Discard, "", 0)), zmq4.WithDialerMaxRetries(0))
	if err := s.Dial(zmtp.Endpoint(m.PublishAddr(), wire.MaxJobFrame)); err != nil {
		t.Fatal(err)
	}
	for _, tp := range topics {
		_ = s.SetOption(zmq4.OptionSubscribe, tp) // fails if the master has already closed it
	}
	sub := &subscriber{s: s, got: make(chan [][]byte, 256)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := s.Recv()
			if err != nil {
				return
			}
			select {
			case sub.got <- msg.Frames:
			default:
			}
		}
	}()
	t.Cleanup(func() { s.Close(); <-done })
	return sub
}

// Issue 10, the publish port: it serves a subscriber only once it has shown the credential of a
// session held by this master, then only that session's minion's topics; a credential admits
// one subscriber, once. A stranger subscribed to everything, a forged credential, a replayed
// one, an accepted minion reaching for another's topic, and a rejected minion's subscriber all
// get nothing, while a real minion on the same master gets its jobs.
func TestPublishPortServesOnlySessions(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "good", nil)
	evil := evilMinion(t, m, "evil", nil, nil)
	refused0 := m.TransportStats().SubscribersRefused

	stranger := subscribe(t, m, "", wire.TopicAll, wire.TopicMinion("good"))
	forged := *evil
	forged.session = pki.NewSessionKey()
	forged.session.ID = evil.session.ID
	forger := subscribe(t, m, forged.credential(), wire.TopicAll)
	own := subscribe(t, m, evil.credential(), wire.TopicAll, wire.TopicMinion("evil"))
	tb.WaitFor(t, 5*time.Second, "the accepted client's subscriber gets a heartbeat", func() bool {
		select {
		case f := <-own.got:
			return string(f[0]) == wire.TopicAll
		default:
			return false
		}
	})
	replayed := subscribe(t, m, evil.credential(), wire.TopicAll)
	tb.WaitFor(t, 5*time.Second, "the forged and replayed credentials refused", func() bool {
		return m.TransportStats().SubscribersRefused >= refused0+2
	})

	// A job for the real minion reaches it; no other subscriber sees it, nor any heartbeat.
	r := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "good"})
	if len(r.Returns) != 1 || r.Failed() {
		t.Fatalf("the real minion did not answer: %+v", r)
	}
	time.Sleep(500 * time.Millisecond) // two more heartbeats
	for name, s := range map[string]*subscriber{"stranger": stranger, "forged credential": forger, "replayed credential": replayed} {
		if n := len(s.got); n != 0 {
			t.Errorf("%s received %d messages", name, n)
		}
	}
	for len(own.got) > 0 {
		if f := <-own.got; string(f[0]) == wire.TopicMinion("good") {
			t.Error("the accepted client received a message on another minion's topic")
		}
	}

	// Another accepted client's own credential does not open another minion's topic.
	other := evilMinion(t, m, "other", nil, nil)
	refused1 := m.TransportStats().SubscribersRefused
	reaching := subscribe(t, m, other.credential(), wire.TopicMinion("good"))
	tb.WaitFor(t, 5*time.Second, "a subscription to another minion's topic refused", func() bool {
		return m.TransportStats().SubscribersRefused > refused1
	})
	if n := len(reaching.got); n != 0 {
		t.Fatalf("a subscriber reaching for another minion's topic received %d messages", n)
	}

	// Rejected: its session ends, and its subscriber with it.
	again := own
	ids, _ := m.Keys().Reject("evil")
	m.RemoveMinions(ids, false)
	time.Sleep(100 * time.Millisecond)
	for len(again.got) > 0 {
		<-again.got
	}
	time.Sleep(600 * time.Millisecond) // three heartbeats
	if n := len(again.got); n != 0 {
		t.Fatalf("the rejected minion's subscriber received %d messages after its session ended", n)
	}
	if n := len(stranger.got); n != 0 {
		t.Fatalf("the stranger received %d messages", n)
	}
}

// A credential admits one subscriber, once: replayed after that subscriber has gone (it crossed
// the network in clear), it admits nobody. And a session that ends while its credential is
// being checked leaves no subscriber behind: a compromised minion that authenticates again
// while it shows its old credential on fresh connections, round after round, keeps none of
// them (each would have been a trusted place, never evicted, with no session to end it).
func TestSubscriptionCredentialSingleUse(t *testing.T) {
	m := master.TestMaster(t)
	evil := evilMinion(t, m, "evil", nil, nil)
	cred := evil.credential()
	first := subscribe(t, m, cred, wire.TopicAll)
	tb.WaitFor(t, 5*time.Second, "the first subscriber admitted", func() bool { return len(first.got) > 0 })
	first.s.Close()
	refused := m.TransportStats().SubscribersRefused
	replay := subscribe(t, m, cred, wire.TopicAll)
	tb.WaitFor(t, 5*time.Second, "the replayed credential refused", func() bool {
		return m.TransportStats().SubscribersRefused > refused
	})
	time.Sleep(300 * time.Millisecond)
	if n := len(replay.got); n != 0 {
		t.Fatalf("a replayed credential admitted a subscriber: %d messages", n)
	}

	// The race is narrow (TestPubEvictRacingAdmission in internal/zmtp widens it): here it is
	// run for real, 300 times.
	addr := m.PublishAddr()
	for range 300 {
		cred := evil.credential()
		a, b := rawSub(t, addr), rawSub(t, addr)
		time.Sleep(2 * time.Millisecond) // both past their handshake
		done := make(chan struct{})
		go func() { // the credential shown around the moment the session ends
			defer close(done)
			time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
			a.Write(subFrames(cred, wire.TopicAll))
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			b.Write(subFrames(cred, wire.TopicAll))
		}()
		time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
		if ar := evil.auth("", evil.key); ar.Status != wire.StatusAccepted { // a new session: the old one ends
			t.Fatalf("auth: %s", ar.Status)
		}
		<-done // a and b stay open: a subscriber admitted for an ended session would stay too
	}
	// Every subscriber of an ended session goes; none is left subscribed.
	tb.WaitFor(t, 20*time.Second, "no subscriber of an ended session left", func() bool {
		return m.TransportStats().Subscriptions == 0
	})
}

// rawSub is a SUB connection to addr past its handshake, by hand.
func rawSub(t *testing.T, addr string) net.Conn {
	c, err := zmtpDial(context.Background(), "127.0.0.1", addr, "SUB")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// subFrames are ZMTP subscription messages for topics.
func subFrames(topics ...string) []byte {
	var b []byte
	for _, tp := range topics {
		b = append(b, zmtpFrame(append([]byte{1}, tp...))...)
	}
	return b
}
