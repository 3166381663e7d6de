// Package master is brine's master: it holds the key store, authenticates minions over its
// ROUTER socket, signs, encrypts and publishes jobs on its PUB socket, collects signed returns
// into the job store, and serves the operator CLI on a unix control socket.
package master

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/internal/zmtp"
	"github.com/brinecm/brine/pki"
	"golang.org/x/time/rate"
)

const (
	// requestWorkers handle requests concurrently; many, because a worker mostly waits for the
	// job store, which commits the returns and facts of concurrent workers in one transaction.
	requestWorkers = 64
	// preAuthWorkers are the only workers that take messages from peers that have not
	// authenticated (hellos, auths: a signature or a box each), after any from authenticated
	// ones: however many sources flood the port, that work runs on at most this many
	// goroutines, and the other workers, the control socket and the publisher keep the CPU.
	preAuthWorkers = 2
	// defaultPreAuthRate is preauth_rate's default: the messages of unauthenticated peers
	// handled per second in all (about a tenth of a core of signatures). Beyond it they wait in
	// the router's queue, whose senders are served in turn, connection by connection, and TCP
	// holds the rest back: a legitimate hello waits its turn among the connections, not
	// behind a flood's bytes.
	defaultPreAuthRate = 1000
	// preAuthFrame is the largest message the request port takes from a peer before it has
	// authenticated (a hello, an auth with a token: well under 10 KiB); after that,
	// wire.MaxRequestFrame.
	preAuthFrame = 16 << 10
	// pubMaxTopic bounds a subscription on the publish port: minions subscribe to three topics
	// of at most 66 bytes (wire.MinionTopics).
	pubMaxTopic = 256
	// pubMaxSubsPerPeer bounds the subscriptions of one subscriber (minions have three, and
	// their credential).
	pubMaxSubsPerPeer = 8
	// subscribeTimeout: a subscriber that has not shown a session's credential by then is
	// disconnected (publish.go, admitSubscriber). A minion subscribes right after its auth.
	subscribeTimeout = 10 * time.Second
	// trustedRate bounds the messages of one authenticated connection a second (bursts of twice
	// that): a minion sends a few requests per job and heartbeat; a compromised one cannot have
	// the master sign hellos, open requests or write its facts as fast as one worker can.
	trustedRate = 200
	// trustedBytes bounds the bytes of one authenticated connection a second (bursts of two
	// largest requests, 32 MiB): a minion sends kilobytes per job, and a capture's return of a
	// few MiB now and then; a compromised one cannot have the master open, scan and refuse
	// megabytes of requests as fast as one worker can (about a core).
	trustedBytes = 1 << 20
	// maxAuthSealed bounds a sealed auth: its JSON (8 KiB at most), the signature, the box's
	// nonce and tag.
	maxAuthSealed = 8192 + wire.SigLen + 24 + 16
)

// Master is a running master. Create it with New, start it with Start, stop it with Close.
type Master struct {
	cfg     Config
	log     *slog.Logger
	key     *pki.KeyPair
	st      store.Store      // the system of record (files, or PostgreSQL shared by masters)
	keys    store.Keys       // st.Keys()
	tokens  store.Tokens     // st.Tokens()
	store   jobstore.Store   // st.Jobs()
	deliver store.Deliveries // st.Deliveries(): jobs owed to minions, for checking returns and redelivery

	pub    *zmtp.Pub    // zmq4's PUB is O(minions) per message and stalls on one slow reader
	router *zmtp.Router // zmq4's ROUTER is O(minions) per reply; see zmtp.Router
	ctl    *controlServer

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pubMu sync.Mutex        // serialises Send on the PUB socket; guards taps
	taps  []chan<- [][]byte // test observers of everything published (testing.go, Published)

	closeOnce sync.Once

	copies         sealedCopies      // this master's sealed copies of live jobs, for resends (livejobs.go)
	jobInfos       jobInfos          // kind and minions of jobs without copies here, for returns (jobinfo.go)
	factsSeen      factsCache        // last stored facts, to skip unchanged writes
	attest         *attestStore      // what the master vouches for: observed addresses, pinned tinc keys
	enrolLimit     *keyedLimiter     // key-store writes peers cause (enrol.go)
	factsLimit     *keyedLimiter     // facts reports each minion makes the master check (facts.go)
	factsThrottled atomic.Uint64     // facts reports refused by factsLimit
	regQ           chan registration // verified auths for the registrar (enrol.go); nil until Start
	fleet          fleetState        // presence leases renewed here (fleet.go)

	mu        sync.Mutex          // guards the fields below
	keyGen    [8]byte             // the rotation generation: session keys older than it are replaced
	sessions  map[string]*session // by hex session id
	byMinion  map[string]string   // minion id -> hex session id
	bound     map[string]string   // router peer -> minion whose session last proved itself on it
	facts     map[string]map[string]any
	watchers  map[string][]*watcher // jid -> live subscribers
	rotations int

	cloud cloudState // the bootstrap endpoint and enrolment waits (cloud.go)

	challenges challengeTable // outstanding hello challenges (challenges.go)
	// The lines peers can cause at the rate of their requests, one per key a minute (ratelog.go).
	garbage    rateLog       // what unauthenticated peers send, and the handshakes refused: fixed keys
	panics     rateLog       // panics while serving peers (a bug a peer may trigger again): fixed keys
	refusedLog rateLog       // refused returns, per minion (acceptReturn)
	factsLog   rateLog       // refused facts reports, per minion
	tincLog    rateLog       // facts reporting a tinc key that is not the pinned one, per minion
	resendLog  rateLog       // jobs published again for a minion that asked, per minion
	peersLog   rateLog       // peers() entries cut to what the master decides, per minion
	seen       seenTable     // when each minion last made an authenticated request (status.go)
	pruneKick  chan struct{} // wakes pruneLoop after a job is recorded (history.go)
	// historyBytes is the job history's bytes after the last prune (history.go).
	historyBytes atomic.Int64
	metrics      *metrics // Prometheus metrics (metrics.go)
}

// session is one accepted minion's session. Its keys are its own: no other minion holds them.
type session struct {
	id      string // hex session id
	minion  string
	key     pki.PublicKey
	lastSeq uint64
	remote  netip.Addr      // where the request being served comes from (set per request)
	sk      *pki.SessionKey // current: requests, replies and job wraps
	prev    *pki.SessionKey // the one before the last rotation, until the minion uses sk
	gen     [8]byte         // the key generation sk was made in
	peer    string          // the router peer the session last proved itself on: the only one trusted for it
	// asked: the minion has sent a heartbeat request in this session, so its pending jobs
	// have been listed once without the grace of in-flight publishes (serve).
	asked bool
	// subscribed: the session's subscription credential has admitted a subscriber; it admits
	// no other (it crossed the network in clear).
	subscribed bool
}

// keyFor returns the session key with id, current or previous.
func (s *session) keyFor(id [wire.KeyIDLen]byte) *pki.SessionKey {
	if s.sk.ID == id {
		return s.sk
	}
	if s.prev != nil && s.prev.ID == id {
		return s.prev
	}
	return nil
}

// A watcher is a live subscriber to one job's returns (watch). It is handed each minion's return
// once: a minion that sends its return again and again (redeliveries, or a compromised one
// flooding) takes one place of its buffer, which holds one per minion of the job, so no other
// minion's return is ever dropped for want of room.
type watcher struct {
	ch   chan wire.Return
	told map[string]struct{} // minions whose return ch was handed; guarded by Master.mu
}

// New opens the master's state in cfg.DataDir (creating keys on first start).
func New(cfg Config, logger *slog.Logger) (*Master, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.rotate == 0 {
		if err := cfg.fill(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("master data dir: %w", err)
	}
	_ = os.Chmod(cfg.DataDir, 0o700)
	key, created, err := pki.LoadOrCreateKeyPair(filepath.Join(cfg.DataDir, "master.key"))
	if err != nil {
		return nil, err
	}
	if created {
		logger.Info("created master key", "finger", key.Pub.Fingerprint())
	}
	st, err := openStore(cfg, key.Pub, logger)
	if err != nil {
		return nil, err
	}
	// All masters of a store sign with one key (minions pin one fingerprint): a master with
	// another key refuses to start instead of splitting the fleet.
	if err := st.ClaimIdentity(key.Pub.Fingerprint()); err != nil {
		st.Close()
		return nil, err
	}
	keys := st.Keys()
	keys.SetLimits(pki.PendingLimits{Max: cfg.MaxPending, PerSource: cfg.MaxPendingPerSource})
	store := st.Jobs()
	m := &Master{
		cfg: cfg, log: logger, key: key, st: st, keys: keys, tokens: st.Tokens(), store: store,
		deliver: st.Deliveries(), attest: &attestStore{kv: st.Attested(), log: logger.Warn},
		keyGen:     [8]byte(pki.RandomBytes(8)),
		sessions:   map[string]*session{},
		byMinion:   map[string]string{},
		bound:      map[string]string{},
		facts:      map[string]map[string]any{},
		watchers:   map[string][]*watcher{},
		pruneKick:  make(chan struct{}, 1),
		metrics:    newMetrics(),
		enrolLimit: newEnrolLimiter(),
		factsLimit: newFactsLimiter(cfg),
	}
	m.challenges.perSource = challengesPerSource(cfg.MaxConnsPerSource)
	for _, r := range []*rateLog{&m.garbage, &m.panics, &m.refusedLog, &m.factsLog, &m.tincLog, &m.resendLog, &m.fleet.storeLog} {
		r.every = cfg.logEvery
	}
	// A stored attestation is read and written at each facts report: its store's errors are
	// logged as the other store errors met while serving minions.
	m.attest.log = func(msg string, args ...any) { m.fleet.storeLog.warn(logger, "attest: "+msg, msg, args...) }
	all, err := store.AllFacts()
	if err != nil {
		st.Close()
		return nil, err
	}
	// Facts an older master stored unchecked are checked like new ones: invalid ones are dropped
	// (the minion reports again), so that they cannot stop the master at every start.
	for id, raw := range all {
		var f map[string]any
		err := wire.Unmarshal(raw, wire.MaxFacts+4096, &f)
		var clean map[string]any
		if err == nil {
			clean, err = cleanStored(id, f)
		}
		if err != nil {
			logger.Warn("dropped stored facts that are not valid", "minion", id, "err", err)
			_ = store.DeleteFacts(id)
			continue
		}
		m.facts[id] = clean
	}
	return m, nil
}

// Key returns the master's public key; minions pin its Fingerprint.
func (m *Master) Key() pki.PublicKey { return m.key.Pub }

// Keys returns the master's key store.
func (m *Master) Keys() store.Keys { return m.keys }

// Tokens returns the master's enrolment token store.
func (m *Master) Tokens() store.Tokens { return m.tokens }

// Store returns the master's job store.
func (m *Master) Store() jobstore.Store { return m.store }

// Config returns the master's configuration.
func (m *Master) Config() Config { return m.cfg }

// PublishAddr is the address the PUB socket is bound to (useful with port 0).
func (m *Master) PublishAddr() string { return m.pub.Addr().String() }

// RequestAddr is the address the ROUTER socket is bound to.
func (m *Master) RequestAddr() string { return m.router.Addr().String() }

func quietLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// Start binds the sockets and the control socket and starts serving until Close.
func (m *Master) Start(ctx context.Context) error {
	m.ctx, m.cancel = context.WithCancel(ctx)
	// Each port holds as many connections as the descriptors hold minions, so that its limit
	// is reached before the process runs out of descriptors: at the limit, a new connection
	// evicts the oldest one that has not authenticated (zmtp, evict.go).
	fds := m.checkFileLimit()
	perPort := 0 // unknown: zmtp's default
	if fds > 0 {
		perPort = max(MinionsForFileLimit(fds), 16)
	}
	pub, err := zmtp.ListenPub(m.cfg.PublishAddr, zmtp.Limits{
		MaxConns:          perPort,
		MaxConnsPerSource: m.cfg.MaxConnsPerSource, MaxPendingPerSource: m.cfg.MaxHandshakesPerSource,
		MaxTopic: pubMaxTopic, MaxSubsPerPeer: pubMaxSubsPerPeer, PreAuthRate: m.cfg.PreAuthRatePerSource,
	}, &zmtp.Admission{Credential: wire.IsSubCredential, Admit: m.admitSubscriber, Live: m.sessionLive, Ready: m.subscriberReady, Timeout: subscribeTimeout})
	if err != nil {
		m.cancel()
		return fmt.Errorf("publish socket %s: %w", m.cfg.PublishAddr, err)
	}
	m.pub = pub
	router, err := zmtp.ListenRouter(m.cfg.RequestAddr, zmtp.Limits{
		MaxConns: perPort,
		MaxMsg:   wire.MaxRequestFrame + 1024, PreAuthMsg: preAuthFrame,
		MaxConnsPerSource: m.cfg.MaxConnsPerSource, MaxPendingPerSource: m.cfg.MaxHandshakesPerSource,
		PreAuthRate: m.cfg.PreAuthRatePerSource, Serial: true, TrustedRate: trustedRate, TrustedBytes: trustedBytes,
	})
	if err != nil {
		m.pub.Close()
		m.cancel()
		return fmt.Errorf("request socket %s: %w", m.cfg.RequestAddr, err)
	}
	m.router = router
	ctl, err := listenControl(m, m.cfg.ControlSocket)
	if err != nil {
		m.pub.Close()
		m.router.Close()
		m.cancel()
		return err
	}
	m.ctl = ctl
	if err := m.startBootstrap(); err != nil {
		ctl.close()
		m.ctl = nil
		m.pub.Close()
		m.router.Close()
		m.cancel()
		return err
	}
	if err := m.listenMetrics(); err != nil {
		m.stopBootstrap()
		ctl.close()
		m.ctl = nil
		m.pub.Close()
		m.router.Close()
		m.cancel()
		return err
	}
	if m.cfg.Name == "" {
		host, _ := os.Hostname()
		m.cfg.Name = host + "/" + m.RequestAddr()
	}
	m.startFleet()
	// No queue between the router and the workers: the router's own queues keep the messages
	// of authenticated peers ahead of the others, and a FIFO here would put a minion's return
	// behind hundreds of hellos. (The control server counts its own goroutines: ctl.serve.)
	m.regQ = make(chan registration, registrarQueue)
	m.wg.Add(2 + requestWorkers + preAuthWorkers)
	go func() { defer m.wg.Done(); m.registrar() }()
	for range requestWorkers {
		go func() { defer m.wg.Done(); m.worker(m.router.RecvTrusted) }()
	}
	preAuth := rate.NewLimiter(rate.Limit(m.cfg.PreAuthRate), max(1, m.cfg.PreAuthRate/5))
	for range preAuthWorkers {
		go func() {
			defer m.wg.Done()
			m.worker(func() (zmq4.Msg, error) {
				msg, err := m.router.Recv()
				if err == nil && len(msg.Frames) > 0 && !m.router.Trusted(msg.Frames[0]) {
					if err := preAuth.Wait(m.ctx); err != nil {
						return zmq4.Msg{}, zmtp.ErrRouterClosed
					}
				}
				return msg, err
			})
		}()
	}
	go func() { defer m.wg.Done(); m.tickLoop() }()
	m.startBackground()
	ctl.serve(m.ctx)
	m.log.Info("master started", "publish", m.PublishAddr(), "request", m.RequestAddr(), "finger", m.key.Pub.Fingerprint(),
		"fd_limit", fds, "minions_max", MinionsForFileLimit(fds))
	return nil
}

// Close stops the master and waits for everything it started. Later calls do nothing.
func (m *Master) Close() error {
	var err error
	m.closeOnce.Do(func() { err = m.close() })
	return err
}

func (m *Master) close() error {
	if m.cancel != nil {
		m.cancel()
		if m.ctl != nil {
			m.ctl.close()
		}
		m.stopBootstrap()
		m.pub.Close()
		m.router.Close()
		m.wg.Wait()
	}
	return m.st.Close()
}

// worker answers the requests recv returns until the router closes. It never waits on a peer:
// Router.Send queues the reply (and drops a peer that does not read them).
func (m *Master) worker(recv func() (zmq4.Msg, error)) {
	for {
		msg, err := recv()
		if err != nil {
			if errors.Is(err, zmtp.ErrRouterClosed) || m.ctx.Err() != nil {
				return
			}
			continue
		}
		peer := msg.Frames[0]
		if len(msg.Frames) != 2 {
			m.garbage.warn(m.log, "frames", "ignored a message of several frames on the request port")
		} else { // ROUTER adds the identity; brine messages are one frame
			remote, _ := m.router.RemoteAddr(peer)
			reply, authed := m.handleSafe(peer, m.router.Source(peer), remote, msg.Frames[1])
			m.answer(peer, reply, authed)
		}
		// The router reads the peer's next message only now (zmtp.Limits.Serial): a peer,
		// even an accepted minion, holds one message and one worker at a time.
		m.router.Done(peer)
	}
}

// answer sends reply (nil: none) to peer, and trusts the peer once authed. The workers call it,
// and the registrar for the auths it answers later.
func (m *Master) answer(peer, reply []byte, authed bool) {
	if reply == nil {
		return
	}
	if err := m.router.Send(zmq4.NewMsgFrom(peer, reply)); errors.Is(err, zmtp.ErrPeerNotReading) {
		m.garbage.warn(m.log, "not-reading", "disconnected a peer that does not read its replies", "source", m.router.Source(peer))
	}
	if authed {
		m.trust(peer)
	}
}

// trust lifts the pre-authentication limits of peer if a live session is bound to it: a session
// has one trusted connection, the last it proved itself on, and none once it ends (so that a
// minion cannot keep many trusted connections, nor keep one after its key is rejected).
func (m *Master) trust(peer []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if minion, ok := m.bound[string(peer)]; ok && !m.router.Trusted(peer) {
		m.router.Trust(peer, minion) // its rates are the minion's, whichever connection it uses
	}
}

// bind makes peer the connection of session s, and the one it had, if another, untrusted again.
// m.mu is held.
func (m *Master) bind(s *session, peer string) {
	if s.peer == peer {
		return
	}
	m.unbind(s.peer, s.minion)
	s.peer = peer
	if peer != "" {
		m.bound[peer] = s.minion
	}
}

// unbind puts the pre-authentication limits of peer back, unless another minion's session has
// moved onto it since. m.mu is held.
func (m *Master) unbind(peer, minion string) {
	if peer == "" || m.bound[peer] != minion {
		return
	}
	delete(m.bound, peer)
	if m.router != nil {
		m.router.Distrust([]byte(peer))
	}
}

// handleSafe is handle that survives a panic: what a peer sends never stops the master.
func (m *Master) handleSafe(peer []byte, source string, remote netip.Addr, frame []byte) (reply []byte, authed bool) {
	defer func() {
		if r := recover(); r != nil {
			m.panics.error(m.log, "message", "panic while handling a message; dropped it", "source", source, "panic", fmt.Sprint(r))
			reply, authed = nil, false
		}
	}()
	return m.handle(peer, source, remote, frame)
}

// handle answers one frame from the ROUTER socket, sent by peer from source (remote is the
// peer's address); nil means no answer now (an auth whose key the registrar registers is
// answered later). authed says the peer has proved it holds an accepted key: an accepted auth,
// or a request that opened under a session's key (the replies are sealed, so the transport
// cannot tell from them).
func (m *Master) handle(peer []byte, source string, remote netip.Addr, frame []byte) ([]byte, bool) {
	typ, body, err := wire.Decode(frame, wire.MaxRequestFrame)
	if err != nil {
		if errors.Is(err, wire.ErrVersion) {
			m.garbage.warn(m.log, "version", "refused a peer speaking another protocol version", "source", source)
		} else {
			m.garbage.warn(m.log, "frame", "ignored a frame that is not brine's", "source", source, "err", err)
		}
		return nil, false
	}
	switch typ {
	case wire.THello:
		return m.handleHello(source, body), false
	case wire.TAuth:
		return m.handleAuth(peer, source, body)
	case wire.TRequest:
		return m.handleRequest(peer, body, remote)
	}
	return nil, false
}

func (m *Master) signed(t wire.Type, domain string, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // our own types always marshal
	}
	return wire.Encode(t, wire.Signed(m.key.Sign(domain, data), data))
}

func (m *Master) handleHello(source string, body []byte) []byte {
	var h wire.Hello
	if wire.Unmarshal(body, 4096, &h) != nil || len(h.Nonce) != 32 || !pki.ValidID(h.ID) {
		return nil
	}
	key, err := pki.ParsePublicKey(h.Key)
	if err != nil {
		return nil
	}
	sn := pki.RandomBytes(32)
	now := time.Now()
	m.challenges.add(source, string(sn), challenge{id: h.ID, key: key, clientNonce: h.Nonce, expires: now.Add(challengeTTL)}, now)
	return m.signed(wire.TChallenge, wire.DomainChallenge, wire.Challenge{
		MasterKey: m.key.Pub.String(), ClientNonce: h.Nonce, ServerNonce: sn, Time: now.UTC(),
	})
}

// handleAuth answers a sealed auth; authed is true when it accepted the minion.
func (m *Master) handleAuth(peer []byte, src string, body []byte) (reply []byte, authed bool) {
	sn, sealed, err := wire.SplitAuth(body)
	if err != nil || len(sealed) > maxAuthSealed {
		return nil, false // bounded before any crypto: an unauthenticated peer sends this
	}
	c, ok := m.challenges.take(string(sn), time.Now()) // single use, whatever the outcome
	if !ok {
		// Unknown or expired challenge: without it the master does not know the box key the
		// auth was sealed with, nor one to seal an answer to. The minion times out and retries.
		m.metrics.authRefused("unknown or expired challenge")
		return nil, false
	}
	// The auth is sealed to the master's box key by the box key of the hello (DESIGN.md
	// invariant 19: the token and groups never cross the network in clear). One scalar
	// multiplication opens it and seals the answer.
	shared := m.key.Shared(c.key.Box)
	opened, ok := shared.Open(sealed)
	var sig, data []byte
	var a wire.Auth
	if ok {
		sig, data, err = wire.SplitSigned(opened)
		ok = err == nil && wire.Unmarshal(data, 8192, &a) == nil
	}
	refuse := func(why string) ([]byte, bool) {
		m.metrics.authRefused(why)
		return m.authReply(shared, wire.AuthReply{ClientNonce: a.ClientNonce, Status: wire.StatusRefused, Reason: why}), false
	}
	if !ok {
		return refuse("auth does not open")
	}
	if a.ID != c.id || a.Key != c.key.String() || string(a.ClientNonce) != string(c.clientNonce) || string(a.ServerNonce) != string(sn) {
		return refuse("auth does not match hello")
	}
	// The proof: a signature by the private key of the key presented, over both nonces.
	if !pki.Verify(c.key.Sign, wire.DomainAuth, data, sig) {
		m.garbage.warn(m.log, "bad-signature", "auth with a bad signature", "minion", c.id, "source", src)
		return refuse("bad signature")
	}
	finish := func(rec pki.MinionKey, err error) ([]byte, bool) {
		if isEnrolLimit(err) {
			return refuse(err.Error())
		}
		if err != nil {
			m.fleet.storeLog.warn(m.log, "auth", "could not authenticate a minion: the key store does not answer", "minion", c.id, "err", err)
			return refuse("key store error")
		}
		ar := wire.AuthReply{ClientNonce: a.ClientNonce, Status: string(rec.State)}
		if rec.State == pki.StateAccepted {
			sid, sk, gen := m.newSession(c.id, c.key, string(peer))
			m.leasePresence(c.id)
			ar.SessionID = sid
			ar.SessionKey = sk.Marshal() // the whole reply is sealed to the minion
			ar.KeyGen = gen[:]
			ar.Groups = rec.Groups
		} else {
			// A pending minion retries until the operator acts, and anyone can present any id.
			m.garbage.info(m.log, "not-accepted", "minion key not accepted", "minion", c.id, "state", rec.State)
			m.metrics.authNotAccepted(string(rec.State))
		}
		return m.authReply(shared, ar), rec.State == pki.StateAccepted
	}
	// A key the store holds as presented, without a token to redeem, writes nothing: answer
	// now. Anything else may write and goes to the registrar (enrol.go).
	if a.Token == "" {
		if rec, ok := m.keys.Get(c.id); ok && rec.Key.Equal(c.key) {
			return finish(rec, nil)
		}
	}
	if src == "" {
		src = "unknown" // the peer is gone; its reply will not be delivered either
	}
	r := registration{
		p:     pki.Presentation{ID: c.id, Key: c.key, Source: src, Requested: a.Groups},
		token: a.Token,
	}
	if m.regQ == nil { // not started (a test driving handle): register here
		r.finish = func(rec pki.MinionKey, err error) { reply, authed = finish(rec, err) }
		m.registerBatch([]registration{r})
		return reply, authed
	}
	r.finish = func(rec pki.MinionKey, err error) {
		reply, authed := finish(rec, err)
		m.answer(peer, reply, authed)
	}
	if !m.register(r) {
		return refuse(errRegistrarBusy.Error())
	}
	return nil, false
}

// newSession starts the session of an accepted minion with a fresh key of its own, ending any
// session it had.
func (m *Master) newSession(minion string, key pki.PublicKey, peer string) ([]byte, *pki.SessionKey, [8]byte) {
	sid := pki.RandomBytes(wire.SessionIDLen)
	sk := pki.NewSessionKey()
	h := hex.EncodeToString(sid)
	var ended string
	defer func() { m.evictSubscriber(ended) }() // after the unlock
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &session{id: h, minion: minion, key: key, sk: sk, gen: m.keyGen}
	if old, ok := m.sessions[m.byMinion[minion]]; ok {
		delete(m.sessions, old.id)
		ended = old.id
		s.peer = old.peer // bind below untrusts it, unless it is this peer
	}
	m.bind(s, peer)
	m.sessions[h] = s
	m.byMinion[minion] = h
	return sid, sk, m.keyGen
}

// authReply signs reply and seals it with box to the minion's key (to: the key the master
// shares with it).
func (m *Master) authReply(to *pki.SharedKey, reply wire.AuthReply) []byte {
	data, err := json.Marshal(reply)
	if err != nil {
		panic(err) // our own types always marshal
	}
	return wire.Encode(wire.TAuthReply, to.Seal(wire.Signed(m.key.Sign(wire.DomainAuthReply, data), data)))
}

// noSession tells a minion that the master holds no session sid: authenticate again.
func (m *Master) noSession(sid []byte) []byte {
	return m.signed(wire.TNoSession, wire.DomainNoSession, wire.NoSession{SessionID: sid})
}

// handleRequest answers a sealed request; authed is true when it opened under the session's key.
func (m *Master) handleRequest(peer, body []byte, remote netip.Addr) ([]byte, bool) {
	sid, keyID, sealed, err := wire.SplitSession(body)
	if err != nil {
		return nil, false
	}
	var hexSID [2 * wire.SessionIDLen]byte
	hex.Encode(hexSID[:], sid)
	m.mu.Lock()
	s, ok := m.sessions[string(hexSID[:])] // the conversion in the index does not allocate
	var k *pki.SessionKey
	if ok {
		k = s.keyFor(keyID)
	}
	m.mu.Unlock()
	if !ok {
		return m.noSession(sid), false
	}
	if k == nil {
		return nil, false // not sealed with this session's key: say nothing
	}
	// The session key authenticates the request: only the minion that proved its key at auth
	// and the master hold it, and the tag keeps a reply from being reflected as a request.
	data, ok := k.OpenTagged(wire.DomainRequest, sealed)
	if !ok {
		return nil, false
	}
	var r wire.Request
	if wire.Unmarshal(data, wire.MaxRequestFrame, &r) != nil {
		return nil, false
	}
	m.mu.Lock()
	minion, key := s.minion, s.key
	m.mu.Unlock()
	// The key may have been rejected or deleted since the session began. A key the store
	// cannot read now is not known to be gone: the minion is told to authenticate again
	// (fleet.go, lookupKey), and its session stays for when the store answers.
	rec, ok, err := m.lookupKey(minion)
	if err != nil {
		return m.noSession(sid), false
	}
	if !ok || rec.State != pki.StateAccepted || !rec.Key.Equal(key) {
		m.dropSession(minion)
		return m.noSession(sid), false
	}
	m.mu.Lock()
	if s.lastSeq >= r.Seq {
		m.mu.Unlock()
		return nil, false // replayed or reordered request
	}
	s.lastSeq = r.Seq
	if peer != nil {
		m.bind(s, string(peer)) // a minion that reconnected goes on with its session
	}
	if k == s.sk {
		s.prev = nil // the minion has the current key: the previous one is done with
	}
	sess := *s
	gen := m.keyGen
	m.mu.Unlock()
	sess.remote = remote
	m.seen.note(sess.minion, time.Now())
	reply := wire.Reply{Seq: r.Seq, KeyGen: gen[:]}
	if err := m.serveSafe(sess, r, &reply); errors.Is(err, errStoreUnavailable) {
		// Not a refusal: the minion keeps what it sent (a return stays in its outbox) and sends
		// it again after authenticating, here or on another master (fleet.go).
		m.fleet.storeLog.warn(m.log, "request", "could not serve a request: the store does not answer; the minion will send it again", "minion", sess.minion, "kind", quoteKey(r.Kind), "err", err)
		return m.noSession(sid), false
	} else if err != nil {
		reply.Error = err.Error()
	} else {
		reply.OK = true
	}
	data, err = json.Marshal(reply)
	if err != nil {
		return nil, false
	}
	return wire.SessionFrame(wire.TReply, sid, k.ID, k.SealTagged(wire.DomainReply, data)), true
}

// rotateSession gives session s a new key made in the current generation, keeping the one the
// minion holds until it uses the new.
func (m *Master) rotateSession(s session) (*pki.SessionKey, [8]byte, bool) {
	sk := pki.NewSessionKey()
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.sessions[s.id]
	if !ok {
		return nil, [8]byte{}, false
	}
	// prev is the key the minion is known to hold (set while it has not yet used sk): if the
	// reply that carried sk was lost, the minion still talks under prev and asks again.
	if cur.prev == nil {
		cur.prev = cur.sk
	}
	cur.sk, cur.gen = sk, m.keyGen
	return sk, m.keyGen, true
}

// Bounds of a resend request: the jobs one request may ask for again, and the length of a job id
// (NewJID makes 27 characters).
const (
	maxResend = 64
	maxJIDLen = 64
)

// serveSafe is serve that turns a panic into an error for that minion, and goes on.
func (m *Master) serveSafe(s session, r wire.Request, reply *wire.Reply) (err error) {
	defer func() {
		if p := recover(); p != nil {
			m.panics.error(m.log, "request", "panic while serving a request; answered with an error", "minion", s.minion, "kind", quoteKey(r.Kind), "panic", fmt.Sprint(p))
			reply.Body = nil
			err = errors.New("internal error on the master; the request was not carried out")
		}
	}()
	return m.serve(s, r, reply)
}

// serve carries out an authenticated request. The minion's id comes from its session, never
// from the request (DESIGN.md invariant 11).
func (m *Master) serve(s session, r wire.Request, reply *wire.Reply) error {
	switch r.Kind {
	case wire.KindHeartbeat:
		// A job published less than a heartbeat ago is in flight to a connected minion and is
		// not listed for a resend, except at the session's first heartbeat: a minion that has
		// just come (back, or over from a master that went) could not have received it.
		grace := m.cfg.heartbeat
		m.mu.Lock()
		if cur, ok := m.sessions[s.id]; ok && !cur.asked {
			cur.asked, grace = true, 0
		}
		m.mu.Unlock()
		pending, err := m.deliver.Pending(s.minion, time.Now(), grace)
		if err != nil {
			m.fleet.storeLog.error(m.log, "pending", "could not read the jobs pending for a minion", "minion", s.minion, "err", err)
		}
		if len(pending) > maxResend {
			pending = pending[:maxResend] // what one resend may ask for; the rest next time
		}
		reply.Body, _ = json.Marshal(wire.HeartbeatReply{Pending: pending, Time: time.Now()})
		return nil
	case wire.KindResend:
		var rb wire.ResendBody
		if err := wire.Unmarshal(r.Body, 64<<10, &rb); err != nil {
			return errors.New("bad resend request")
		}
		// Each job asked for is a store lookup (a conditional UPDATE on PostgreSQL): a minion
		// gets at most maxResend per request, each once; the rest wait for its next heartbeat.
		seen := make(map[string]bool, maxResend)
		jids := rb.JIDs[:0]
		for _, jid := range rb.JIDs {
			if len(jids) == maxResend {
				break
			}
			if !seen[jid] && len(jid) <= maxJIDLen {
				seen[jid] = true
				jids = append(jids, jid)
			}
		}
		m.resend(s, jids, m.cfg.heartbeat)
		return nil
	case wire.KindSession:
		sk, gen, ok := m.rotateSession(s)
		if !ok {
			return errors.New("session ended")
		}
		// Sealed to the minion's own key inside the sealed reply: whoever learnt the old
		// session key does not learn the new one.
		b, _ := json.Marshal(wire.SessionBody{SessionKey: m.key.SealTo(s.key.Box, sk.Marshal()), KeyGen: gen[:]})
		reply.Body = b
		return nil
	case wire.KindFacts:
		if !m.factsLimit.allow(s.minion, time.Now()) {
			m.factsThrottled.Add(1)
			m.factsLog.warn(m.log, s.minion, "refused facts; the minion keeps its previous ones", "minion", s.minion, "from", s.remote, "err", errFactsTooOften)
			return errFactsTooOften
		}
		var f map[string]any
		if err := wire.Unmarshal(r.Body, wire.MaxFacts, &f); err != nil {
			return errors.New("bad facts")
		}
		if err := m.reportFacts(s.minion, f, s.remote); err != nil {
			m.factsLog.warn(m.log, s.minion, "refused facts; the minion keeps its previous ones", "minion", s.minion, "from", s.remote, "err", err)
			return err
		}
		m.cloud.noteFacts(s.minion)
		return nil
	case wire.KindReturn:
		return m.acceptReturn(s, r.Body)
	}
	return fmt.Errorf("unknown request %q", r.Kind)
}

// reportFacts takes a facts report of minion id that came from remote: the facts are cleaned
// (refused whole when invalid: the minion keeps its previous facts), and the master records what it
// observed with them (see attest.go).
func (m *Master) reportFacts(id string, f map[string]any, remote netip.Addr) error {
	if f == nil {
		f = map[string]any{}
	}
	clean, err := cleanFacts(f)
	if err != nil {
		return fmt.Errorf("facts refused: %w", err)
	}
	pending, err := m.attest.observe(id, remote, clean)
	if err != nil {
		return err
	}
	if len(pending) > 0 {
		// Each facts report says so again until the operator acts: once per minion a minute.
		m.tincLog.warn(m.log, id, "a minion reports a tinc key that differs from the pinned one; peers() keeps the pinned key until `brine key accept-tinc`",
			"minion", id, "networks", pending)
	}
	return m.setFacts(id, clean)
}

// cleanStored checks facts the master finds in its store (they carry id and groups).
func cleanStored(id string, f map[string]any) (map[string]any, error) {
	clean, err := cleanFacts(f)
	if err != nil {
		return nil, err
	}
	// id and groups are the master's: from the session and the key store, set again by
	// setFacts on the next report; Minions() takes the groups from the key store.
	clean["id"] = id
	clean["groups"] = []any{}
	if gs, ok := f["groups"].([]any); ok {
		for _, g := range gs {
			if s, ok := g.(string); ok {
				clean["groups"] = append(clean["groups"].([]any), s)
			}
		}
	}
	// The form targeting sees: plain JSON values, as setFacts keeps them.
	raw, err := json.Marshal(clean)
	if err != nil {
		return nil, err
	}
	var plain map[string]any
	return plain, json.Unmarshal(raw, &plain)
}

// setFacts stores clean facts of minion id (from cleanFacts) with the id and groups the master
// knows.
func (m *Master) setFacts(id string, f map[string]any) error {
	if f == nil {
		f = map[string]any{}
	}
	rec, _ := m.keys.Get(id)
	f["id"] = id
	groups := make([]any, len(rec.Groups))
	for i, g := range rec.Groups {
		groups[i] = g
	}
	f["groups"] = groups
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	var norm map[string]any // the form targeting sees after a restart: plain JSON values
	_ = json.Unmarshal(raw, &norm)
	m.mu.Lock()
	m.facts[id] = norm
	m.mu.Unlock()
	if !m.factsSeen.changed(id, raw) {
		return nil
	}
	if err := m.store.PutFacts(id, raw); err != nil {
		m.factsSeen.forget(id)
		return err
	}
	return nil
}

func (m *Master) acceptReturn(s session, body []byte) error {
	var sr wire.SignedReturn
	if err := wire.Unmarshal(body, wire.MaxRequestFrame, &sr); err != nil {
		return m.refuseReturn(s, "", refusedBad, errors.New("bad return"))
	}
	if !pki.Verify(s.key.Sign, wire.DomainReturn, sr.Data, sr.Sig) {
		return m.refuseReturn(s, "", refusedBad, errors.New("return signature does not verify"))
	}
	var ret wire.Return
	if err := wire.Unmarshal(sr.Data, wire.MaxRequestFrame, &ret); err != nil {
		return m.refuseReturn(s, "", refusedBad, errors.New("bad return"))
	}
	if ret.Minion != s.minion {
		return m.refuseReturn(s, ret.JID, refusedOtherMinion, fmt.Errorf("return names another minion (%.80q)", ret.Minion))
	}
	// The copies of a job this master published or delivered name its minions; otherwise the
	// store says (a job of another master's that this master has not delivered, or before a
	// restart).
	kind, addressed, held := m.copies.addressed(ret.JID, s.minion)
	if !held {
		var known bool
		var err error
		if addressed, known, err = m.deliver.Addressed(ret.JID, s.minion); err != nil {
			return storeUnavailable(err)
		}
		var inJob bool
		kind, inJob, err = m.jobInfos.get(ret.JID, s.minion, m.store.Job)
		if errors.Is(err, jobstore.ErrNotFound) {
			return m.refuseReturn(s, ret.JID, refusedUnknownJob, fmt.Errorf("unknown job %.80q", ret.JID))
		}
		if err != nil {
			return storeUnavailable(err)
		}
		if !known {
			addressed = inJob
		}
		if kind == historyConverge {
			kind = wire.JobApply // the history's name for a converge's applies
		}
	}
	if !addressed {
		return m.refuseReturn(s, ret.JID, refusedNotAddressed, errors.New("job was not addressed to this minion"))
	}
	// What a return may hold follows its job's kind, not what the minion says it is: a ping's
	// return is small, whatever frame a compromised minion can send (the store keeps it).
	if ret.Kind != kind {
		return m.refuseReturn(s, ret.JID, refusedKind, fmt.Errorf("return says it is of a %.20q job; job %s is %q", ret.Kind, ret.JID, kind))
	}
	if max := maxReturn(kind); len(sr.Data) > max {
		return m.refuseReturn(s, ret.JID, refusedTooLarge, fmt.Errorf("a %s job's return is at most %d bytes; this one is %d", kind, max, len(sr.Data)))
	}
	if kind == wire.JobApply {
		if err := checkApplyReturn(ret); err != nil {
			return m.refuseReturn(s, ret.JID, refusedTooLarge, err)
		}
	}
	added, err := m.store.AddReturn(jobstore.Return{JID: ret.JID, Minion: s.minion, Data: sr.Data, Sig: sr.Sig, Received: time.Now().UTC()})
	if errors.Is(err, jobstore.ErrNotFound) {
		// Pruned since it was published (job_history_mb): nothing is kept without its job.
		return m.refuseReturn(s, ret.JID, refusedUnknownJob, fmt.Errorf("job %s is no longer in the history", ret.JID))
	}
	if err != nil {
		return storeUnavailable(err)
	}
	if _, marked := m.store.(store.DeliveryMarker); !marked {
		if err := m.deliver.MarkReturned(ret.JID, s.minion); err != nil {
			m.fleet.storeLog.error(m.log, "mark-returned", "could not mark a return as delivered", "jid", ret.JID, "minion", s.minion, "err", err)
		}
	}
	m.copies.markReturned(ret.JID, s.minion)
	if added {
		m.notifyReturn(ret)
	} else {
		// Recorded before: by this master, or by one that died before it told the others. A
		// watcher that has not had this minion's return gets the one recorded, not this copy.
		m.notifyRecorded(ret.JID, s.minion)
	}
	return nil
}

// notifyRecorded hands the recorded return of minion for jid to the watchers of jid that have not
// had one from it; the store is read only when there is such a watcher.
func (m *Master) notifyRecorded(jid, minion string) {
	m.mu.Lock()
	lacking := false
	for _, w := range m.watchers[jid] {
		if _, told := w.told[minion]; !told {
			lacking = true
		}
	}
	m.mu.Unlock()
	if !lacking {
		return
	}
	rs, err := m.store.ReturnsOf(jid, []string{minion})
	if err != nil || len(rs) != 1 {
		return
	}
	var ret wire.Return
	if json.Unmarshal(rs[0].Data, &ret) == nil && ret.Minion == minion && ret.JID == jid {
		m.notifyReturn(ret)
	}
}

// Why a return is refused (the reason label of brine_returns_refused_total).
const (
	refusedBad          = "bad"           // does not parse, or its signature does not verify
	refusedOtherMinion  = "other_minion"  // names another minion than the session's
	refusedUnknownJob   = "unknown_job"   // no such job in the history
	refusedNotAddressed = "not_addressed" // the job was not sent to the minion
	refusedKind         = "kind"          // says it is of another kind than its job
	refusedTooLarge     = "too_large"     // more than its job could make (returnbound.go)
)

// refuseReturn counts a refused return and logs it, one line per minion a minute at most (a
// compromised minion may send them as fast as its request rate allows); it returns err for the
// minion's reply. Nothing of the return is stored.
func (m *Master) refuseReturn(s session, jid, reason string, err error) error {
	m.metrics.returnRefused(reason)
	m.refusedLog.warn(m.log, s.minion, "refused a return; nothing of it is stored", "minion", s.minion, "from", s.remote,
		"jid", fmt.Sprintf("%.80s", jid), "reason", reason, "err", err)
	return err
}

// notifyReturn hands a recorded return to the live watchers of its job that have not had one of
// its minion yet.
func (m *Master) notifyReturn(ret wire.Return) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.watchers[ret.JID] {
		if _, told := w.told[ret.Minion]; told {
			continue
		}
		select {
		case w.ch <- ret:
			w.told[ret.Minion] = struct{}{}
		default: // more minions than the job's: the store has every return
		}
	}
}

// watch subscribes to the live returns of jid, a job of n minions, until the returned cancel is
// called.
func (m *Master) watch(jid string, n int) (<-chan wire.Return, func()) {
	w := &watcher{ch: make(chan wire.Return, n+16), told: map[string]struct{}{}}
	m.mu.Lock()
	m.watchers[jid] = append(m.watchers[jid], w)
	m.mu.Unlock()
	return w.ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		ws := m.watchers[jid]
		for i, x := range ws {
			if x == w {
				m.watchers[jid] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(m.watchers[jid]) == 0 {
			delete(m.watchers, jid)
		}
	}
}

func (m *Master) dropSession(minion string) {
	m.mu.Lock()
	sid, ok := m.byMinion[minion]
	if ok {
		if s := m.sessions[sid]; s != nil {
			m.unbind(s.peer, minion)
		}
		delete(m.sessions, sid)
		delete(m.byMinion, minion)
	}
	m.mu.Unlock()
	if ok {
		m.evictSubscriber(sid)
	}
}

// RotateSessionKeys starts a new key generation: every minion learns it from the next heartbeat
// and asks for a new session key of its own (KindSession), which the master makes and seals to
// the minion's box key.
func (m *Master) RotateSessionKeys() {
	gen := [8]byte(pki.RandomBytes(8))
	m.mu.Lock()
	m.keyGen = gen
	m.rotations++
	m.mu.Unlock()
	m.log.Info("rotating the session keys", "key_gen", hex.EncodeToString(gen[:]))
	m.heartbeat()
}

// KeyGeneration returns the current session key generation.
func (m *Master) KeyGeneration() [8]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keyGen
}

// SessionKeyID returns the id of the current session key of minion, if it has a session.
func (m *Master) SessionKeyID(minion string) ([8]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[m.byMinion[minion]]
	if !ok {
		return [8]byte{}, false
	}
	return s.sk.ID, true
}

// sessionKeys returns the current session keys of those of minions that have a session.
func (m *Master) sessionKeys(minions []string) map[string]*pki.SessionKey {
	out := make(map[string]*pki.SessionKey, len(minions))
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range minions {
		if s, ok := m.sessions[m.byMinion[id]]; ok {
			out[id] = s.sk
		}
	}
	return out
}

// RemoveMinions is called after keys were rejected or deleted: their sessions end, with the
// session keys that later jobs would be wrapped for (DESIGN.md invariant 4), their last drift
// checks go, and their facts go (on delete).
func (m *Master) RemoveMinions(ids []string, forget bool) {
	m.removeLocal(ids, forget)
	for _, id := range ids {
		if err := m.st.Drifts().DeleteDrift(id); err != nil {
			m.log.Warn("could not forget a drift check", "minion", id, "err", err)
		}
	}
	if !forget {
		return
	}
	for _, id := range ids {
		_ = m.store.DeleteFacts(id)
		m.attest.forget(id)
	}
}

func (m *Master) tickLoop() {
	hb := time.NewTicker(m.cfg.heartbeat)
	defer hb.Stop()
	rot := time.NewTicker(m.cfg.rotate)
	defer rot.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-hb.C:
			m.heartbeat()
		case <-rot.C:
			m.RotateSessionKeys()
		}
	}
}

func (m *Master) heartbeat() {
	m.mu.Lock()
	n, gen := len(m.sessions), m.keyGen
	m.mu.Unlock()
	m.publish(m.signed(wire.THeartbeat, wire.DomainHeartbeat, wire.Heartbeat{Time: time.Now().UTC(), KeyGen: gen[:],
		Interval: m.cfg.heartbeat, RequestEvery: requestEvery(n)}))
}

// publish sends frame to every minion.
func (m *Master) publish(frame []byte) { m.publishTo(wire.TopicAll, frame) }

// Minions returns every accepted minion with its groups and last facts, for targeting.
func (m *Master) Minions() []MinionInfo {
	acc := m.keys.Accepted()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]MinionInfo, 0, len(acc))
	for id, rec := range acc {
		out = append(out, MinionInfo{ID: id, Groups: rec.Groups, Facts: m.facts[id]})
	}
	return out
}

// Facts returns the last facts of minion id, with its id and groups.
func (m *Master) Facts(id string) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.facts[id]
}

// ResolveTarget returns the accepted minions that target names, sorted.
func (m *Master) ResolveTarget(target string) ([]string, error) {
	t, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	return Resolve(t, m.Minions()), nil
}
