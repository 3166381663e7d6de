package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strings"
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
	lockAttested   = 3
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

	limits atomic.Pointer[pki.PendingLimits] // bounds on pending keys, set by SetLimits
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

// Close implements Store.
func (s *Postgres) Close() error {
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

// ---- keys

type pgKeys struct{ s *Postgres }

const keyCols = `id, key, groups, requested, source, created, updated`

type rowScanner interface{ Scan(dest ...any) error }

func scanKey(r rowScanner, state *string) (pki.MinionKey, error) {
	var m pki.MinionKey
	var st string
	dest := []any{&m.ID, &m.KeyText, &m.Groups, &m.Requested, &m.Source, &m.Created, &m.Updated}
	if state != nil {
		dest = append(dest, &st)
	}
	if err := r.Scan(dest...); err != nil {
		return m, err
	}
	k, err := pki.ParsePublicKey(m.KeyText)
	if err != nil {
		return m, fmt.Errorf("corrupt key record of %s", m.ID)
	}
	m.Key = k
	m.State = pki.StateDenied
	if state != nil {
		m.State = pki.KeyState(st)
	}
	if len(m.Groups) == 0 {
		m.Groups = nil
	}
	if len(m.Requested) == 0 {
		m.Requested = nil
	}
	m.Created, m.Updated = m.Created.UTC(), m.Updated.UTC()
	return m, nil
}

func orEmpty(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}

func getKey(ctx context.Context, q pgx.Tx, id string) (pki.MinionKey, bool, error) {
	var st string
	m, err := scanKey(q.QueryRow(ctx, `SELECT `+keyCols+`, state FROM minion_keys WHERE id = $1`, id), &st)
	if errors.Is(err, pgx.ErrNoRows) {
		return pki.MinionKey{}, false, nil
	}
	return m, err == nil, err
}

func putKey(ctx context.Context, tx pgx.Tx, m pki.MinionKey) error {
	_, err := tx.Exec(ctx, `INSERT INTO minion_keys (id, key, state, groups, requested, source, created, updated)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (id) DO UPDATE SET key = $2, state = $3, groups = $4, requested = $5, source = $6, created = $7, updated = $8`,
		m.ID, m.Key.String(), string(m.State), orEmpty(m.Groups), orEmpty(m.Requested), m.Source, m.Created, m.Updated)
	return err
}

func putDenied(ctx context.Context, tx pgx.Tx, m pki.MinionKey) error {
	_, err := tx.Exec(ctx, `INSERT INTO denied_keys (id, key, groups, requested, source, created, updated)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO UPDATE SET key = $2, groups = $3, requested = $4, source = $5, created = $6, updated = $7`,
		m.ID, m.Key.String(), orEmpty(m.Groups), orEmpty(m.Requested), m.Source, m.Created, m.Updated)
	return err
}

func (k pgKeys) SetLimits(l pki.PendingLimits) { k.s.limits.Store(ptr(pki.PendingLimitsFilled(l))) }

func (k pgKeys) Pending(source string) (total, fromSource int) {
	ctx, cancel := k.s.ctx()
	defer cancel()
	err := k.s.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE source = $1) FROM minion_keys WHERE state = 'pending'`, source).Scan(&total, &fromSource)
	if err != nil {
		k.s.log.Error("store: count pending keys", "err", err)
	}
	return total, fromSource
}

func (k pgKeys) Present(p pki.Presentation, autoAccept bool, allow func() bool) (pki.MinionKey, error) {
	if !pki.ValidID(p.ID) {
		return pki.MinionKey{}, fmt.Errorf("invalid minion id %q", p.ID)
	}
	// The common case, a known minion with its own key, reads without the keys' lock: the
	// answer is the record as it is, as it would be under the lock.
	if m, ok := k.Get(p.ID); ok && m.Key.Equal(p.Key) {
		return m, nil
	}
	var out pki.MinionKey
	err := k.s.tx(lockKeys, func(ctx context.Context, tx pgx.Tx) error {
		now := time.Now().UTC().Truncate(time.Microsecond) // PostgreSQL's precision
		m, known, err := getKey(ctx, tx, p.ID)
		if err != nil {
			return err
		}
		if known {
			if m.Key.Equal(p.Key) {
				out = m
				return nil
			}
			d, err := scanKey(tx.QueryRow(ctx, `SELECT `+keyCols+` FROM denied_keys WHERE id = $1`, p.ID), nil)
			if err == nil && d.Key.Equal(p.Key) {
				out = d
				return nil
			}
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if allow != nil && !allow() {
				return pki.ErrEnrolLimited
			}
			d = pki.MinionKey{ID: p.ID, Key: p.Key, State: pki.StateDenied, Requested: pki.CleanGroups(p.Requested), Source: p.Source, Created: now, Updated: now}
			out = d
			return putDenied(ctx, tx, d)
		}
		m = pki.MinionKey{ID: p.ID, Key: p.Key, State: pki.StatePending, Requested: pki.CleanGroups(p.Requested), Source: p.Source, Created: now, Updated: now}
		if autoAccept {
			m.State = pki.StateAccepted
		} else {
			lim := *k.s.limits.Load()
			var total, fromSource int
			count := func() error {
				return tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE source = $1) FROM minion_keys WHERE state = 'pending'`, p.Source).Scan(&total, &fromSource)
			}
			if err := count(); err != nil {
				return err
			}
			if total >= lim.Max {
				// A minion that is still there presents its key again and is pending anew.
				if _, err := tx.Exec(ctx, `DELETE FROM minion_keys WHERE state = 'pending' AND created <= $1`, now.Add(-lim.TTL)); err != nil {
					return err
				}
				if err := count(); err != nil {
					return err
				}
			}
			if total >= lim.Max {
				return pki.ErrPendingFull
			}
			if fromSource >= lim.PerSource {
				return pki.ErrSourceFull
			}
		}
		if allow != nil && !allow() {
			return pki.ErrEnrolLimited
		}
		out = m
		return putKey(ctx, tx, m)
	})
	if err != nil {
		return pki.MinionKey{}, err
	}
	return out, nil
}

// errNoSpend ends a redemption's transaction without writing: a decision that spends nothing.
var errNoSpend = errors.New("no spend")

func (k pgKeys) Redeem(p pki.Presentation, tok string, now time.Time) (pki.MinionKey, bool, error) {
	if !pki.ValidID(p.ID) {
		return pki.MinionKey{}, false, fmt.Errorf("invalid minion id %q", p.ID)
	}
	h := pki.TokenHash(tok)
	if h == "" {
		return pki.MinionKey{}, false, pki.ErrTokenInvalid
	}
	now = now.Truncate(time.Microsecond) // PostgreSQL's precision
	var rec pki.MinionKey
	var decided error
	err := k.s.tx(lockKeys, func(ctx context.Context, tx pgx.Tx) error {
		// The row lock makes the token's use single across masters even without the advisory
		// lock; the advisory lock orders it with every other write of the keys.
		t, err := scanToken(tx.QueryRow(ctx, `SELECT hash, id, groups, created, expires FROM tokens WHERE hash = $1 FOR UPDATE`, h))
		if errors.Is(err, pgx.ErrNoRows) {
			decided = pki.ErrTokenInvalid
			return errNoSpend
		}
		if err != nil {
			return err
		}
		if expired, err := pki.CheckToken(t, tok, p.ID, now); err != nil {
			decided = err
			if expired {
				_, err := tx.Exec(ctx, `DELETE FROM tokens WHERE hash = $1`, h)
				return err // commit the removal
			}
			return errNoSpend
		}
		old, known, err := getKey(ctx, tx, p.ID)
		if err != nil {
			return err
		}
		d, err := pki.DecideRedeem(old, known, p, t, now)
		if err != nil || !d.Spend {
			rec, decided = d.Record, err
			return errNoSpend
		}
		tag, err := tx.Exec(ctx, `DELETE FROM tokens WHERE hash = $1`, h)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			decided = pki.ErrTokenInvalid
			return errNoSpend
		}
		if d.Denied != nil {
			if err := putDenied(ctx, tx, *d.Denied); err != nil {
				return err
			}
		}
		rec = d.Record
		return putKey(ctx, tx, rec)
	})
	switch {
	case errors.Is(err, errNoSpend) || (err == nil && decided != nil):
		if decided != nil {
			return pki.MinionKey{}, false, decided
		}
		return rec, false, nil
	case err != nil:
		return pki.MinionKey{}, false, fmt.Errorf("store: %w", err)
	}
	return rec, true, nil
}

func (k pgKeys) Get(id string) (pki.MinionKey, bool) {
	ctx, cancel := k.s.ctx()
	defer cancel()
	var st string
	m, err := scanKey(k.s.pool.QueryRow(ctx, `SELECT `+keyCols+`, state FROM minion_keys WHERE id = $1`, id), &st)
	if err != nil {
		if !errors.Is(err, pgx.ErrNoRows) {
			k.s.log.Error("store: read a minion key", "minion", id, "err", err)
		}
		return pki.MinionKey{}, false
	}
	return m, true
}

func (k pgKeys) query(sql string, withState bool, args ...any) ([]pki.MinionKey, error) {
	ctx, cancel := k.s.ctx()
	defer cancel()
	rows, err := k.s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []pki.MinionKey
	for rows.Next() {
		var st string
		sp := &st
		if !withState {
			sp = nil
		}
		m, err := scanKey(rows, sp)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (k pgKeys) List() []pki.MinionKey {
	keys, err := k.query(`SELECT `+keyCols+`, state FROM minion_keys`, true)
	if err == nil {
		var denied []pki.MinionKey
		denied, err = k.query(`SELECT `+keyCols+` FROM denied_keys`, false)
		keys = append(keys, denied...)
	}
	if err != nil {
		k.s.log.Error("store: list minion keys", "err", err)
		return nil
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].State != keys[j].State {
			return keys[i].State < keys[j].State
		}
		return keys[i].ID < keys[j].ID
	})
	return keys
}

func (k pgKeys) Accepted() map[string]pki.MinionKey {
	keys, err := k.query(`SELECT `+keyCols+`, state FROM minion_keys WHERE state = 'accepted'`, true)
	if err != nil {
		k.s.log.Error("store: list accepted keys", "err", err)
	}
	out := make(map[string]pki.MinionKey, len(keys))
	for _, m := range keys {
		out[m.ID] = m
	}
	return out
}

func (k pgKeys) Accept(glob string, groups []string, includeRejected bool) ([]string, error) {
	recs, err := k.AcceptKeys(glob, groups, includeRejected, "")
	return ids(recs), err
}

func (k pgKeys) AcceptKeys(glob string, groups []string, includeRejected bool, finger string) ([]pki.MinionKey, error) {
	want := pki.NormalizeFingerprint(finger)
	return k.transition(glob, func(m *pki.MinionKey) bool {
		if m.State != pki.StatePending && !(includeRejected && m.State == pki.StateRejected) {
			return false
		}
		if want != "" && pki.NormalizeFingerprint(m.Finger()) != want {
			return false
		}
		m.State = pki.StateAccepted
		if groups != nil {
			m.Groups = pki.CleanGroups(groups)
		}
		return true
	})
}

func (k pgKeys) Reject(glob string) ([]string, error) {
	recs, err := k.transition(glob, func(m *pki.MinionKey) bool {
		if m.State == pki.StateRejected {
			return false
		}
		m.State = pki.StateRejected
		return true
	})
	return ids(recs), err
}

func (k pgKeys) SetGroups(glob string, groups []string) ([]string, error) {
	recs, err := k.transition(glob, func(m *pki.MinionKey) bool {
		m.Groups = pki.CleanGroups(groups)
		return true
	})
	return ids(recs), err
}

func ids(recs []pki.MinionKey) []string {
	out := make([]string, len(recs))
	for i, m := range recs {
		out[i] = m.ID
	}
	return out
}

func (k pgKeys) transition(glob string, f func(*pki.MinionKey) bool) ([]pki.MinionKey, error) {
	var done []pki.MinionKey
	err := k.s.tx(lockKeys, func(ctx context.Context, tx pgx.Tx) error {
		done = nil
		rows, err := tx.Query(ctx, `SELECT `+keyCols+`, state FROM minion_keys`)
		if err != nil {
			return err
		}
		var all []pki.MinionKey
		for rows.Next() {
			var st string
			m, err := scanKey(rows, &st)
			if err != nil {
				rows.Close()
				return err
			}
			all = append(all, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, m := range all {
			if ok, _ := path.Match(glob, m.ID); !ok || !f(&m) {
				continue
			}
			m.Updated = time.Now().UTC().Truncate(time.Microsecond)
			if err := putKey(ctx, tx, m); err != nil {
				return err
			}
			if err := k.s.notify(ctx, tx, chanKeys, m.ID, string(m.State)); err != nil {
				return err
			}
			done = append(done, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	sort.Slice(done, func(i, j int) bool { return done[i].ID < done[j].ID })
	return done, nil
}

func (k pgKeys) Delete(glob string) ([]string, error) {
	seen := map[string]bool{}
	err := k.s.tx(lockKeys, func(ctx context.Context, tx pgx.Tx) error {
		for _, table := range []string{"minion_keys", "denied_keys"} {
			rows, err := tx.Query(ctx, `SELECT id FROM `+table)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			var match []string
			for _, id := range ids {
				if ok, _ := path.Match(glob, id); ok {
					match = append(match, id)
					seen[id] = true
				}
			}
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE id = ANY($1)`, orEmpty(match)); err != nil {
				return err
			}
			for _, id := range match {
				if err := k.s.notify(ctx, tx, chanKeys, id, "deleted"); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

// ---- tokens

type pgTokens struct{ s *Postgres }

func scanToken(r rowScanner) (pki.Token, error) {
	var t pki.Token
	err := r.Scan(&t.Hash, &t.ID, &t.Groups, &t.Created, &t.Expires)
	if len(t.Groups) == 0 {
		t.Groups = nil
	}
	t.Created, t.Expires = t.Created.UTC(), t.Expires.UTC()
	return t, err
}

func (ts pgTokens) Create(req pki.TokenRequest) (string, pki.Token, error) {
	tok, t, err := pki.NewToken(ts.s.finger, req, time.Now())
	if err != nil {
		return "", pki.Token{}, err
	}
	ctx, cancel := ts.s.ctx()
	defer cancel()
	if _, err := ts.s.pool.Exec(ctx, `INSERT INTO tokens (hash, id, groups, created, expires) VALUES ($1, $2, $3, $4, $5)`,
		t.Hash, t.ID, orEmpty(t.Groups), t.Created, t.Expires); err != nil {
		return "", pki.Token{}, fmt.Errorf("store: %w", err)
	}
	return tok, t, nil
}

func (ts pgTokens) Check(tok, id string, now time.Time) (pki.Token, error) {
	h := pki.TokenHash(tok)
	if h == "" {
		return pki.Token{}, pki.ErrTokenInvalid
	}
	ctx, cancel := ts.s.ctx()
	defer cancel()
	t, err := scanToken(ts.s.pool.QueryRow(ctx, `SELECT hash, id, groups, created, expires FROM tokens WHERE hash = $1`, h))
	if errors.Is(err, pgx.ErrNoRows) {
		return pki.Token{}, pki.ErrTokenInvalid
	}
	if err != nil {
		return pki.Token{}, fmt.Errorf("store: %w", err)
	}
	expired, err := pki.CheckToken(t, tok, id, now)
	if expired {
		_, _ = ts.s.pool.Exec(ctx, `DELETE FROM tokens WHERE hash = $1`, h)
	}
	if err != nil {
		return pki.Token{}, err
	}
	return t, nil
}

func (ts pgTokens) List() ([]pki.Token, error) {
	ctx, cancel := ts.s.ctx()
	defer cancel()
	rows, err := ts.s.pool.Query(ctx, `SELECT hash, id, groups, created, expires FROM tokens ORDER BY created`)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer rows.Close()
	var out []pki.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// ---- jobs, returns, facts

type pgJobs struct{ s *Postgres }

func (j pgJobs) PutJob(job jobstore.Job) error {
	data, err := json.Marshal(job)
	if err != nil {
		return err
	}
	ctx, cancel := j.s.ctx()
	defer cancel()
	_, err = j.s.pool.Exec(ctx, `INSERT INTO jobs (jid, record) VALUES ($1, $2) ON CONFLICT (jid) DO UPDATE SET record = $2`, job.JID, data)
	return err
}

func (j pgJobs) AddReturn(r jobstore.Return) (bool, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	ctx, cancel := j.s.ctx()
	defer cancel()
	tag, err := j.s.pool.Exec(ctx, `INSERT INTO returns (jid, minion, record) VALUES ($1, $2, $3) ON CONFLICT (jid, minion) DO NOTHING`, r.JID, r.Minion, data)
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() != 1 {
		return false, nil
	}
	// The insert that wins tells the other masters (their waiting commands).
	j.s.batch.add(chanReturns, r.JID, r.Minion)
	return true, nil
}

func (j pgJobs) Job(jid string) (jobstore.Job, error) {
	ctx, cancel := j.s.ctx()
	defer cancel()
	var data []byte
	err := j.s.pool.QueryRow(ctx, `SELECT record FROM jobs WHERE jid = $1`, jid).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return jobstore.Job{}, jobstore.ErrNotFound
	}
	if err != nil {
		return jobstore.Job{}, err
	}
	var job jobstore.Job
	return job, json.Unmarshal(data, &job)
}

func (j pgJobs) Returns(jid string) ([]jobstore.Return, error) {
	ctx, cancel := j.s.ctx()
	defer cancel()
	rows, err := j.s.pool.Query(ctx, `SELECT record FROM returns WHERE jid = $1 ORDER BY minion`, jid)
	if err != nil {
		return nil, err
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, err
	}
	out := make([]jobstore.Return, 0, len(datas))
	for _, d := range datas {
		var r jobstore.Return
		if err := json.Unmarshal(d, &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (j pgJobs) Jobs(limit int) ([]jobstore.Job, error) {
	ctx, cancel := j.s.ctx()
	defer cancel()
	q := `SELECT record FROM jobs ORDER BY jid DESC`
	args := []any{}
	if limit > 0 {
		q += ` LIMIT $1`
		args = append(args, limit)
	}
	rows, err := j.s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, err
	}
	out := make([]jobstore.Job, 0, len(datas))
	for _, d := range datas {
		var job jobstore.Job
		if err := json.Unmarshal(d, &job); err != nil {
			return nil, err
		}
		out = append(out, job)
	}
	return out, nil
}

func (j pgJobs) PutFacts(id string, facts []byte) error {
	ctx, cancel := j.s.ctx()
	defer cancel()
	if _, err := j.s.pool.Exec(ctx, `INSERT INTO facts (minion, data) VALUES ($1, $2) ON CONFLICT (minion) DO UPDATE SET data = $2`, id, facts); err != nil {
		return err
	}
	j.s.batch.add(chanFacts, "", id)
	return nil
}

func (j pgJobs) AllFacts() (map[string][]byte, error) {
	ctx, cancel := j.s.ctx()
	defer cancel()
	rows, err := j.s.pool.Query(ctx, `SELECT minion, data FROM facts`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return nil, err
		}
		out[id] = data
	}
	return out, rows.Err()
}

func (j pgJobs) DeleteFacts(id string) error {
	ctx, cancel := j.s.ctx()
	defer cancel()
	_, err := j.s.pool.Exec(ctx, `DELETE FROM facts WHERE minion = $1`, id)
	return err
}

// Close implements jobstore.Store; the pool is closed with the Postgres store.
func (j pgJobs) Close() error { return nil }

// ---- deliveries

type pgDeliveries struct{ s *Postgres }

func (d pgDeliveries) Add(jid string, minions []string, expires time.Time, signed []byte) error {
	now := time.Now().UTC()
	return d.s.tx(0, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM deliveries WHERE expires < $1`, now.Add(-DeliveriesKeep)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO deliveries (jid, signed, expires, published) VALUES ($1, $2, $3, $4)`, jid, signed, expires, now); err != nil {
			return err
		}
		rows := make([][]any, len(minions))
		for i, id := range minions {
			rows[i] = []any{jid, id}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"delivery_targets"}, []string{"jid", "minion"}, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		return d.s.notify(ctx, tx, chanJobs, jid)
	})
}

func (d pgDeliveries) Addressed(jid, minion string) (addressed, known bool, err error) {
	ctx, cancel := d.s.ctx()
	defer cancel()
	err = d.s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM delivery_targets WHERE jid = $1 AND minion = $2),
		EXISTS (SELECT 1 FROM deliveries WHERE jid = $1)`, jid, minion).Scan(&addressed, &known)
	return addressed, known, err
}

func (d pgDeliveries) MarkReturned(jid, minion string) error {
	ctx, cancel := d.s.ctx()
	defer cancel()
	_, err := d.s.pool.Exec(ctx, `UPDATE delivery_targets SET returned = true WHERE jid = $1 AND minion = $2 AND NOT returned`, jid, minion)
	return err
}

func (d pgDeliveries) Pending(minion string, now time.Time, grace time.Duration) ([]string, error) {
	ctx, cancel := d.s.ctx()
	defer cancel()
	rows, err := d.s.pool.Query(ctx, `SELECT t.jid FROM delivery_targets t JOIN deliveries j USING (jid)
		WHERE t.minion = $1 AND NOT t.returned AND j.expires >= $2 AND j.published <= $3 ORDER BY t.jid`,
		minion, now, now.Add(-grace))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (d pgDeliveries) Resendable(jid, minion string, now time.Time, interval time.Duration) ([]byte, error) {
	ctx, cancel := d.s.ctx()
	defer cancel()
	// One conditional update: of several masters asked at once, one hands the job out.
	var signed []byte
	err := d.s.pool.QueryRow(ctx, `UPDATE delivery_targets t SET last_resend = $3 FROM deliveries j
		WHERE t.jid = $1 AND t.minion = $2 AND j.jid = t.jid AND NOT t.returned AND j.expires >= $3
		AND (t.last_resend IS NULL OR t.last_resend <= $4) RETURNING j.signed`,
		jid, minion, now, now.Add(-interval)).Scan(&signed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return signed, err
}

func (d pgDeliveries) Job(jid string) ([]byte, []string, error) {
	ctx, cancel := d.s.ctx()
	defer cancel()
	var signed []byte
	err := d.s.pool.QueryRow(ctx, `SELECT signed FROM deliveries WHERE jid = $1`, jid).Scan(&signed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	rows, err := d.s.pool.Query(ctx, `SELECT minion FROM delivery_targets WHERE jid = $1 AND NOT returned ORDER BY minion`, jid)
	if err != nil {
		return nil, nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(ids) == 0 {
		return nil, nil, err
	}
	return signed, ids, nil
}

// ---- attested, presence

type pgAttested struct{ s *Postgres }

func (a pgAttested) Get(id string) ([]byte, error) {
	ctx, cancel := a.s.ctx()
	defer cancel()
	var data []byte
	err := a.s.pool.QueryRow(ctx, `SELECT data FROM attested WHERE minion = $1`, id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return data, err
}

func (a pgAttested) Update(id string, fn func(old []byte) ([]byte, error)) error {
	if !pki.ValidID(id) {
		return fmt.Errorf("invalid minion id %q", id)
	}
	return a.s.tx(lockAttested, func(ctx context.Context, tx pgx.Tx) error {
		var old []byte
		err := tx.QueryRow(ctx, `SELECT data FROM attested WHERE minion = $1`, id).Scan(&old)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		data, err := fn(old)
		if err != nil || data == nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO attested (minion, data) VALUES ($1, $2) ON CONFLICT (minion) DO UPDATE SET data = $2`, id, data)
		return err
	})
}

func (a pgAttested) Delete(id string) error {
	ctx, cancel := a.s.ctx()
	defer cancel()
	_, err := a.s.pool.Exec(ctx, `DELETE FROM attested WHERE minion = $1`, id)
	return err
}

type pgPresence struct{ s *Postgres }

func (p pgPresence) SetPresence(minion, master string, until time.Time) error {
	ctx, cancel := p.s.ctx()
	defer cancel()
	_, err := p.s.pool.Exec(ctx, `INSERT INTO presence (minion, master, until) VALUES ($1, $2, $3)
		ON CONFLICT (minion) DO UPDATE SET master = $2, until = $3`, minion, master, until)
	return err
}

func (p pgPresence) Presence(now time.Time) (map[string]Lease, error) {
	ctx, cancel := p.s.ctx()
	defer cancel()
	rows, err := p.s.pool.Query(ctx, `SELECT minion, master, until FROM presence WHERE until > $1`, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]Lease{}
	for rows.Next() {
		var id string
		var l Lease
		if err := rows.Scan(&id, &l.Master, &l.Until); err != nil {
			return nil, err
		}
		l.Until = l.Until.UTC()
		out[id] = l
	}
	return out, rows.Err()
}

// ---- notifications

// Listen implements Notifier.
func (s *Postgres) Listen(ctx context.Context, fn func(Event)) {
	backoff := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		err := s.listenOnce(ctx, fn, !first)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("store: lost the notification connection; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Postgres) listenOnce(ctx context.Context, fn func(Event), resync bool) error {
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
				// The facts themselves may be larger than a notification can carry.
				qctx, cancel := context.WithTimeout(ctx, opTimeout)
				err := s.pool.QueryRow(qctx, `SELECT data FROM facts WHERE minion = $1`, ev.Minion).Scan(&ev.Data)
				cancel()
				if errors.Is(err, pgx.ErrNoRows) {
					continue // deleted since
				}
				if err != nil {
					return err
				}
			}
			fn(ev)
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
		for _, id := range f[2:] {
			out = append(out, Event{Kind: EventReturn, JID: f[1], Minion: id})
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
