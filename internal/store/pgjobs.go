package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/pki"
)

// Jobs, returns, facts, deliveries, attested values and presence on PostgreSQL.

type pgJobs struct{ s *Postgres }

func (j pgJobs) PutJob(job jobstore.Job) error {
	data, err := json.Marshal(job)
	if err != nil {
		return err
	}
	ctx, cancel := j.s.ctx()
	defer cancel()
	_, err = j.s.pool.Exec(ctx, `INSERT INTO jobs (jid, record, bytes) VALUES ($1, $2, $3)
		ON CONFLICT (jid) DO UPDATE SET record = $2, bytes = $3`, job.JID, data, len(job.JID)+len(data))
	return err
}

// AddReturn records r once per (jid, minion), counts its bytes and marks its delivery returned,
// in one transaction shared with the returns of concurrent callers (pgreturns.go).
func (j pgJobs) AddReturn(r jobstore.Return) (bool, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	return j.s.returns.add(r.JID, r.Minion, data)
}

// MarksDeliveries implements DeliveryMarker: AddReturn marks the delivery.
func (j pgJobs) MarksDeliveries() {}

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
	return j.returns(`SELECT record FROM returns WHERE jid = $1 ORDER BY minion`, jid)
}

// ReturnsOf reads the rows of the given minions only (the primary key's index), so that a master
// told of a few returns does not read the job's thousands.
func (j pgJobs) ReturnsOf(jid string, minions []string) ([]jobstore.Return, error) {
	return j.returns(`SELECT record FROM returns WHERE jid = $1 AND minion = ANY($2) ORDER BY minion`, jid, minions)
}

func (j pgJobs) returns(query string, args ...any) ([]jobstore.Return, error) {
	ctx, cancel := j.s.ctx()
	defer cancel()
	rows, err := j.s.pool.Query(ctx, query, args...)
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
	return a.s.tx(0, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, lockMinionSpace, id); err != nil {
			return err
		}
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
	// A lease already this master's and less than a second shorter is left as it is.
	_, err := p.s.pool.Exec(ctx, `INSERT INTO presence (minion, master, until) VALUES ($1, $2, $3)
		ON CONFLICT (minion) DO UPDATE SET master = $2, until = $3
		WHERE presence.master <> $2 OR presence.until < $3 - interval '1 second'`, minion, master, until)
	return err
}

func (p pgPresence) RenewPresence(master string, minions []string, until, now time.Time) error {
	ctx, cancel := p.s.ctx()
	defer cancel()
	_, err := p.s.pool.Exec(ctx, `INSERT INTO presence (minion, master, until) SELECT unnest($1::text[]), $2, $3
		ON CONFLICT (minion) DO UPDATE SET master = excluded.master, until = excluded.until
		WHERE presence.master = excluded.master OR presence.until <= $4`, minions, master, until, now)
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

// pgPruneBatch bounds the jobs one prune statement deletes (with their returns).
const pgPruneBatch = 500

// Prune implements jobstore.Store: in batches, the jobs created before olderThan, the oldest
// beyond the newest max, and the oldest while the history's bytes are over maxBytes, with their
// returns. Several masters may prune at once: deletes of rows already gone delete nothing.
func (j pgJobs) Prune(olderThan time.Time, max int, maxBytes int64) (int, error) {
	// Job ids begin with their UTC creation time to the microsecond (master.NewJID), so the
	// jobs created before olderThan are the ids below this one: the primary key answers, and no
	// record is parsed.
	cutoff := ""
	if !olderThan.IsZero() {
		t := olderThan.UTC()
		cutoff = fmt.Sprintf("%s%06d", t.Format("20060102150405"), t.Nanosecond()/1000)
	}
	// The byte bound's window over every job costs about three times the sum (100,000 jobs:
	// 0.3 s against 0.1 s, BenchmarkHistoryPrune): it is taken only when the history is over.
	if maxBytes > 0 {
		if n, err := j.HistoryBytes(); err != nil {
			return 0, err
		} else if n <= maxBytes {
			maxBytes = 0
		}
	}
	total := 0
	for {
		var gone []string
		err := j.s.tx(0, func(ctx context.Context, tx pgx.Tx) error {
			// The byte bound: the newest job at which the bytes of it and every newer one go over
			// maxBytes, and every older one.
			rows, err := tx.Query(ctx, `DELETE FROM jobs WHERE jid IN (
				SELECT jid FROM jobs
				WHERE jid < $1
				   OR ($2::int > 0 AND jid <= (SELECT jid FROM jobs ORDER BY jid DESC OFFSET $2 LIMIT 1))
				   OR ($4::bigint > 0 AND jid <= (SELECT jid FROM (
						SELECT jid, sum(n) OVER (ORDER BY jid DESC) AS newer FROM (`+pgJobBytes+`) AS b
					) AS w WHERE newer > $4 ORDER BY jid DESC LIMIT 1))
				ORDER BY jid LIMIT $3)
				RETURNING jid`, cutoff, max, pgPruneBatch, maxBytes)
			if err != nil {
				return err
			}
			if gone, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			if len(gone) == 0 {
				return nil
			}
			if _, err = tx.Exec(ctx, `DELETE FROM returns WHERE jid = ANY($1)`, gone); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `DELETE FROM return_bytes WHERE jid = ANY($1)`, gone)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("prune jobs: %w", err)
		}
		total += len(gone)
		if len(gone) < pgPruneBatch {
			return total, nil
		}
	}
}

// pgJobBytes is each job's bytes in the history (jid, n): its record and its returns' records,
// as counted when they were written (migration 4).
const pgJobBytes = `SELECT j.jid, j.bytes + coalesce(r.n, 0) AS n FROM jobs j
	LEFT JOIN (SELECT jid, sum(bytes) AS n FROM return_bytes GROUP BY jid) AS r USING (jid)`

// HistoryBytes implements jobstore.Store.
func (j pgJobs) HistoryBytes() (int64, error) {
	ctx, cancel := j.s.ctx()
	defer cancel()
	var n int64
	err := j.s.pool.QueryRow(ctx, `SELECT coalesce(sum(n), 0)::bigint FROM (`+pgJobBytes+`) AS b`).Scan(&n)
	return n, err
}

// Outcome implements jobstore.OutcomeCounter: the job's returns counted in the database (the
// success field of each return's signed data), so that a job list reads one row per job. It
// reports ok=false, and no error, when the database cannot count them.
func (j pgJobs) Outcome(jid string) (jobstore.Outcome, bool, error) {
	ctx, cancel := j.s.ctx()
	defer cancel()
	var returned, succeeded int
	err := j.s.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE
			(convert_from(decode(convert_from(record, 'UTF8')::jsonb->>'data', 'base64'), 'UTF8')::jsonb->'success') = 'true'::jsonb)
		FROM returns WHERE jid = $1`, jid).Scan(&returned, &succeeded)
	if err != nil {
		// Data PostgreSQL cannot read as JSON text (a minion's invalid UTF-8, a \u0000 that
		// jsonb refuses) fails the query: the caller counts the returns itself instead.
		return jobstore.Outcome{}, false, nil
	}
	return jobstore.Outcome{Returned: returned, Succeeded: succeeded}, returned > 0, nil
}

type pgRounds struct{ s *Postgres }

// ClaimRound is one statement: INSERT ... ON CONFLICT DO UPDATE locks the schedule's row and
// evaluates the WHERE on its newest version, so of concurrent claimants on any masters one
// updates it and the others find the round taken.
func (p pgRounds) ClaimRound(name, master string, every, stale time.Duration) (Round, bool, time.Duration, error) {
	ctx, cancel := p.s.ctx()
	defer cancel()
	var r Round
	err := p.s.pool.QueryRow(ctx, `INSERT INTO schedule_rounds AS r (name, round, master, claimed, due)
		VALUES ($1, 1, $2, now(), now() + make_interval(secs => $3))
		ON CONFLICT (name) DO UPDATE SET round = r.round + 1, master = $2, claimed = now(),
			due = now() + make_interval(secs => $3), done = false
		WHERE r.due <= now() AND (r.done OR r.claimed <= now() - make_interval(secs => $4))
		RETURNING round, master`, name, master, every.Seconds(), stale.Seconds()).Scan(&r.N, &r.Master)
	if err == nil {
		return r, true, 0, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Round{}, false, 0, err
	}
	var wait float64
	err = p.s.pool.QueryRow(ctx, `SELECT round, master, done,
		CASE WHEN done THEN greatest(extract(epoch FROM due - now()), 0) ELSE 0 END
		FROM schedule_rounds WHERE name = $1`, name).Scan(&r.N, &r.Master, &r.Done, &wait)
	if err != nil {
		return Round{}, false, 0, err
	}
	return r, false, time.Duration(wait * float64(time.Second)), nil
}

func (p pgRounds) FinishRound(name string, n int64, every time.Duration) error {
	ctx, cancel := p.s.ctx()
	defer cancel()
	_, err := p.s.pool.Exec(ctx, `UPDATE schedule_rounds SET done = true, due = now() + make_interval(secs => $3)
		WHERE name = $1 AND round = $2`, name, n, every.Seconds())
	return err
}

func (p pgRounds) LastRound(name string) (Round, error) {
	ctx, cancel := p.s.ctx()
	defer cancel()
	var r Round
	err := p.s.pool.QueryRow(ctx, `SELECT round, master, done FROM schedule_rounds WHERE name = $1`, name).Scan(&r.N, &r.Master, &r.Done)
	if errors.Is(err, pgx.ErrNoRows) {
		return Round{}, nil
	}
	return r, err
}
