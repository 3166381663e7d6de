package store

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/pki"
)

// The key and token stores on PostgreSQL: every write of minion_keys and denied_keys takes the
// lockKeys advisory lock in its transaction, as the file store takes its mutex.

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
		k.s.logError("store: count pending keys", "err", err)
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
		var err error
		out, err = k.presentTx(ctx, tx, p, autoAccept, allow)
		return err
	})
	if err != nil {
		return pki.MinionKey{}, err
	}
	return out, nil
}

// PresentAll decides the presentations in order in one transaction: one commit (one WAL
// flush) for all the records they write. A bound refuses only its own presentation; a
// failure of the database fails them all.
func (k pgKeys) PresentAll(ps []pki.Presentation, autoAccept bool, allow func(pki.Presentation) bool) ([]pki.MinionKey, []error) {
	recs := make([]pki.MinionKey, len(ps))
	errs := make([]error, len(ps))
	err := k.s.tx(lockKeys, func(ctx context.Context, tx pgx.Tx) error {
		for i, p := range ps {
			if !pki.ValidID(p.ID) {
				errs[i] = fmt.Errorf("invalid minion id %q", p.ID)
				continue
			}
			var ok func() bool
			if allow != nil {
				ok = func() bool { return allow(p) }
			}
			rec, err := k.presentTx(ctx, tx, p, autoAccept, ok)
			if err != nil && !isPresentRefusal(err) {
				return err
			}
			recs[i], errs[i] = rec, err
		}
		return nil
	})
	if err != nil {
		for i := range ps {
			recs[i], errs[i] = pki.MinionKey{}, err
		}
	}
	return recs, errs
}

// isPresentRefusal reports whether err is a bound's refusal of one presentation (nothing
// written, the transaction still good).
func isPresentRefusal(err error) bool {
	return errors.Is(err, pki.ErrPendingFull) || errors.Is(err, pki.ErrSourceFull) || errors.Is(err, pki.ErrEnrolLimited)
}

// presentTx is Present's decision and write in tx, which holds lockKeys.
func (k pgKeys) presentTx(ctx context.Context, tx pgx.Tx, p pki.Presentation, autoAccept bool, allow func() bool) (pki.MinionKey, error) {
	now := time.Now().UTC().Truncate(time.Microsecond) // PostgreSQL's precision
	m, known, err := getKey(ctx, tx, p.ID)
	if err != nil {
		return pki.MinionKey{}, err
	}
	if known {
		if m.Key.Equal(p.Key) {
			return m, nil
		}
		d, err := scanKey(tx.QueryRow(ctx, `SELECT `+keyCols+` FROM denied_keys WHERE id = $1`, p.ID), nil)
		if err == nil && d.Key.Equal(p.Key) {
			return d, nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return pki.MinionKey{}, err
		}
		if allow != nil && !allow() {
			return pki.MinionKey{}, pki.ErrEnrolLimited
		}
		d = pki.MinionKey{ID: p.ID, Key: p.Key, State: pki.StateDenied, Requested: pki.CleanGroups(p.Requested), Source: p.Source, Created: now, Updated: now}
		return d, putDenied(ctx, tx, d)
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
			return pki.MinionKey{}, err
		}
		if total >= lim.Max {
			// A minion that is still there presents its key again and is pending anew.
			if _, err := tx.Exec(ctx, `DELETE FROM minion_keys WHERE state = 'pending' AND created <= $1`, now.Add(-lim.TTL)); err != nil {
				return pki.MinionKey{}, err
			}
			if err := count(); err != nil {
				return pki.MinionKey{}, err
			}
		}
		if total >= lim.Max {
			return pki.MinionKey{}, pki.ErrPendingFull
		}
		if fromSource >= lim.PerSource {
			return pki.MinionKey{}, pki.ErrSourceFull
		}
	}
	if allow != nil && !allow() {
		return pki.MinionKey{}, pki.ErrEnrolLimited
	}
	return m, putKey(ctx, tx, m)
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
	m, ok, err := k.Lookup(id)
	if err != nil {
		k.s.logError("store: read a minion key", "minion", id, "err", err)
	}
	return m, ok
}

// Lookup implements KeyLookup. The lookups of concurrent callers are one query (readGroup).
func (k pgKeys) Lookup(id string) (pki.MinionKey, bool, error) {
	r, ok, err := k.s.keyReads.get(id)
	if err == nil {
		err = r.err
	}
	if !ok || err != nil {
		return pki.MinionKey{}, false, err
	}
	return r.rec, true, nil
}

// keyRead is a key record read, or why it could not be (a corrupt record fails only its own
// lookups).
type keyRead struct {
	rec pki.MinionKey
	err error
}

// fetchKeys reads the governing records of ids, by id (absent: none).
func (s *Postgres) fetchKeys(ctx context.Context, ids []string) (map[string]keyRead, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+keyCols+`, state FROM minion_keys WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]keyRead, len(ids))
	for rows.Next() {
		var st string
		m, err := scanKey(rows, &st)
		if err != nil && m.ID == "" {
			return nil, err
		}
		out[m.ID] = keyRead{rec: m, err: err}
	}
	return out, rows.Err()
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
		k.s.logError("store: list minion keys", "err", err)
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
	out, err := k.AcceptedKeys()
	if err != nil {
		k.s.logError("store: list accepted keys", "err", err)
	}
	return out
}

// AcceptedKeys implements KeyLookup.
func (k pgKeys) AcceptedKeys() (map[string]pki.MinionKey, error) {
	keys, err := k.query(`SELECT `+keyCols+`, state FROM minion_keys WHERE state = 'accepted'`, true)
	out := make(map[string]pki.MinionKey, len(keys))
	if err != nil {
		return out, err
	}
	for _, m := range keys {
		out[m.ID] = m
	}
	return out, nil
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
