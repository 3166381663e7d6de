// Package minion is brine's agent: it connects out to the master, proves its identity,
// receives signed and encrypted jobs, refuses any it should not run, applies the rest with the
// states engine and returns signed results, kept on disk until the master acknowledges them.
// A Minion has no globals, so many can run in one process (each with its own data dir).
package minion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/internal/zmtp"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/bounded"
	"github.com/brinecm/brine/states/resources/builtin"
)

// Errors that end a connection attempt.
var (
	ErrMasterKeyChanged = errors.New("the master's key differs from the pinned one; refusing it")
	errNoSession        = errors.New("the master does not know our session")
	errNotAccepted      = errors.New("key not accepted by the master")
)

// Minion is one agent. Create with New, run with Run.
type Minion struct {
	cfg  Config
	log  *slog.Logger
	key  *pki.KeyPair
	seen *seenJobs
	jobs chan job // to the executor

	mu        sync.Mutex // guards the fields below
	masterKey *pki.PublicKey
	sk        *pki.SessionKey // this minion's own session key: requests, replies, job wraps
	skPrev    *pki.SessionKey // the one before the last rotation, for jobs wrapped before it
	keyGen    [8]byte         // the master's key generation sk was made in
	shared    *pki.SharedKey  // the box key shared with the master's box key sharedFor (auth)
	sharedFor [32]byte
	conn      *conn // the live connection, nil between connections
	groups    []string
	status    string
	applied   int
	reqEvery  time.Duration // least heartbeat request interval the master asked for

	reqMu sync.Mutex // one request in flight at a time
}

type job struct {
	meta   wire.JobMeta
	bundle []byte
}

// conn is one authenticated connection to the master.
type conn struct {
	dealer  zmq4.Socket
	sub     zmq4.Socket
	replies chan wire.Reply
	sid     []byte
	seq     uint64
	done    chan struct{}
}

// New loads (or creates) the minion's key and state in cfg.DataDir.
func New(cfg Config, logger *slog.Logger) (*Minion, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.heartbeat == 0 {
		if err := cfg.Fill(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "outbox"), 0o700); err != nil {
		return nil, fmt.Errorf("minion data dir: %w", err)
	}
	key, _, err := pki.LoadOrCreateKeyPair(filepath.Join(cfg.DataDir, "minion.key"))
	if err != nil {
		return nil, err
	}
	seen, err := openSeen(filepath.Join(cfg.DataDir, "seen.json"))
	if err != nil {
		return nil, err
	}
	m := &Minion{cfg: cfg, log: logger.With("minion", cfg.ID), key: key, seen: seen, jobs: make(chan job, 64), status: "starting"}
	if data, err := os.ReadFile(filepath.Join(cfg.DataDir, "master.pub")); err == nil {
		if pk, err := pki.ParsePublicKey(string(data)); err == nil {
			m.masterKey = &pk
		}
	}
	return m, nil
}

// Key returns the minion's public key.
func (m *Minion) Key() pki.PublicKey { return m.key.Pub }

// ID returns the minion's id.
func (m *Minion) ID() string { return m.cfg.ID }

// Status says where the minion stands: starting, connecting, pending, rejected, denied,
// connected, or why it last failed.
func (m *Minion) Status() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Applied counts the jobs this minion has run since it started.
func (m *Minion) Applied() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

func (m *Minion) setStatus(s string) {
	m.mu.Lock()
	m.status = s
	m.mu.Unlock()
}

// failoverJitter bounds the pause before trying the next master of a list after losing one:
// the minions of a dead master spread their reconnections over it instead of arriving at once.
const failoverJitter = time.Second

// Run connects to the master and serves jobs until ctx ends, reconnecting forever. With several
// masters (Config.Masters) it takes them in a random order and, on losing one, goes to the next
// after a jittered pause of at most failoverJitter; once every master failed in a row it backs
// off, exponentially with jitter up to max_backoff, as it does with one master.
func (m *Minion) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); m.executor(ctx) }()
	defer wg.Wait()
	masters := m.cfg.masters
	if len(masters) == 0 {
		masters = []masterAddr{{pub: m.cfg.pubAddr, req: m.cfg.reqAddr}}
	}
	order := rand.Perm(len(masters))
	backoff := 100 * time.Millisecond
	failed := 0 // connections in a row that did not reach an accepted session
	for i := 0; ctx.Err() == nil; i++ {
		m.setStatus("connecting")
		addr := masters[order[i%len(masters)]]
		authed, err := m.connect(ctx, addr)
		if ctx.Err() != nil {
			break
		}
		if authed {
			backoff, failed = 100*time.Millisecond, 0
		} else {
			failed++
		}
		if err != nil {
			m.setStatus(err.Error())
			m.log.Info("disconnected from the master", "master", addr.req, "err", err)
		}
		var wait time.Duration
		if len(masters) > 1 && (failed == 0 || failed%len(masters) != 0) {
			wait = rand.N(failoverJitter) // the next master may well be up
		} else {
			wait = backoff/2 + rand.N(backoff/2+1)
			backoff = min(backoff*2, m.cfg.maxBackoff)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

func quiet() zmq4.Option { return zmq4.WithLogger(log.New(io.Discard, "", 0)) }

// connect runs one connection: authenticate, subscribe, report, serve. It reports whether it
// got as far as an accepted session.
func (m *Minion) connect(ctx context.Context, addr masterAddr) (bool, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dealer := zmq4.NewDealer(cctx, quiet(), zmq4.WithDialerMaxRetries(0), zmq4.WithTimeout(5*time.Second))
	defer dealer.Close()
	if err := dealer.Dial(zmtp.Endpoint(addr.req, wire.MaxReplyFrame)); err != nil {
		return false, fmt.Errorf("dial %s: %w", addr.req, err)
	}
	c := &conn{dealer: dealer, replies: make(chan wire.Reply, 16), done: make(chan struct{})}
	frames := make(chan []byte, 16)
	go func() {
		defer close(c.done)
		for {
			msg, err := dealer.Recv()
			if err != nil {
				return
			}
			if len(msg.Frames) != 1 {
				continue
			}
			select {
			case frames <- msg.Frames[0]:
			case <-cctx.Done():
				return
			}
		}
	}()
	status, groups, err := m.authenticate(cctx, c, frames)
	if err != nil {
		return false, err
	}
	if status != wire.StatusAccepted {
		m.setStatus(status)
		m.log.Info("waiting for the master to accept our key", "status", status, "finger", m.key.Pub.Fingerprint())
		return false, fmt.Errorf("%w (%s)", errNotAccepted, status)
	}
	if m.cfg.Token != "" {
		_ = atomicfile.Write(filepath.Join(m.cfg.DataDir, "enrolled"), []byte("token used\n"), 0o600)
	}
	sub := zmq4.NewSub(cctx, quiet(), zmq4.WithDialerMaxRetries(0), zmq4.WithTimeout(5*time.Second))
	defer sub.Close()
	if err := sub.Dial(zmtp.Endpoint(addr.pub, wire.MaxJobFrame+1024)); err != nil {
		return true, fmt.Errorf("dial %s: %w", addr.pub, err)
	}
	// Only what concerns us: broadcasts, our bucket's jobs and our own (wire/topics.go).
	for _, topic := range wire.MinionTopics(m.cfg.ID) {
		_ = sub.SetOption(zmq4.OptionSubscribe, topic)
	}
	c.sub = sub
	pubs := make(chan []byte, 16)
	go func() {
		for {
			msg, err := sub.Recv()
			if err != nil {
				return
			}
			body, ok := wire.PubBody(msg.Frames)
			if !ok {
				continue
			}
			select {
			case pubs <- body:
			case <-cctx.Done():
				return
			}
		}
	}()
	// Replies are read by a pump so that requests can wait for their own.
	go func() {
		for {
			select {
			case f := <-frames:
				if r, ok := m.openReply(f, c.sid); ok {
					select {
					case c.replies <- r:
					default:
					}
				}
			case <-cctx.Done():
				return
			}
		}
	}()
	m.mu.Lock()
	m.conn, m.groups = c, groups
	m.status = "connected"
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.conn == c {
			m.conn = nil
		}
		m.mu.Unlock()
	}()
	m.log.Info("connected to the master", "master", addr.req, "groups", groups)
	if err := m.sendFacts(); err != nil {
		return true, err
	}
	m.flushOutbox()
	// A job published while we were away, or before our subscription was up, is still live on
	// the master: the first heartbeat's reply names it, and we ask for it again.
	if r, err := m.request(wire.KindHeartbeat, nil); err == nil {
		m.askForMissed(r)
	}

	hb := time.NewTicker(m.cfg.heartbeat)
	defer hb.Stop()
	every := m.cfg.heartbeat // the heartbeat request interval in force
	lastPub := time.Now()
	// The publish side is silent for at most three of the master's heartbeat intervals; until a
	// heartbeat says what that interval is, assume the default.
	silence := 3 * max(m.cfg.heartbeat, 5*time.Second)
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case f := <-pubs:
			lastPub = time.Now()
			if iv := m.handlePub(f); iv > 0 {
				silence = 3 * max(iv, m.cfg.heartbeat)
			}
			// A master with a large fleet asks for fewer heartbeat requests. Each minion picks
			// its own period in [e, 1.5e), so that a fleet told at once does not tick at once.
			if e := max(m.cfg.heartbeat, m.requestEvery()); e != every {
				every = e
				hb.Reset(e + rand.N(e/2+1))
			}
		case <-hb.C:
			if time.Since(lastPub) > silence {
				return true, errors.New("no heartbeat from the master")
			}
			r, err := m.request(wire.KindHeartbeat, nil)
			if err != nil {
				return true, err
			}
			m.checkKeyGen(r.KeyGen)
			m.flushOutbox()
			m.askForMissed(r)
		}
	}
}

// askForMissed asks the master to publish again the jobs a heartbeat reply says are pending for
// us that we never received. Jobs we have seen (running now, or returned but not yet
// acknowledged) are not asked for.
func (m *Minion) askForMissed(r wire.Reply) {
	if len(r.Body) == 0 {
		return
	}
	var hb wire.HeartbeatReply
	if wire.Unmarshal(r.Body, 64<<10, &hb) != nil {
		return
	}
	var missed []string
	for _, jid := range hb.Pending {
		if !m.seen.has(jid) {
			missed = append(missed, jid)
		}
	}
	if len(missed) == 0 {
		return
	}
	m.log.Info("asking the master for jobs we missed", "jids", missed)
	if _, err := m.request(wire.KindResend, wire.ResendBody{JIDs: missed}); err != nil {
		m.log.Warn("resend request failed", "err", err)
	}
}

// authenticate runs hello -> challenge -> auth -> reply.
func (m *Minion) authenticate(ctx context.Context, c *conn, frames <-chan []byte) (string, []string, error) {
	nonce := pki.RandomBytes(32)
	hello, _ := json.Marshal(wire.Hello{ID: m.cfg.ID, Key: m.key.Pub.String(), Nonce: nonce})
	if err := c.dealer.Send(zmq4.NewMsg(wire.Encode(wire.THello, hello))); err != nil {
		return "", nil, fmt.Errorf("send hello: %w", err)
	}
	var ch wire.Challenge
	var masterKey pki.PublicKey
	if err := m.await(ctx, frames, wire.TChallenge, func(body []byte) bool {
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
	if err := m.pin(masterKey); err != nil {
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
	shared := m.sharedWith(masterKey)
	sealed := shared.Seal(wire.Signed(m.key.Sign(wire.DomainAuth, data), data))
	if err := c.dealer.Send(zmq4.NewMsg(wire.Encode(wire.TAuth, wire.AuthFrame(ch.ServerNonce, sealed)))); err != nil {
		return "", nil, fmt.Errorf("send auth: %w", err)
	}
	var ar wire.AuthReply
	if err := m.await(ctx, frames, wire.TAuthReply, func(body []byte) bool {
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
	c.sid = ar.SessionID
	m.mu.Lock()
	m.sk, m.skPrev, m.keyGen = sk, nil, [8]byte(ar.KeyGen)
	m.mu.Unlock()
	return ar.Status, ar.Groups, nil
}

// await waits for a frame of type t whose body check accepts; anything else is ignored.
func (m *Minion) await(ctx context.Context, frames <-chan []byte, t wire.Type, check func(body []byte) bool) error {
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case f := <-frames:
			typ, body, err := wire.Decode(f, wire.MaxReplyFrame)
			if err != nil || typ != t {
				continue
			}
			if check(body) {
				return nil
			}
		case <-timer.C:
			return errors.New("no answer from the master")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pin checks the master's key against master_finger, or the key stored on first use.
func (m *Minion) pin(k pki.PublicKey) error {
	if m.cfg.MasterFinger != "" {
		if pki.NormalizeFingerprint(m.cfg.MasterFinger) != pki.NormalizeFingerprint(k.Fingerprint()) {
			m.log.Error("master key does not match master_finger", "presented", k.Fingerprint())
			return ErrMasterKeyChanged
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.masterKey != nil {
		if !m.masterKey.Equal(k) {
			m.log.Error("master key changed since first use; refusing it", "pinned", m.masterKey.Fingerprint(), "presented", k.Fingerprint())
			return ErrMasterKeyChanged
		}
		return nil
	}
	if err := atomicfile.Write(filepath.Join(m.cfg.DataDir, "master.pub"), []byte(k.String()+"\n"), 0o600); err != nil {
		return err
	}
	m.masterKey = &k
	if m.cfg.MasterFinger != "" {
		m.log.Info("pinned the master's key (it matches master_finger)", "finger", k.Fingerprint())
	} else {
		m.log.Info("pinned the master's key on first use", "finger", k.Fingerprint())
	}
	return nil
}

// sharedWith returns the box key shared with the (pinned) master key k, computed once: a
// reconnecting minion does no scalar multiplication for its auth.
func (m *Minion) sharedWith(k pki.PublicKey) *pki.SharedKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shared == nil || m.sharedFor != k.Box {
		m.shared, m.sharedFor = m.key.Shared(k.Box), k.Box
	}
	return m.shared
}

func (m *Minion) pinned() *pki.PublicKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.masterKey
}

// openReply opens a Reply frame from the master, sealed under one of our session keys, or
// verifies a NoSession for our session (returned as a Reply with NoSession set).
func (m *Minion) openReply(f []byte, sid []byte) (wire.Reply, bool) {
	var r wire.Reply
	typ, body, err := wire.Decode(f, wire.MaxReplyFrame)
	if err != nil {
		return r, false
	}
	m.mu.Lock()
	mk, cur, prev := m.masterKey, m.sk, m.skPrev
	m.mu.Unlock()
	switch typ {
	case wire.TNoSession:
		sig, data, err := wire.SplitSigned(body)
		var ns wire.NoSession
		if err != nil || mk == nil || !pki.Verify(mk.Sign, wire.DomainNoSession, data, sig) ||
			wire.Unmarshal(data, 4096, &ns) != nil || !bytes.Equal(ns.SessionID, sid) {
			return r, false
		}
		r.NoSession = true
		return r, true
	case wire.TReply:
		rsid, keyID, sealed, err := wire.SplitSession(body)
		if err != nil || !bytes.Equal(rsid, sid) {
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

// request sends one sealed request over the live connection and waits for its reply.
func (m *Minion) request(kind string, body any) (wire.Reply, error) {
	m.reqMu.Lock()
	defer m.reqMu.Unlock()
	m.mu.Lock()
	c, sk := m.conn, m.sk
	m.mu.Unlock()
	if c == nil || sk == nil {
		return wire.Reply{}, errors.New("not connected")
	}
	var raw json.RawMessage
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return wire.Reply{}, err
		}
	}
	c.seq++
	req := wire.Request{Seq: c.seq, Kind: kind, Body: raw}
	data, _ := json.Marshal(req)
	if err := c.dealer.Send(zmq4.NewMsg(wire.SessionFrame(wire.TRequest, c.sid, sk.ID, sk.SealTagged(wire.DomainRequest, data)))); err != nil {
		return wire.Reply{}, fmt.Errorf("send %s: %w", kind, err)
	}
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for {
		select {
		case r := <-c.replies:
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
		case <-c.done:
			return wire.Reply{}, errors.New("connection lost")
		}
	}
}

func (m *Minion) facts() map[string]any {
	if m.cfg.FactsFunc != nil {
		return m.cfg.FactsFunc()
	}
	extra := map[string]any{}
	for k, v := range m.cfg.ExtraFacts {
		extra[k] = v
	}
	return states.Facts(builtin.Types(), extra)
}

func (m *Minion) sendFacts() error {
	_, err := m.request(wire.KindFacts, m.facts())
	return err
}

// checkKeyGen asks the master for a new session key of our own when it has started a new key
// generation (RotateSessionKeys). The new key comes sealed to our box key inside the sealed
// reply; the old one is kept for jobs wrapped before the rotation.
func (m *Minion) checkKeyGen(gen []byte) {
	m.mu.Lock()
	cur, have := m.sk, m.keyGen
	m.mu.Unlock()
	if len(gen) != len(have) || cur == nil || bytes.Equal(have[:], gen) {
		return
	}
	r, err := m.request(wire.KindSession, nil)
	if err != nil {
		m.log.Warn("cannot fetch the new session key", "err", err)
		return
	}
	var sb wire.SessionBody
	mk := m.pinned()
	if wire.Unmarshal(r.Body, 4096, &sb) != nil || mk == nil || len(sb.KeyGen) != len(have) {
		return
	}
	raw, ok := m.key.OpenFrom(mk.Box, sb.SessionKey)
	if !ok {
		return
	}
	if sk, err := pki.UnmarshalSessionKey(raw); err == nil {
		m.mu.Lock()
		if m.sk == cur { // not replaced by a new authentication meanwhile
			m.skPrev, m.sk, m.keyGen = cur, sk, [8]byte(sb.KeyGen)
		}
		m.mu.Unlock()
	}
}

// handlePub handles one published frame: a heartbeat or a job. For a verified heartbeat it
// returns the master's heartbeat interval.
func (m *Minion) handlePub(f []byte) time.Duration {
	typ, body, err := wire.Decode(f, wire.MaxJobFrame)
	if err != nil {
		return 0
	}
	switch typ {
	case wire.THeartbeat:
		sig, data, err := wire.SplitSigned(body)
		mk := m.pinned()
		var hb wire.Heartbeat
		if err != nil || mk == nil || !pki.Verify(mk.Sign, wire.DomainHeartbeat, data, sig) || wire.Unmarshal(data, 4096, &hb) != nil {
			return 0
		}
		m.checkKeyGen(hb.KeyGen)
		m.mu.Lock()
		m.reqEvery = min(max(hb.RequestEvery, 0), time.Hour)
		m.mu.Unlock()
		return min(max(hb.Interval, 0), time.Hour)
	case wire.TJob:
		j, err := m.OpenJob(body, time.Now())
		if err != nil {
			if !errors.Is(err, ErrNotForUs) {
				m.log.Warn("refused a job", "err", err)
			}
			return 0
		}
		select {
		case m.jobs <- j:
		case <-time.After(m.cfg.heartbeat):
			m.log.Warn("job queue full; dropped a job", "jid", j.meta.JID)
		}
	}
	return 0
}

// requestEvery returns the least heartbeat request interval the master last asked for.
func (m *Minion) requestEvery() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reqEvery
}

// refusedError is the master's answer "no" to a request (as opposed to no answer).
type refusedError struct{ kind, why string }

func (e *refusedError) Error() string { return "master refused " + e.kind + ": " + e.why }

// Job refusals.
var (
	ErrNotForUs   = errors.New("job is not addressed to this minion")
	ErrJobExpired = errors.New("job expired")
	ErrJobReplay  = errors.New("job already seen (replay)")
)

// OpenJob decrypts and verifies a TJob body and decides whether this minion may run it: its
// job key wrapped for our session key, signed by the pinned master key, bundle digest matching,
// not expired, never seen before, addressed to this minion. A job that passes is recorded as
// seen (on disk) before it is returned, so it runs at most once, also across restarts. A frame
// with no wrap for us (a bucket's job for other minions) is ErrNotForUs.
func (m *Minion) OpenJob(body []byte, now time.Time) (job, error) {
	jb, err := wire.SplitJob(body)
	if err != nil {
		return job{}, err
	}
	m.mu.Lock()
	cur, prev, mk := m.sk, m.skPrev, m.masterKey
	m.mu.Unlock()
	if mk == nil {
		return job{}, errors.New("no pinned master key")
	}
	var jk *pki.JobKey
	for _, sk := range []*pki.SessionKey{cur, prev} {
		if sk == nil {
			continue
		}
		if w, ok := jb.WrapFor(sk.ID); ok {
			if jk, ok = sk.Unwrap(&jb.Nonce, w); !ok {
				return job{}, errors.New("job key does not decrypt")
			}
			break
		}
	}
	if jk == nil {
		return job{}, ErrNotForUs
	}
	signed, ok := jk.Open(jb.Payload)
	if !ok {
		return job{}, errors.New("job does not decrypt")
	}
	content, ok := pki.OpenAttached(mk.Sign, signed)
	if !ok {
		return job{}, errors.New("job signature does not verify against the pinned master key")
	}
	metaRaw, bundle, err := wire.UnpackJob(content)
	if err != nil {
		return job{}, err
	}
	var meta wire.JobMeta
	if err := wire.Unmarshal(metaRaw, wire.MaxJobFrame, &meta); err != nil {
		return job{}, err
	}
	found := false
	for _, id := range meta.Minions {
		if id == m.cfg.ID {
			found = true
			break
		}
	}
	if !found {
		return job{}, ErrNotForUs
	}
	if now.After(meta.ExpiresAt) {
		return job{}, fmt.Errorf("%w: %s at %s", ErrJobExpired, meta.JID, meta.ExpiresAt.Format(time.RFC3339))
	}
	if meta.Kind == wire.JobApply {
		b, err := states.UnmarshalBundle(bundle)
		if err != nil {
			return job{}, err
		}
		if b.Digest() != meta.BundleDigest {
			return job{}, errors.New("bundle digest does not match the signed one")
		}
	}
	if !m.seen.add(meta.JID, meta.ExpiresAt, now) {
		return job{}, fmt.Errorf("%w: %s", ErrJobReplay, meta.JID)
	}
	return job{meta: meta, bundle: bundle}, nil
}

// executor runs jobs one at a time, outside the connection loop, so heartbeats go on during a
// long apply.
func (m *Minion) executor(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-m.jobs:
			if m.cfg.ExecSlots != nil && j.meta.Kind == wire.JobApply {
				select {
				case m.cfg.ExecSlots <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
			ret := m.execute(ctx, j)
			m.logJob(j, ret)
			if m.cfg.ExecSlots != nil && j.meta.Kind == wire.JobApply {
				<-m.cfg.ExecSlots
			}
			if m.cfg.ExecSlots == nil && j.meta.Kind == wire.JobApply {
				// A minion idles between jobs: give the apply's heap (HCL, graph, report) back
				// to the OS, so its resident set is its idle size, not its peak (19.4 -> 16 MB
				// after an apply of 20 files). Not for minions that share a process (the
				// swarm): a full collection per minion per job would dominate.
				debug.FreeOSMemory()
			}
			m.mu.Lock()
			m.applied++
			m.mu.Unlock()
			if j.meta.Kind == wire.JobApply && !j.meta.DryRun {
				_ = m.sendFacts() // before the return, so the master's peers() see them
			}
			m.deliver(ret)
		}
	}
}

func (m *Minion) execute(ctx context.Context, j job) wire.Return {
	ret := wire.Return{JID: j.meta.JID, Minion: m.cfg.ID, Kind: j.meta.Kind, Started: time.Now().UTC()}
	defer func() { ret.Finished = time.Now().UTC() }()
	if j.meta.Kind == wire.JobPing {
		ret.Success = true
		ret.Finished = time.Now().UTC()
		return ret
	}
	if j.meta.Kind == wire.JobRun {
		return m.runJob(ctx, j, ret)
	}
	if j.meta.Kind == wire.JobCapture {
		return m.captureJob(ctx, j, ret)
	}
	b, err := states.UnmarshalBundle(j.bundle)
	if err != nil {
		ret.Error = err.Error()
		ret.Finished = time.Now().UTC()
		return ret
	}
	secrets := map[string]string{}
	if sealed, ok := j.meta.Secrets[m.cfg.ID]; ok {
		mk := m.pinned()
		raw, ok := m.key.OpenFrom(mk.Box, sealed)
		if !ok || json.Unmarshal(raw, &secrets) != nil {
			ret.Error = "cannot open the secrets sealed for this minion"
			ret.Finished = time.Now().UTC()
			return ret
		}
	}
	// Sensitive variables came sealed with the secrets (states.SealInputs).
	secrets, vars, varFiles := states.OpenInputs(secrets, j.meta.Vars, j.meta.VarFiles)
	// The master's groups for this minion when it signed the job, not those of the last
	// authentication: a `brine key groups` change must reach the next job.
	groups := j.meta.Groups[m.cfg.ID]
	facts := m.facts()
	facts["id"] = m.cfg.ID
	opts := states.Options{
		Minion:   states.Minion{ID: m.cfg.ID, Groups: groups, Facts: facts},
		Vars:     vars,
		VarFiles: varFiles,
		Peers:    j.meta.Peers,
		Secrets:  secrets,
	}
	var g *states.Graph
	mod, diags := states.Load(b, builtin.Types())
	if !diags.HasErrors() {
		// The bundle's expressions and the peers' facts they read have no cost bound of their
		// own: a child process the kernel bounds compiles them first (states/bounded).
		if m.cfg.CompileInProcess {
			g, diags = states.Compile(mod, opts)
		} else {
			g, diags = bounded.CompileChecked(ctx, mod, opts, bounded.Limits{})
		}
	}
	if diags.HasErrors() {
		var buf bytes.Buffer
		states.WriteDiagnostics(&buf, b, diags, false)
		ret.Error = "the bundle does not compile on this minion"
		ret.Diagnostics = buf.String()
		ret.Finished = time.Now().UTC()
		return ret
	}
	runCtx, cancel := context.WithDeadline(ctx, j.meta.ExpiresAt.Add(time.Minute))
	defer cancel()
	rep := states.Run(runCtx, g, j.meta.DryRun)
	ret.Report, _ = json.Marshal(rep)
	ret.Success = !rep.Failed()
	ret.Finished = time.Now().UTC()
	return ret
}

// deliver signs ret, keeps it in the outbox and sends it; it stays until the master acks it.
func (m *Minion) deliver(ret wire.Return) {
	data, _ := json.Marshal(ret)
	sr := wire.SignedReturn{Data: data, Sig: m.key.Sign(wire.DomainReturn, data)}
	raw, _ := json.Marshal(sr)
	p := filepath.Join(m.cfg.DataDir, "outbox", ret.JID+".json")
	if err := atomicfile.Write(p, raw, 0o600); err != nil {
		m.log.Error("cannot keep the return on disk", "jid", ret.JID, "err", err)
	}
	m.flushOutbox()
}

// flushOutbox sends every unacknowledged return; acknowledged ones are removed.
func (m *Minion) flushOutbox() {
	dir := filepath.Join(m.cfg.DataDir, "outbox")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".json" || e.Name()[0] == '.' {
			continue
		}
		p := filepath.Join(dir, e.Name())
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var sr wire.SignedReturn
		if json.Unmarshal(raw, &sr) != nil {
			os.Remove(p)
			continue
		}
		_, err = m.request(wire.KindReturn, sr)
		if err == nil {
			os.Remove(p)
			continue
		}
		var refused *refusedError
		if errors.As(err, &refused) {
			// The master will never take it (unknown job, e.g. its store was wiped).
			m.log.Warn("master refused a return; dropping it", "file", e.Name(), "err", err)
			os.Remove(p)
			continue
		}
		return // not connected or no answer: try again later
	}
}
