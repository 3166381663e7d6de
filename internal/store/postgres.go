package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/pki"
)

// Advisory lock keys (the first of pg_advisory_lock's two int4 keys is brine's).
const (
	lockSpace      = 0x6272696e // "brin"
	lockMigrations = 1
	lockKeys       = 2 // every write of minion_keys and denied_keys, and token redemption
	// lockMinionSpace is the first key of per-minion locks (the second: hashtext of the id):
	// one minion's attested record is updated by one master at a time, and other minions'
	// updates do not wait for it. (One lock for every record made each facts report wait for
	// every other's commit while holding a pooled connection: 12,000 waits of 70 ms on average
	// while 9,000 minions connected to three masters, the pool starved for returns.)
	lockMinionSpace = 0x62726d6e // "brmn"
)

// Notification channels: the payload starts with the sending instance.
const (
	chanJobs    = "brine_jobs"    // "<instance> <jid>"
	chanReturns = "brine_returns" // "<instance> <jid> <minion>..."
	chanFacts   = "brine_facts"   // "<instance> <minion>"
	chanKeys    = "brine_keys"    // "<instance> <minion> <state|deleted>"
)

// opTimeout bounds every statement: a master that cannot reach the database fails the
// operation instead of hanging a worker.
const opTimeout = 10 * time.Second

// Postgres is the store shared by the masters of one fleet, in one PostgreSQL database.
type Postgres struct {
	pool     *pgxpool.Pool
	connCfg  *pgx.ConnConfig
	log      *slog.Logger
	instance string // random, in notifications, so a master skips its own
	finger   string // the master's fingerprint, in its tokens
	batch    *batcher
	returns  *returnGroup
	keyReads *readGroup[keyRead] // pgKeys.Lookup

	limits atomic.Pointer[pki.PendingLimits] // bounds on pending keys, set by SetLimits

	logMu    sync.Mutex // guards logLast, logQuiet
	logLast  map[string]time.Time
	logQuiet map[string]int
}

// errorLogEvery is how often at most the store logs one kind of error: a database that is gone
// fails every read of every minion's request, and the log says so once a minute with a count.
const errorLogEvery = time.Minute

// logError logs an error of the database at most once per errorLogEvery per message, with the
// number of the same not logged since.
func (s *Postgres) logError(msg string, args ...any) {
	now := time.Now()
	s.logMu.Lock()
	if s.logLast == nil {
		s.logLast, s.logQuiet = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := s.logLast[msg]; ok && now.Sub(t) < errorLogEvery {
		s.logQuiet[msg]++
		s.logMu.Unlock()
		return
	}
	n := s.logQuiet[msg]
	s.logLast[msg] = now
	delete(s.logQuiet, msg)
	s.logMu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	s.log.Error(msg, args...)
}

// OpenPostgres connects to the database at url (a postgres:// URL or key=value string),
// applies pending schema migrations under an advisory lock, and returns the store. A database
// whose schema is newer than this binary knows is refused.
func OpenPostgres(ctx context.Context, url string, master pki.PublicKey, logger *slog.Logger) (*Postgres, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = opTimeout
	}
	cfg.MaxConns = max(cfg.MaxConns, 16)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Postgres{pool: pool, connCfg: cfg.ConnConfig.Copy(), log: logger,
		instance: hex.EncodeToString(pki.RandomBytes(8)), finger: pki.NormalizeFingerprint(master.Fingerprint())}
	s.limits.Store(ptr(pki.PendingLimitsFilled(pki.PendingLimits{})))
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	s.batch = newBatcher(s)
	s.returns = newReturnGroup(s)
	s.keyReads = newReadGroup(s, s.fetchKeys)
	return s, nil
}

// SchemaVersion is the schema version this binary applies.
func SchemaVersion() int { return len(migrations) }

func (s *Postgres) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer conn.Release()
	// Session-level: several masters starting at once apply each migration once.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, lockSpace, lockMigrations); err != nil {
		return fmt.Errorf("store: lock for migrations: %w", err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1, $2)`, lockSpace, lockMigrations)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("store: the database schema is version %d, newer than this binary's %d: a master of a newer release migrated it; run that release (downgrades are not supported)", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("store: schema migration %d: %w", v, err)
		}
		s.log.Info("applied a schema migration", "version", v)
	}
	return nil
}

// Keys implements Store.
func (s *Postgres) Keys() Keys { return pgKeys{s} }

// Tokens implements Store.
func (s *Postgres) Tokens() Tokens { return pgTokens{s} }

// Jobs implements Store.
func (s *Postgres) Jobs() jobstore.Store { return pgJobs{s} }

// Deliveries implements Store.
func (s *Postgres) Deliveries() Deliveries { return pgDeliveries{s} }

// Attested implements Store.
func (s *Postgres) Attested() Attested { return pgAttested{s} }

// Presence implements Store.
func (s *Postgres) Presence() Presence { return pgPresence{s} }

// Rounds implements Store.
func (s *Postgres) Rounds() Rounds { return pgRounds{s} }

// Drifts implements Store.
func (s *Postgres) Drifts() Drifts { return pgDrifts{s} }

// Close implements Store.
func (s *Postgres) Close() error {
	s.returns.close() // before the batcher: its commits tell the other masters through it
	s.keyReads.close()
	s.batch.close()
	s.pool.Close()
	return nil
}

func (s *Postgres) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// ClaimIdentity implements Store.
func (s *Postgres) ClaimIdentity(finger string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	want := pki.NormalizeFingerprint(finger)
	var got string
	err := s.pool.QueryRow(ctx, `WITH ins AS (
		INSERT INTO fleet (name, value) VALUES ('master_finger', $1) ON CONFLICT (name) DO NOTHING RETURNING value)
		SELECT value FROM ins UNION ALL SELECT value FROM fleet WHERE name = 'master_finger' LIMIT 1`, want).Scan(&got)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if got != want {
		return fmt.Errorf("%w: the database records %s, this master's key is %s", ErrOtherIdentity, got, want)
	}
	return nil
}

// tx runs fn in a transaction holding the advisory lock lock for the transaction.
func (s *Postgres) tx(lock int32, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := s.ctx()
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if lock != 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockSpace, lock); err != nil {
				return err
			}
		}
		return fn(ctx, tx)
	})
}

// Listen implements Notifier.
func (s *Postgres) Listen(ctx context.Context, fn func(Event)) {
	// The facts themselves may be larger than a notification can carry, so they are read from
	// the table, by another goroutine: read in the notification loop, one query for each
	// notification, they held the notifications of jobs and returns behind them (a fleet of
	// 9,000 that connects, or 3,000 minions that fail over, store as many facts at once). The
	// queue outlives a lost connection.
	facts := &factsToRead{ready: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.readFacts(ctx, facts, fn)
	}()
	defer wg.Wait()
	backoff := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		err := s.listenOnce(ctx, fn, !first, facts)
		if ctx.Err() != nil {
			return
		}
		s.logError("store: lost the notification connection; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Postgres) listenOnce(ctx context.Context, fn func(Event), resync bool, facts *factsToRead) error {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	conn, err := pgx.ConnectConfig(cctx, s.connCfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, ch := range []string{chanJobs, chanReturns, chanFacts, chanKeys} {
		if _, err := conn.Exec(ctx, `LISTEN `+ch); err != nil {
			return err
		}
	}
	if resync {
		fn(Event{Kind: EventResync})
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		for _, ev := range s.parseNotification(n) {
			if ev.Kind == EventFacts {
				facts.add(ev.Minion)
				continue
			}
			fn(ev)
		}
	}
}

// factsToRead are the minions whose facts another master stored and this one has not read yet.
type factsToRead struct {
	mu    sync.Mutex // guards ids
	ids   map[string]bool
	ready chan struct{} // a token when ids is not empty
}

func (f *factsToRead) add(ids ...string) {
	f.mu.Lock()
	if f.ids == nil {
		f.ids = map[string]bool{}
	}
	for _, id := range ids {
		f.ids[id] = true
	}
	f.mu.Unlock()
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

// take removes and returns up to n of the ids.
func (f *factsToRead) take(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.ids {
		if len(out) == n {
			break
		}
		out = append(out, id)
		delete(f.ids, id)
	}
	return out
}

// factsPerRead bounds the minions whose facts one query reads (each up to wire.MaxFacts).
const factsPerRead = 16

// readFacts reads the facts of the minions queued in f, a query for up to factsPerRead of them,
// and calls fn with an EventFacts for each that is still stored, until ctx ends. A query that
// fails puts its minions back, to be read again a second later.
func (s *Postgres) readFacts(ctx context.Context, f *factsToRead, fn func(Event)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.ready:
		}
		for ids := f.take(factsPerRead); len(ids) > 0; ids = f.take(factsPerRead) {
			var evs []Event
			qctx, cancel := context.WithTimeout(ctx, opTimeout)
			rows, err := s.pool.Query(qctx, `SELECT minion, data FROM facts WHERE minion = ANY($1)`, ids)
			if err == nil {
				for rows.Next() {
					ev := Event{Kind: EventFacts}
					if err = rows.Scan(&ev.Minion, &ev.Data); err != nil {
						break
					}
					evs = append(evs, ev)
				}
				rows.Close()
				if err == nil {
					err = rows.Err()
				}
			}
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.logError("store: reading facts another master stored; again in a second", "err", err)
				f.add(ids...)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				break
			}
			for _, ev := range evs { // a minion deleted since is not among them
				fn(ev)
			}
		}
	}
}

func (s *Postgres) parseNotification(n *pgconn.Notification) []Event {
	f := strings.Fields(n.Payload)
	if len(f) < 2 || f[0] == s.instance {
		return nil
	}
	var out []Event
	switch {
	case n.Channel == chanJobs && len(f) == 2:
		out = append(out, Event{Kind: EventJob, JID: f[1]})
	case n.Channel == chanReturns && len(f) >= 3:
		var ids []string
		for _, id := range f[2:] {
			if pki.ValidID(id) {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			out = append(out, Event{Kind: EventReturn, JID: f[1], Minions: ids})
		}
	case n.Channel == chanFacts:
		for _, id := range f[1:] {
			out = append(out, Event{Kind: EventFacts, Minion: id})
		}
	case n.Channel == chanKeys && len(f) == 3:
		out = append(out, Event{Kind: EventKey, Minion: f[1], State: f[2]})
	}
	// Whatever is in the database is checked like anything else read back: ids as the
	// handshake checks them.
	valid := out[:0]
	for _, ev := range out {
		if ev.Minion == "" || pki.ValidID(ev.Minion) {
			valid = append(valid, ev)
		}
	}
	return valid
}

func ptr[T any](v T) *T { return &v }

// notify sends a notification from this instance on channel; the listening masters receive it
// when tx commits.
func (s *Postgres) notify(ctx context.Context, tx pgx.Tx, channel string, fields ...string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, s.instance+" "+strings.Join(fields, " "))
	return err
}

// Ping implements Pinger.
func (s *Postgres) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }
