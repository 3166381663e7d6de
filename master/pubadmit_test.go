package master_test

import (
	"context"
	"io"
	"log"
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
		if err := s.SetOption(zmq4.OptionSubscribe, tp); err != nil {
			t.Fatal(err)
		}
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
// session held by this master, then only that session's minion's topics, one subscriber per
// session. A stranger subscribed to everything, a forged credential, a replayed one, an
// accepted minion reaching for another's topic, and a rejected minion's subscriber all get
// nothing, while a real minion on the same master gets its jobs.
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

	// Once its own subscriber is gone, the accepted client's credential admits another one, but
	// not to another minion's topic.
	own.s.Close()
	refused1 := m.TransportStats().SubscribersRefused
	var reaching *subscriber
	tb.WaitFor(t, 5*time.Second, "a subscription to another minion's topic refused", func() bool {
		if reaching == nil || m.TransportStats().SubscribersRefused == refused1 {
			// The first tries may meet the old subscriber still holding the session.
			reaching = subscribe(t, m, evil.credential(), wire.TopicMinion("good"))
			time.Sleep(100 * time.Millisecond)
		}
		return m.TransportStats().SubscribersRefused > refused1 && len(reaching.got) == 0
	})
	var again *subscriber
	tb.WaitFor(t, 5*time.Second, "the session's credential admits a new subscriber", func() bool {
		if again == nil || len(again.got) == 0 {
			again = subscribe(t, m, evil.credential(), wire.TopicAll)
			time.Sleep(300 * time.Millisecond)
		}
		return len(again.got) > 0
	})

	// Rejected: its session ends, and its subscriber with it.
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
