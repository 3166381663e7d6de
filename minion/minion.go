// Package minion is brine's agent: it connects out to the master, proves its identity,
// receives signed and encrypted jobs, refuses any it should not run, applies the rest with the
// states engine and returns signed results, kept on disk until the master acknowledges them.
// A Minion has no globals, so many can run in one process (each with its own data dir).
//
// Three parts, each in its file: a session (session.go) is one authenticated connection to one
// master and owns its sockets and reader goroutines; the executor (executor.go) opens and
// verifies jobs and runs them; the outbox (outbox.go) keeps returns until the master
// acknowledges them. Run, below, makes one session after another across the masters, and
// returns only when every goroutine it started has exited.
package minion

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
)

// Minion is one agent. Create with New, run with Run.
type Minion struct {
	cfg  Config
	log  *slog.Logger
	key  *pki.KeyPair
	keys *keyring
	seen *seenJobs
	exec *executor
	box  *outbox

	factsReports      atomic.Int64 // facts reports the master accepted
	heartbeats        atomic.Int64 // published heartbeats acted on
	newestHeartbeat   atomic.Int64 // the master's time (Unix ns) in the newest heartbeat acted on, or heartbeat reply
	refusedHeartbeats atomic.Int64 // heartbeats not acted on: bad signature, replayed, out of window
	droppedPubs       atomic.Int64 // published frames dropped as read: the session's queue was full (session.readSub)

	mu     sync.Mutex // guards the fields below
	sess   *session   // the live session, nil between sessions
	status string
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
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("minion data dir: %w", err)
	}
	key, _, err := pki.LoadOrCreateKeyPair(filepath.Join(cfg.DataDir, "minion.key"))
	if err != nil {
		return nil, err
	}
	seen, err := openSeen(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	log := logger.With("minion", cfg.ID)
	box, err := openOutbox(cfg.DataDir, key, log)
	if err != nil {
		return nil, err
	}
	m := &Minion{cfg: cfg, log: log, key: key, seen: seen, status: "starting",
		keys: newKeyring(key, cfg.DataDir, cfg.MasterFinger, log),
		box:  box}
	m.exec = newExecutor(m)
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
func (m *Minion) Applied() int { return int(m.exec.applied.Load()) }

func (m *Minion) setStatus(s string) {
	m.mu.Lock()
	m.status = s
	m.mu.Unlock()
}

// OpenJob decrypts and verifies a TJob body and decides whether this minion may run it: its
// job key wrapped for our session key, signed by the pinned master key, bundle digest matching
// (over the bytes received, which are then unpacked once and kept for the run), not expired,
// never seen before, addressed to this minion. A job that passes is recorded as seen (on disk)
// before it is returned, so it runs at most once, also across restarts. A frame with no wrap for
// us (a bucket's job for other minions) is ErrNotForUs.
func (m *Minion) OpenJob(body []byte, now time.Time) (job, error) { return m.exec.open(body, now) }

// failoverJitter bounds the pause before trying the next master of a list after losing one:
// the minions of a dead master spread their reconnections over it instead of arriving at once.
const failoverJitter = time.Second

// Run connects to the master and serves jobs until ctx ends, reconnecting forever. With several
// masters (Config.Masters) it takes them in a random order and, on losing one, goes to the next
// after a jittered pause of at most failoverJitter; once every master failed in a row it backs
// off, exponentially with jitter up to max_backoff, as it does with one master. Run returns when
// ctx has ended and every goroutine it started (the executor, each session's readers) has exited.
func (m *Minion) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	goTracked(&wg, func() { m.exec.run(ctx) })
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
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// goTracked runs f in a goroutine that wg waits for. Every goroutine of the minion is started
// here, so that Run can wait for all of them.
func goTracked(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() { defer wg.Done(); f() }()
}

// connect runs one session: authenticate, subscribe, serve; the session is closed (its
// goroutines gone) when connect returns. It reports whether it got as far as an accepted
// session.
func (m *Minion) connect(ctx context.Context, addr masterAddr) (bool, error) {
	s, err := dial(ctx, m, addr)
	if err != nil {
		return false, err
	}
	defer s.close()
	status, groups, err := s.authenticate()
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
	if err := s.subscribe(); err != nil {
		return true, err
	}
	m.mu.Lock()
	m.sess, m.status = s, "connected"
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.sess == s {
			m.sess = nil
		}
		m.mu.Unlock()
	}()
	m.log.Info("connected to the master", "master", addr.req, "groups", groups)
	return true, s.serve(ctx)
}

// request sends one request over the live session, if there is one.
func (m *Minion) request(kind string, body any) (wire.Reply, error) {
	m.mu.Lock()
	s := m.sess
	m.mu.Unlock()
	if s == nil {
		return wire.Reply{}, errNotLive
	}
	return s.request(kind, body)
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

// finished takes the return of a job the executor ran: facts first after a real apply (so that
// the master's peers() see them when the return arrives), then the outbox, flushed at once.
// facts are those the executor gathered for an apply that changed nothing, or nil: then they
// are gathered again. Either way they go to the master only when they differ from the facts it
// accepted last on this session (session.reportFacts).
func (m *Minion) finished(j job, ret wire.Return, facts map[string]any) {
	if j.meta.Kind == wire.JobApply && !j.meta.DryRun {
		if facts == nil {
			facts = m.facts()
		}
		m.mu.Lock()
		s := m.sess
		m.mu.Unlock()
		if s != nil {
			_ = s.reportFacts(facts)
		}
	}
	m.box.put(ret)
	m.box.flush(m.request)
}
