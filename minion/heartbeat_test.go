package minion

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

func signedHeartbeat(t *testing.T, k *pki.KeyPair, hb wire.Heartbeat) []byte {
	t.Helper()
	data, err := json.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	return wire.Encode(wire.THeartbeat, wire.Signed(k.Sign(wire.DomainHeartbeat, data), data))
}

// A session acts on a heartbeat only if it verifies, is newer than every one the minion accepted
// and is within heartbeatWindow of the minion's clock; one replayed on the same connection does not
// even count as a sign of life.
func TestHeartbeatBounds(t *testing.T) {
	mk := mustKey(t)
	m := testMinion(t, t.TempDir(), "hb1", mk, pki.NewSessionKey())
	s := &session{m: m}
	now := time.Now()
	hb := func(at time.Time, every time.Duration) wire.Heartbeat {
		return wire.Heartbeat{Time: at, KeyGen: []byte{1, 0, 0, 0, 0, 0, 0, 0}, Interval: time.Second, RequestEvery: every}
	}
	first := signedHeartbeat(t, mk, hb(now, 7*time.Second))
	if iv, live := s.handlePub(first, now); iv != time.Second || !live || s.reqEvery != 7*time.Second {
		t.Fatalf("a fresh heartbeat: interval %v live %v request every %v", iv, live, s.reqEvery)
	}
	for _, c := range []struct {
		name  string
		frame []byte
		live  bool
	}{
		{"the same again", first, false},
		{"an older one", signedHeartbeat(t, mk, hb(now.Add(-time.Second), time.Minute)), false},
		{"another key's", signedHeartbeat(t, mustKey(t), hb(now.Add(time.Second), time.Minute)), false},
		{"too old", signedHeartbeat(t, mk, hb(now.Add(-heartbeatWindow-time.Second), time.Minute)), false},
		{"too far ahead", signedHeartbeat(t, mk, hb(now.Add(heartbeatWindow+time.Second), time.Minute)), true},
	} {
		before := m.refusedHeartbeats.Load()
		iv, live := s.handlePub(c.frame, now)
		if iv != 0 || live != c.live || s.reqEvery != 7*time.Second || m.refusedHeartbeats.Load() != before+1 {
			t.Errorf("%s: interval %v live %v request every %v refused %d", c.name, iv, live, s.reqEvery, m.refusedHeartbeats.Load()-before)
		}
	}
	next := signedHeartbeat(t, mk, hb(now.Add(time.Second), time.Minute))
	if iv, live := s.handlePub(next, now); iv != time.Second || !live || s.reqEvery != time.Minute {
		t.Fatalf("the next fresh heartbeat: interval %v live %v request every %v", iv, live, s.reqEvery)
	}
	// On a new connection, a replay of a heartbeat accepted on the last one is refused too (it
	// proves the publisher alive: a master whose clock lags looks the same); a newer one is not.
	s2 := &session{m: m}
	for _, old := range [][]byte{first, next} {
		before := m.refusedHeartbeats.Load()
		if iv, live := s2.handlePub(old, now); iv != 0 || !live || s2.reqEvery != 0 || m.refusedHeartbeats.Load() != before+1 {
			t.Fatalf("a replay on a new connection: interval %v live %v request every %v", iv, live, s2.reqEvery)
		}
	}
	if iv, _ := s2.handlePub(signedHeartbeat(t, mk, hb(now.Add(2*time.Second), 0)), now); iv != time.Second {
		t.Fatal("a fresh heartbeat refused on a new connection")
	}
}

// relay stands between a minion and a master's publish port, as anyone on the network path can:
// it forwards what the master publishes and keeps the heartbeats, to send them again later.
// While hold is set it keeps them without forwarding them.
type relay struct {
	pub  zmq4.Socket
	hold atomic.Bool

	mu         sync.Mutex
	heartbeats []zmq4.Msg
}

func newRelay(t *testing.T, ms *master.Master) *relay {
	t.Helper()
	q := zmq4.WithLogger(log.New(io.Discard, "", 0))
	r := &relay{pub: zmq4.NewPub(context.Background(), q)}
	if err := r.pub.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { // after the tap's cleanup (registered later), which closes it
		<-done
		r.pub.Close()
	})
	// What the master publishes, as an observer on its publish port's path sees it.
	tap := ms.Published(t)
	go func() {
		defer close(done)
		for frames := range tap {
			msg := zmq4.NewMsgFrom(frames...)
			if typ, _, err := wire.Decode(frames[1], wire.MaxJobFrame); err == nil && typ == wire.THeartbeat {
				r.mu.Lock()
				r.heartbeats = append(r.heartbeats, msg)
				r.mu.Unlock()
				if r.hold.Load() {
					continue
				}
			}
			_ = r.pub.Send(msg)
		}
	}()
	return r
}

// captured returns the heartbeats relayed so far.
func (r *relay) captured() []zmq4.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]zmq4.Msg(nil), r.heartbeats...)
}

func keyGenOf(t *testing.T, msg zmq4.Msg) [8]byte {
	t.Helper()
	body, _ := wire.PubBody(msg.Frames)
	_, b, _ := wire.Decode(body, wire.MaxJobFrame)
	_, data, _ := wire.SplitSigned(b)
	var hb wire.Heartbeat
	if err := json.Unmarshal(data, &hb); err != nil || len(hb.KeyGen) != 8 {
		t.Fatalf("captured heartbeat: %v", err)
	}
	return [8]byte(hb.KeyGen)
}

// relayedOfThisGeneration waits until the relay has kept a heartbeat of ms's current key
// generation and mn has accepted one, and returns the newest such heartbeat kept.
func relayedOfThisGeneration(t *testing.T, ms *master.Master, r *relay, mn *Minion) zmq4.Msg {
	t.Helper()
	gen := ms.KeyGeneration()
	var old zmq4.Msg
	tb.WaitFor(t, 5*time.Second, "a heartbeat relayed and accepted", func() bool {
		for _, msg := range r.captured() {
			if keyGenOf(t, msg) == gen {
				old = msg
			}
		}
		return old.Frames != nil && mn.heartbeats.Load() > 0
	})
	return old
}

// A heartbeat captured before a key rotation and replayed to a real minion after it has no
// effect: without the bound, the minion would take the old key generation for a new one and ask
// the master for another session key (a new key each time, pushing out the previous one that
// jobs in flight are wrapped for).
func TestReplayedHeartbeatHasNoEffect(t *testing.T) {
	ms := master.TestMaster(t)
	r := newRelay(t, ms)
	mn := runMinion(t, r.pub.Addr().String(), ms.RequestAddr(), "hb2", "")
	accept(t, ms, mn.Minion, nil)
	old := relayedOfThisGeneration(t, ms, r, mn.Minion)

	ms.RotateSessionKeys()
	gen1 := ms.KeyGeneration()
	tb.WaitFor(t, 5*time.Second, "the minion's new session key", func() bool {
		sk, gen := mn.keys.session()
		id, _ := ms.SessionKeyID("hb2")
		return gen == gen1 && sk != nil && sk.ID == id
	})
	_, cur, prev := mn.keys.keys()
	masterKey, _ := ms.SessionKeyID("hb2")

	refused := mn.refusedHeartbeats.Load()
	if err := r.pub.Send(old); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 5*time.Second, "the replayed heartbeat refused", func() bool { return mn.refusedHeartbeats.Load() > refused })
	_, cur2, prev2 := mn.keys.keys()
	_, gen := mn.keys.session()
	if id, _ := ms.SessionKeyID("hb2"); id != masterKey || cur2 != cur || prev2 != prev || gen != gen1 {
		t.Fatalf("the replay changed the session: master's key %x -> %x, minion's %p/%p -> %p/%p, generation %x", masterKey, id, cur, prev, cur2, prev2, gen)
	}
}

// A minion that has just restarted remembers no heartbeat: it takes the master's time from the
// reply to its first heartbeat request (sealed under its new session) before it reads anything
// published, so a heartbeat captured before the restart and replayed to it, with no fresh one
// in between, is refused and changes nothing.
func TestReplayAfterRestartHasNoEffect(t *testing.T) {
	ms := master.TestMaster(t)
	r := newRelay(t, ms)
	dir := t.TempDir()
	mn := runMinion(t, r.pub.Addr().String(), ms.RequestAddr(), "hb3", dir)
	accept(t, ms, mn.Minion, nil)
	old := relayedOfThisGeneration(t, ms, r, mn.Minion)
	mn.stop()
	ms.RotateSessionKeys()
	gen1 := ms.KeyGeneration()

	// The relay now keeps the master's fresh heartbeats from the restarted minion.
	r.hold.Store(true)
	again := runMinion(t, r.pub.Addr().String(), ms.RequestAddr(), "hb3", dir)
	tb.WaitFor(t, 10*time.Second, "hb3 connected again", func() bool {
		_, gen := again.keys.session()
		return again.Status() == "connected" && gen == gen1
	})
	_, cur, prev := again.keys.keys()
	masterKey, _ := ms.SessionKeyID("hb3")
	// Sent until it arrives: the minion's subscriptions may not have reached the relay yet,
	// and a PUB drops what no subscription asks for.
	tb.WaitFor(t, 10*time.Second, "the replayed heartbeat refused or taken", func() bool {
		if err := r.pub.Send(old); err != nil {
			t.Fatal(err)
		}
		return again.refusedHeartbeats.Load() > 0 || again.heartbeats.Load() > 0
	})
	_, cur2, prev2 := again.keys.keys()
	_, gen := again.keys.session()
	if again.heartbeats.Load() != 0 {
		t.Errorf("the restarted minion acted on a heartbeat captured before it restarted")
	}
	if id, _ := ms.SessionKeyID("hb3"); id != masterKey || cur2 != cur || prev2 != prev || gen != gen1 {
		t.Fatalf("the replay changed the session: master's key %x -> %x, minion's %p/%p -> %p/%p, generation %x", masterKey, id, cur, prev, cur2, prev2, gen)
	}
}

// A growing fleet's master announces a new request interval at every heartbeat. The minion's
// requests still come at most 1.5 intervals apart: each is a period after the last request, not
// after the latest announcement (which put them off for as long as the fleet grew).
func TestRequestsWhileTheFleetGrows(t *testing.T) {
	start := time.Unix(1e9, 0)
	r := requestSchedule{every: 5 * time.Second, period: 5 * time.Second, last: start}
	due := start.Add(r.period)
	requests := 0
	for i := 1; i <= 120; i++ { // 10 minutes of heartbeats, 5 s apart, from 1,000 minions to 19,000
		at := start.Add(time.Duration(i) * 5 * time.Second)
		for !due.After(at) {
			if gap := due.Sub(r.last); gap > r.every*3/2 {
				t.Fatalf("heartbeat %d: %v between requests, over 1.5 x %v", i, gap, r.every)
			}
			r.last, due = due, due.Add(r.period)
			requests++
		}
		e := time.Duration(1000+150*i) * time.Second / 200
		if r.setEvery(e) {
			due = at.Add(r.wait(at))
		}
		if at.Sub(r.last) > 3*r.every/2 {
			t.Fatalf("heartbeat %d: no request for %v, the interval being %v", i, at.Sub(r.last), r.every)
		}
	}
	if r.setEvery(r.every) {
		t.Fatal("the same interval again counted as a change")
	}
	t.Logf("%d requests in 10 minutes", requests)
}
