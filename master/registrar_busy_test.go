package master

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/internal/zmtp"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
)

// stuckKeys is the master's key store whose PresentAll, once armed, does not return until
// open is closed: a store that stopped answering (a disk whose syncs hang, a database away).
type stuckKeys struct {
	store.Keys
	armed atomic.Bool
	open  chan struct{}
}

func (s *stuckKeys) PresentAll(ps []pki.Presentation, autoAccept bool, allow func(pki.Presentation) bool) ([]pki.MinionKey, []error) {
	if s.armed.Load() {
		<-s.open
	}
	return s.Keys.PresentAll(ps, autoAccept, allow)
}

// newKeyAuth sends, on d, a hello and then the auth of a new id with a new key, as anyone may;
// replies are what d receives. It reports false if no challenge came within 2 s.
func newKeyAuth(t *testing.T, d zmq4.Socket, replies <-chan zmq4.Msg, masterBox pki.PublicKey, id string) bool {
	t.Helper()
	k, err := pki.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	nonce := pki.RandomBytes(32)
	h, _ := json.Marshal(wire.Hello{ID: id, Key: k.Pub.String(), Nonce: nonce})
	if err := d.Send(zmq4.NewMsg(wire.Encode(wire.THello, h))); err != nil {
		t.Fatal(err)
	}
	var msg zmq4.Msg
	select {
	case msg = <-replies:
	case <-time.After(2 * time.Second):
		return false
	}
	_, body, err := wire.Decode(msg.Frames[len(msg.Frames)-1], wire.MaxReplyFrame)
	if err != nil {
		t.Fatal(err)
	}
	_, data, _ := wire.SplitSigned(body)
	var ch wire.Challenge
	if err := json.Unmarshal(data, &ch); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(wire.Auth{ID: id, Key: k.Pub.String(), ClientNonce: nonce, ServerNonce: ch.ServerNonce})
	sealed := k.SealTo(masterBox.Box, wire.Signed(k.Sign(wire.DomainAuth, a), a))
	if err := d.Send(zmq4.NewMsg(wire.Encode(wire.TAuth, wire.AuthFrame(ch.ServerNonce, sealed)))); err != nil {
		t.Fatal(err)
	}
	return true
}

// A key store that stops answering held the registrar, and with its queue full (1,024 auths
// of new ids, which anyone can send: a few seconds at the rate the master answers strangers)
// the two workers that serve unauthenticated peers waited for room, and no minion could
// authenticate again, not even one whose key was accepted long before and whose auth writes
// nothing. Now an auth that finds the queue full is refused (the minion retries), and the
// workers go on.
func TestStuckRegistrarDoesNotStallKnownMinions(t *testing.T) {
	dir, err := os.MkdirTemp("", "brm") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := Config{DataDir: dir, PublishAddr: "127.0.0.1:0", RequestAddr: "127.0.0.1:0", Heartbeat: "200ms",
		PreAuthRate: 100000, PreAuthRatePerSource: 100000, MaxPending: 100000, MaxPendingPerSource: 100000}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := &stuckKeys{Keys: m.keys, open: make(chan struct{})}
	m.keys = keys
	if err := m.Start(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { close(keys.open); m.Close() })

	mdir := t.TempDir()
	start := func() (*minion.Minion, func()) {
		mc := minion.Config{Master: "127.0.0.1", ID: "steady", DataDir: mdir, Heartbeat: "200ms", MaxBackoff: "300ms",
			FactsFunc: func() map[string]any { return map[string]any{"os": "linux", "hostname": "steady"} }}
		if err := mc.Fill(); err != nil {
			t.Fatal(err)
		}
		mc.SetAddrs(m.PublishAddr(), m.RequestAddr())
		mn, err := minion.New(mc, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = mn.Run(ctx) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return mn, stop
	}
	steady, stop := start()
	tb.WaitFor(t, 10*time.Second, "steady pending", func() bool { _, ok := m.keys.Get("steady"); return ok })
	if _, err := m.keys.Accept("steady", nil, false); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 10*time.Second, "steady connected", func() bool { return steady.Status() == "connected" })
	stop()

	keys.armed.Store(true)
	var dealers []zmq4.Socket
	var replies []chan zmq4.Msg
	for range 4 {
		d := zmq4.NewDealer(context.Background(), zmq4.WithLogger(log.New(io.Discard, "", 0)), zmq4.WithDialerMaxRetries(0), zmq4.WithTimeout(5*time.Second))
		if err := d.Dial(zmtp.Endpoint(m.RequestAddr(), wire.MaxReplyFrame)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		ch := make(chan zmq4.Msg, 16)
		go func() {
			for {
				msg, err := d.Recv()
				if err != nil {
					return
				}
				if typ, _, err := wire.Decode(msg.Frames[len(msg.Frames)-1], wire.MaxReplyFrame); err != nil || typ != wire.TChallenge {
					continue // an auth refused for want of room in the queue
				}
				select {
				case ch <- msg:
				default:
				}
			}
		}()
		dealers, replies = append(dealers, d), append(replies, ch)
	}
	// The queue full, and one more auth for each of the two workers (on main they then wait
	// for room, and hellos go unanswered).
	sent := 0
	for i := 0; i < cap(m.regQ)+2+len(dealers); i++ {
		if !newKeyAuth(t, dealers[i%len(dealers)], replies[i%len(dealers)], m.key.Pub, fmt.Sprintf("stranger-%d", i)) {
			break
		}
		sent++
	}
	t.Logf("%d auths of new ids sent; %d wait for the registrar", sent, len(m.regQ))
	steady, _ = start()
	tb.WaitFor(t, 20*time.Second, "steady authenticated again while the registrar is stuck", func() bool { return steady.Status() == "connected" })
}
