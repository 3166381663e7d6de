package minion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
	"golang.org/x/sync/semaphore"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/internal/zmtp"
	"github.com/brinecm/brine/pki"
)

// Errors that end a session.
var (
	errNoSession   = errors.New("the master does not know our session")
	errNotAccepted = errors.New("key not accepted by the master")
	errNotLive     = errors.New("not connected")
)

// Heartbeat bounds. A published heartbeat is signed but in clear, and anyone on its path can
// capture it and send it again later: a minion acts only on a heartbeat whose time is newer than
// that of every heartbeat it accepted before (on any connection: a replay at the start of a new
// one is refused too) and than the master's time in the replies to its heartbeat requests
// (sealed under its session: a minion that has just restarted knows the master's time before it
// reads a published frame), and within heartbeatWindow of its own clock. The window is wide: a
// host whose clock is off ignores heartbeats, it is not cut off, and it still learns a new key
// generation from the replies to its heartbeat requests.
const heartbeatWindow = 5 * time.Minute

// maxPubQueued bounds the bytes of published frames read and not yet handled: one of the
// largest (wire.MaxJobFrame, and the topic) and no more, where 16 of them could wait before.
const maxPubQueued = wire.MaxJobFrame + 64<<10

// dropLogEvery is how often at most a session logs that it dropped published frames, with the
// count since the last line: a flood of them cannot flood the log.
const dropLogEvery = time.Minute

// session is one connection to one master, the half of the minion that talks (Tailscale's
// controlclient "direct"): it dials the master's request and publish ports, authenticates, reads
// both sockets, sends requests and waits for their replies, and serves the master's heartbeats and
// jobs until the connection is lost. It owns its sockets and the goroutines that read them: close
// ends them and returns only when every one has exited. The Minion's Run (the "auto" half) makes
// one session after another, across masters.
type session struct {
	m      *Minion
	addr   masterAddr
	ctx    context.Context // ends with close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the session started

	dealer     zmq4.Socket
	sub        zmq4.Socket         // nil until subscribe
	frames     chan []byte         // from the dealer: the handshake, then replies
	pubs       chan []byte         // from the sub: heartbeats and jobs
	pubMem     *semaphore.Weighted // bytes of the frames in pubs (maxPubQueued): taken by readSub, released once handled
	replies    chan wire.Reply
	readerDone chan struct{} // closed when the dealer's reader ends
	subDone    chan struct{} // closed when the subscriber's reader ends
	sid        []byte

	reqMu sync.Mutex // one request in flight at a time; guards seq
	seq   uint64

	factsMu      sync.Mutex // one facts report at a time; guards the facts fields
	factsSent    []byte     // the facts (JSON) the master accepted last on this session
	factsPending bool       // the last report failed (refused, or no answer): send it again
	factsBackoff int        // heartbeats between tries while pending: 1, 2, 4, ... 64
	factsWait    int        // heartbeats left before the next try

	// Heartbeat state, touched only by serve's goroutine.
	hbLast   time.Time     // the master's time in the newest heartbeat accepted on this session
	hbWarned bool          // a heartbeat outside the window was logged
	reqEvery time.Duration // least heartbeat request interval the master asked for
}

func quiet() zmq4.Option { return zmq4.WithLogger(log.New(io.Discard, "", 0)) }

// dialTimeout bounds a connection attempt to a master's port. zmq4's own default is 5 minutes,
// and a port whose SYNs are dropped (a blackhole on the path, a full listen queue) would hold a
// session that long before the minion tries the next master.
const dialTimeout = 10 * time.Second

// sockOpts are the options of the session's sockets: no retries of their own (the session
// redials), bounded dials and operations.
func sockOpts() []zmq4.Option {
	return []zmq4.Option{quiet(), zmq4.WithDialerMaxRetries(0), zmq4.WithDialerTimeout(dialTimeout), zmq4.WithTimeout(5 * time.Second)}
}

// dial connects the DEALER to addr's request port and starts its reader.
func dial(ctx context.Context, m *Minion, addr masterAddr) (*session, error) {
	sctx, cancel := context.WithCancel(ctx)
	s := &session{m: m, addr: addr, ctx: sctx, cancel: cancel,
		frames: make(chan []byte, 16), pubs: make(chan []byte, 16), pubMem: semaphore.NewWeighted(maxPubQueued),
		replies:    make(chan wire.Reply, 16),
		readerDone: make(chan struct{}), subDone: make(chan struct{})}
	s.dealer = zmq4.NewDealer(sctx, sockOpts()...)
	if err := s.dealer.Dial(zmtp.Endpoint(addr.req, wire.MaxReplyFrame)); err != nil {
		s.close()
		return nil, fmt.Errorf("dial %s: %w", addr.req, err)
	}
	s.spawn(s.readDealer)
	return s, nil
}

// spawn runs f in a goroutine that close waits for.
func (s *session) spawn(f func()) { goTracked(&s.wg, f) }

// close ends the session: it closes both sockets and returns when every goroutine the session
// started has exited.
func (s *session) close() {
	s.cancel()
	_ = s.dealer.Close()
	if s.sub != nil {
		_ = s.sub.Close()
	}
	s.wg.Wait()
}

// readDealer passes the dealer's frames to s.frames until the socket closes.
func (s *session) readDealer() {
	defer close(s.readerDone)
	for {
		msg, err := s.dealer.Recv()
		if err != nil {
			return
		}
		if len(msg.Frames) != 1 {
			continue
		}
		select {
		case s.frames <- msg.Frames[0]:
		case <-s.ctx.Done():
			return
		}
	}
}

// readSub passes the bodies of published messages to s.pubs until the socket closes. It never
// waits for room there: a frame that does not fit is dropped.
//
// Whoever is on the path to the publish port may send frames up to wire.MaxJobFrame. While
// serve is busy (a request waiting for its reply, a full job queue) at most maxPubQueued bytes
// of them, and cap(s.pubs) frames, wait for it. Waiting here for room did not hold the rest
// back: zmq4's SUB reads the connection on its own into a queue of ten messages, so five
// frames of 90 MiB took 450 MiB where the budget allows 100. Dropped, they go as soon as read.
// A job of ours dropped here is not lost: the master lists it as pending in its reply to a
// heartbeat request once a heartbeat has passed, and publishes it again when we ask
// (heartbeatReply).
func (s *session) readSub() {
	defer close(s.subDone)
	var logged time.Time // when a drop was last logged
	var dropped int      // drops since then
	for {
		msg, err := s.sub.Recv()
		if err != nil {
			return
		}
		body, ok := wire.PubBody(msg.Frames)
		if !ok {
			continue
		}
		n := int64(len(body))
		if s.pubMem.TryAcquire(n) {
			select {
			case s.pubs <- body:
				continue
			default:
				s.pubMem.Release(n)
			}
		}
		s.m.droppedPubs.Add(1)
		dropped++
		if now := time.Now(); now.Sub(logged) >= dropLogEvery {
			s.m.log.Warn("dropped published frames: the session is busy and its queue is full; a job among them is asked for again",
				"frames", dropped, "last_frame_bytes", n)
			logged, dropped = now, 0
		}
	}
}

// pumpReplies opens the frames that follow the handshake, so that a request can wait for its own
// reply.
func (s *session) pumpReplies() {
	for {
		select {
		case f := <-s.frames:
			if r, ok := s.openReply(f); ok {
				select {
				case s.replies <- r:
				default:
				}
			}
		case <-s.ctx.Done():
			return
		}
	}
}

// authenticate runs hello -> challenge -> auth -> reply. It returns the master's answer (accepted,
// pending, rejected, denied) and, when accepted, the groups it granted.
func (s *session) authenticate() (string, []string, error) {
	m, keys := s.m, s.m.keys
	nonce := pki.RandomBytes(32)
	hello, _ := json.Marshal(wire.Hello{ID: m.cfg.ID, Key: m.key.Pub.String(), Nonce: nonce})
	if err := s.dealer.Send(zmq4.NewMsg(wire.Encode(wire.THello, hello))); err != nil {
		return "", nil, fmt.Errorf("send hello: %w", err)
	}
	var ch wire.Challenge
	var masterKey pki.PublicKey
	if err := s.await(wire.TChallenge, func(body []byte) bool {
		sig, data, err := wire.SplitSigned(body)
		if err != nil || wire.Unmarshal(data, 8192, &ch) != nil || !bytes.Equal(ch.ClientNonce, nonce) {
			return false
		}
		pk, err := pki.ParsePublicKey(ch.MasterKey)
		if err != nil || !pki.Verify(pk.Sign, wire.DomainChallenge, data, sig) {
			return false
		}
		masterKey = pk
		return true
	}); err != nil {
		return "", nil, fmt.Errorf("challenge: %w", err)
	}
	if err := keys.pin(masterKey); err != nil {
		return "", nil, err
	}
	a := wire.Auth{ID: m.cfg.ID, Key: m.key.Pub.String(), ClientNonce: nonce, ServerNonce: ch.ServerNonce, Groups: m.cfg.Groups}
	if m.cfg.Token != "" {
		if _, err := os.Stat(filepath.Join(m.cfg.DataDir, "enrolled")); err != nil {
			a.Token = m.cfg.Token
		}
	}
	data, _ := json.Marshal(a)
	// Sealed to the master's box key, checked above against the pin: the token and the groups
	// are for the master's eyes only.
	shared := keys.sharedWith(masterKey)
	sealed := shared.Seal(wire.Signed(m.key.Sign(wire.DomainAuth, data), data))
	if err := s.dealer.Send(zmq4.NewMsg(wire.Encode(wire.TAuth, wire.AuthFrame(ch.ServerNonce, sealed)))); err != nil {
		return "", nil, fmt.Errorf("send auth: %w", err)
	}
	var ar wire.AuthReply
	if err := s.await(wire.TAuthReply, func(body []byte) bool {
		opened, ok := shared.Open(body)
		if !ok {
			return false
		}
		sig, data, err := wire.SplitSigned(opened)
		return err == nil && pki.Verify(masterKey.Sign, wire.DomainAuthReply, data, sig) &&
			wire.Unmarshal(data, 8192, &ar) == nil && bytes.Equal(ar.ClientNonce, nonce)
	}); err != nil {
		return "", nil, fmt.Errorf("auth: %w", err)
	}
	if ar.Status != wire.StatusAccepted {
		if ar.Reason != "" {
			return "", nil, fmt.Errorf("master refused auth: %s", ar.Reason)
		}
		return ar.Status, nil, nil
	}
	sk, err := pki.UnmarshalSessionKey(ar.SessionKey)
	if err != nil || len(ar.SessionID) != wire.SessionIDLen || len(ar.KeyGen) != 8 {
		return "", nil, errors.New("bad session in the auth reply")
	}
	s.sid = ar.SessionID
	keys.authenticated(sk, [8]byte(ar.KeyGen))
	return ar.Status, ar.Groups, nil
}

// await waits for a frame of type t whose body check accepts; anything else is ignored.
func (s *session) await(t wire.Type, check func(body []byte) bool) error {
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case f := <-s.frames:
			typ, body, err := wire.Decode(f, wire.MaxReplyFrame)
			if err != nil || typ != t {
				continue
			}
			if check(body) {
				return nil
			}
		case <-timer.C:
			return errors.New("no answer from the master")
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
}

// subscribe connects the SUB to addr's publish port for what concerns this minion (broadcasts,
// its bucket's jobs and its own; wire/topics.go) and starts the readers of an authenticated
// session. The first subscription is the session's credential: the master sends nothing to a
// subscriber without one.
func (s *session) subscribe() error {
	sk, _ := s.m.keys.session()
	if sk == nil {
		return errNotLive
	}
	s.sub = zmq4.NewSub(s.ctx, sockOpts()...)
	if err := s.sub.Dial(zmtp.Endpoint(s.addr.pub, wire.MaxJobFrame+1024)); err != nil {
		return fmt.Errorf("dial %s: %w", s.addr.pub, err)
	}
	_ = s.sub.SetOption(zmq4.OptionSubscribe, wire.SubCredential(s.sid, sk.ID, sk.SealTagged(wire.DomainSubscribe, s.sid)))
	for _, topic := range wire.MinionTopics(s.m.cfg.ID) {
		_ = s.sub.SetOption(zmq4.OptionSubscribe, topic)
	}
	s.spawn(s.readSub)
	s.spawn(s.pumpReplies)
	return nil
}

// openReply opens a Reply frame from the master, sealed under one of our session keys, or
// verifies a NoSession for our session (returned as a Reply with NoSession set).
func (s *session) openReply(f []byte) (wire.Reply, bool) {
	var r wire.Reply
	typ, body, err := wire.Decode(f, wire.MaxReplyFrame)
	if err != nil {
		return r, false
	}
	mk, cur, prev := s.m.keys.keys()
	switch typ {
	case wire.TNoSession:
		sig, data, err := wire.SplitSigned(body)
		var ns wire.NoSession
		if err != nil || mk == nil || !pki.Verify(mk.Sign, wire.DomainNoSession, data, sig) ||
			wire.Unmarshal(data, 4096, &ns) != nil || !bytes.Equal(ns.SessionID, s.sid) {
			return r, false
		}
		r.NoSession = true
		return r, true
	case wire.TReply:
		rsid, keyID, sealed, err := wire.SplitSession(body)
		if err != nil || !bytes.Equal(rsid, s.sid) {
			return r, false
		}
		var k *pki.SessionKey
		switch {
		case cur != nil && cur.ID == keyID:
			k = cur
		case prev != nil && prev.ID == keyID:
			k = prev
		default:
			return r, false
		}
		data, ok := k.OpenTagged(wire.DomainReply, sealed)
		if !ok || wire.Unmarshal(data, wire.MaxReplyFrame, &r) != nil {
			return wire.Reply{}, false
		}
		return r, true
	}
	return r, false
}

// refusedError is the master's answer "no" to a request (as opposed to no answer).
type refusedError struct{ kind, why string }

func (e *refusedError) Error() string { return "master refused " + e.kind + ": " + e.why }

// request sends one sealed request and waits for its reply.
func (s *session) request(kind string, body any) (wire.Reply, error) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	sk, _ := s.m.keys.session()
	if sk == nil {
		return wire.Reply{}, errNotLive
	}
	var raw json.RawMessage
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return wire.Reply{}, err
		}
	}
	s.seq++
	req := wire.Request{Seq: s.seq, Kind: kind, Body: raw}
	data, _ := json.Marshal(req)
	if err := s.dealer.Send(zmq4.NewMsg(wire.SessionFrame(wire.TRequest, s.sid, sk.ID, sk.SealTagged(wire.DomainRequest, data)))); err != nil {
		return wire.Reply{}, fmt.Errorf("send %s: %w", kind, err)
	}
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for {
		select {
		case r := <-s.replies:
			if r.NoSession {
				return r, errNoSession
			}
			if r.Seq != req.Seq {
				continue
			}
			if !r.OK {
				return r, &refusedError{kind: kind, why: r.Error}
			}
			return r, nil
		case <-timer.C:
			return wire.Reply{}, fmt.Errorf("%s: no reply from the master", kind)
		case <-s.readerDone:
			return wire.Reply{}, errors.New("connection lost")
		}
	}
}

// reportFacts sends facts to the master unless they are those it accepted last on this session:
// a minion reports its facts at the start of each session and after each apply, and most applies
// change none. The master keeps the last facts of the session (and records the address they
// came from, which a session does not change), so an unchanged report would only cost it and us
// a round trip. One report at a time: the facts remembered are those the master has.
func (s *session) reportFacts(facts map[string]any) error {
	raw, err := json.Marshal(facts)
	if err != nil {
		return err
	}
	s.factsMu.Lock()
	defer s.factsMu.Unlock()
	if s.factsSent != nil && bytes.Equal(raw, s.factsSent) {
		s.factsPending, s.factsBackoff = false, 0 // the master holds these
		return nil
	}
	if _, err := s.request(wire.KindFacts, json.RawMessage(raw)); err != nil {
		s.factsPending = true
		s.factsBackoff = min(max(1, 2*s.factsBackoff), 64)
		s.factsWait = s.factsBackoff
		return err
	}
	s.factsSent, s.factsPending, s.factsBackoff = raw, false, 0
	s.m.factsReports.Add(1)
	return nil
}

// factsDue reports, once per heartbeat, whether to send facts again: the last report failed
// and its back-off has passed (1, 2, 4, ... up to 64 heartbeats between tries, so that facts the
// master will never take cost it little).
func (s *session) factsDue() bool {
	s.factsMu.Lock()
	defer s.factsMu.Unlock()
	if !s.factsPending {
		return false
	}
	s.factsWait--
	return s.factsWait <= 0
}

// serve reports facts, sends what the outbox holds, and then serves heartbeats and jobs until the
// connection is lost (an error) or ctx ends (nil).
func (s *session) serve(ctx context.Context) error {
	m := s.m
	if err := s.reportFacts(m.facts()); err != nil {
		var refused *refusedError
		if !errors.As(err, &refused) {
			return err
		}
		// The master keeps the facts it had; they are sent again after heartbeat requests
		// (factsDue). Ending the session would only make it ask again at once.
		m.log.Warn("the master refused our facts; sending them again after the next heartbeat", "err", err)
	}
	m.box.flush(s.request)
	// A job published while we were away, or before our subscription was up, is still live on
	// the master: the first heartbeat's reply names it, and we ask for it again. The reply also
	// gives the master's time before we read anything published (s.pubs waits): a heartbeat
	// captured before it, replayed to a minion that has just restarted, is refused.
	if r, err := s.request(wire.KindHeartbeat, nil); err == nil {
		s.heartbeatReply(r, time.Now())
	}

	sched := requestSchedule{every: m.cfg.heartbeat, period: m.cfg.heartbeat, last: time.Now()}
	hb := time.NewTimer(sched.period)
	defer hb.Stop()
	lastPub := time.Now()
	// The publish side is silent for at most three of the master's heartbeat intervals; until a
	// heartbeat says what that interval is, assume the default.
	silence := 3 * max(m.cfg.heartbeat, 5*time.Second)
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-s.pubs:
			iv, live := s.handlePub(f, time.Now())
			s.pubMem.Release(int64(len(f)))
			if live {
				lastPub = time.Now()
			}
			if iv > 0 {
				silence = 3 * max(iv, m.cfg.heartbeat)
			}
			// A master with a large fleet asks for fewer heartbeat requests.
			if now := time.Now(); sched.setEvery(max(m.cfg.heartbeat, s.reqEvery)) {
				hb.Reset(sched.wait(now))
			}
		case <-s.readerDone:
			// The master closed the connection or went (its sockets do not reconnect): move on
			// now, not at the next heartbeat, which a large fleet spaces by many seconds.
			return errors.New("lost the request connection to the master")
		case <-s.subDone:
			return errors.New("lost the publish connection to the master")
		case <-hb.C:
			if time.Since(lastPub) > silence {
				return errors.New("no heartbeat from the master")
			}
			sched.last = time.Now()
			hb.Reset(sched.period)
			r, err := s.request(wire.KindHeartbeat, nil)
			if err != nil {
				return err
			}
			s.checkKeyGen(r.KeyGen)
			m.box.tryFlush(s.request)
			s.heartbeatReply(r, time.Now())
			if s.factsDue() {
				_ = s.reportFacts(m.facts()) // failed again: again after a longer back-off
			}
		}
	}
}

// requestSchedule spaces a session's heartbeat requests. When the interval e the master asks
// for changes, the minion picks its own period in [e, 1.5e), so that a fleet told at once does
// not tick at once, and the period counts from the last request. A growing fleet announces a
// new interval at every heartbeat: had each restarted the wait from then, a minion would make
// no request for as long as the fleet grew (at 9,000 minions over three masters, half of their
// presence leases lapsed while minions connected, and again during a failover).
type requestSchedule struct {
	every  time.Duration // the interval in force
	period time.Duration // this minion's period for it
	last   time.Time     // the last request
}

// setEvery takes e as the interval and reports whether it changed (and the period with it).
func (r *requestSchedule) setEvery(e time.Duration) bool {
	if e == r.every {
		return false
	}
	r.every, r.period = e, e+rand.N(e/2+1)
	return true
}

// wait is the time from now to the next request: a period after the last one, or none.
func (r *requestSchedule) wait(now time.Time) time.Duration {
	return max(0, r.last.Add(r.period).Sub(now))
}

// heartbeatReply takes what the reply to a heartbeat request says. Its time (the reply is
// authenticated by our session) raises the newest heartbeat time we know of, within
// heartbeatWindow of our clock as a published heartbeat's would: older published heartbeats
// are replays. Then we ask the master to publish again the jobs it says are pending for us that
// we never received; jobs we have seen (running now, or returned but not yet acknowledged) are
// not asked for.
func (s *session) heartbeatReply(r wire.Reply, now time.Time) {
	if len(r.Body) == 0 {
		return
	}
	var hb wire.HeartbeatReply
	if wire.Unmarshal(r.Body, 64<<10, &hb) != nil {
		return
	}
	if t := hb.Time; !t.Before(now.Add(-heartbeatWindow)) && !t.After(now.Add(heartbeatWindow)) {
		if n := t.UnixNano(); n > s.m.newestHeartbeat.Load() {
			s.m.newestHeartbeat.Store(n)
		}
	}
	var missed []string
	for _, jid := range hb.Pending {
		if !s.m.seen.has(jid) {
			missed = append(missed, jid)
		}
	}
	if len(missed) == 0 {
		return
	}
	s.m.log.Info("asking the master for jobs we missed", "jids", missed)
	if _, err := s.request(wire.KindResend, wire.ResendBody{JIDs: missed}); err != nil {
		s.m.log.Warn("resend request failed", "err", err)
	}
}

// checkKeyGen asks the master for a new session key of our own when it has started a new key
// generation (RotateSessionKeys). The new key comes sealed to our box key inside the sealed
// reply; the old one is kept for jobs wrapped before the rotation.
func (s *session) checkKeyGen(gen []byte) {
	keys := s.m.keys
	cur, have := keys.session()
	if len(gen) != len(have) || cur == nil || bytes.Equal(have[:], gen) {
		return
	}
	r, err := s.request(wire.KindSession, nil)
	if err != nil {
		s.m.log.Warn("cannot fetch the new session key", "err", err)
		return
	}
	var sb wire.SessionBody
	mk := keys.pinned()
	if wire.Unmarshal(r.Body, 4096, &sb) != nil || mk == nil || len(sb.KeyGen) != len(have) {
		return
	}
	raw, ok := s.m.key.OpenFrom(mk.Box, sb.SessionKey)
	if !ok {
		return
	}
	if sk, err := pki.UnmarshalSessionKey(raw); err == nil {
		keys.rotated(cur, sk, [8]byte(sb.KeyGen))
	}
}

// handlePub handles one published frame: a heartbeat or a job. It returns the master's heartbeat
// interval when the frame is a heartbeat it accepts, and whether the frame counts as a sign of
// life of the publish side: a heartbeat that does not verify, or is no newer than one already
// accepted on this connection (a replay), does not. An older heartbeat than one accepted on an
// earlier connection may come from a master whose clock lags the last one's: it is not acted
// on, but it is a sign of life.
func (s *session) handlePub(f []byte, now time.Time) (interval time.Duration, live bool) {
	typ, body, err := wire.Decode(f, wire.MaxJobFrame)
	if err != nil {
		return 0, false // not the master's: it does not show that the master is there
	}
	switch typ {
	case wire.THeartbeat:
		sig, data, err := wire.SplitSigned(body)
		mk := s.m.keys.pinned()
		var hb wire.Heartbeat
		if err != nil || mk == nil || !pki.Verify(mk.Sign, wire.DomainHeartbeat, data, sig) || wire.Unmarshal(data, 4096, &hb) != nil {
			s.m.refusedHeartbeats.Add(1)
			return 0, false
		}
		if !hb.Time.After(s.hbLast) {
			s.m.refusedHeartbeats.Add(1)
			return 0, false
		}
		if hb.Time.UnixNano() <= s.m.newestHeartbeat.Load() {
			s.m.refusedHeartbeats.Add(1)
			return 0, true
		}
		if hb.Time.Before(now.Add(-heartbeatWindow)) || hb.Time.After(now.Add(heartbeatWindow)) {
			s.m.refusedHeartbeats.Add(1)
			if !s.hbWarned {
				s.hbWarned = true
				s.m.log.Warn("ignoring heartbeats whose time is too far from ours: is this host's clock right?",
					"heartbeat_time", hb.Time, "window", heartbeatWindow)
			}
			return 0, true
		}
		s.hbLast = hb.Time
		s.m.newestHeartbeat.Store(hb.Time.UnixNano())
		s.m.heartbeats.Add(1)
		s.checkKeyGen(hb.KeyGen)
		s.reqEvery = min(max(hb.RequestEvery, 0), time.Hour)
		return min(max(hb.Interval, 0), time.Hour), true
	case wire.TJob:
		s.m.exec.receive(body, s.m.cfg.heartbeat)
	}
	return 0, true
}
