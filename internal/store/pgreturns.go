package store

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/brinecm/brine/internal/jobstore"
)

// A return on PostgreSQL was two transactions of its own, each waiting for its WAL flush: the
// insert of the return and the update of its delivery. With a ping of 3,000 minions that was
// 6,000 flushes, most of them one after another (pg_stat_wal: 28,000 flushes for 15,000
// returns in scripts/bench-multimaster.sh). returnGroup commits the returns of concurrent
// callers (the master's request workers) together, in one batch sent in one round trip and one
// implicit transaction, like jobstore's group committer for bbolt: a return waits for the
// batch being committed, then goes into the next with every return queued meanwhile.

// maxReturnGroup bounds the returns of one batch.
const maxReturnGroup = 1000

// returnGroup is the committer of one Postgres store. Its goroutine is started by
// newReturnGroup and stopped by close, which commits what is queued first.
type returnGroup struct {
	s       *Postgres
	commits atomic.Int64 // batches committed, for tests
	hold    sync.Mutex   // held by each commit, and by tests to let returns queue

	mu     sync.Mutex // guards queue and closed
	queue  []queuedReturn
	closed bool

	kick chan struct{} // a return was queued (capacity 1)
	done chan struct{} // closed when the goroutine has returned
}

type queuedReturn struct {
	jid, minion string
	record      []byte
	res         chan returnResult
}

type returnResult struct {
	added bool
	err   error
}

func newReturnGroup(s *Postgres) *returnGroup {
	g := &returnGroup{s: s, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go g.run()
	return g
}

// add records a return and marks its delivery returned, in a transaction shared with the
// returns of concurrent callers; it returns once that transaction has committed, added true
// when this call recorded the return (false: it was recorded before, or by another call).
func (g *returnGroup) add(jid, minion string, record []byte) (bool, error) {
	q := queuedReturn{jid: jid, minion: minion, record: record, res: make(chan returnResult, 1)}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false, errors.New("store: closed")
	}
	g.queue = append(g.queue, q)
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default: // the committer is already told
	}
	r := <-q.res
	return r.added, r.err
}

// queued is the number of returns waiting for a commit.
func (g *returnGroup) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// close commits the queued returns, stops the goroutine and waits for it. Later adds fail.
func (g *returnGroup) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
	<-g.done
}

func (g *returnGroup) run() {
	defer close(g.done)
	for range g.kick {
		for {
			// hold is taken before the queue is drained: while a test holds it, every caller
			// stays counted in queued.
			g.hold.Lock()
			g.mu.Lock()
			n := min(len(g.queue), maxReturnGroup)
			group := g.queue[:n:n]
			g.queue = g.queue[n:]
			if len(g.queue) == 0 {
				g.queue = nil
			}
			closed := g.closed
			g.mu.Unlock()
			if n == 0 {
				g.hold.Unlock()
				if closed {
					return
				}
				break
			}
			g.commit(group)
			g.hold.Unlock()
		}
	}
}

// commit writes group in one transaction and answers each caller. When PostgreSQL refuses the
// batch (a row it cannot take, a deadlock with another master's batch), each return is
// committed alone, so that one bad return does not fail the others; when the database cannot
// be reached, every caller gets the error.
func (g *returnGroup) commit(group []queuedReturn) {
	added, known, err := g.write(group)
	var pgErr *pgconn.PgError
	if err != nil && len(group) > 1 && errors.As(err, &pgErr) {
		for _, q := range group {
			g.commit([]queuedReturn{q})
		}
		return
	}
	first := map[[2]string]bool{} // a (jid, minion) twice in one batch: the first call adds it
	for _, q := range group {
		k := [2]string{q.jid, q.minion}
		r := returnResult{err: err}
		if err == nil && !known[q.jid] {
			r.err = jobstore.ErrNotFound
		} else if err == nil && !first[k] {
			first[k] = true
			r.added = added[k]
		}
		q.res <- r
	}
	if err == nil {
		g.commits.Add(1)
		// The inserts that won tell the other masters (their waiting commands).
		for _, q := range group {
			if added[[2]string{q.jid, q.minion}] {
				g.s.batch.add(chanReturns, q.jid, q.minion)
			}
		}
	}
}

// write inserts the returns of group that are not recorded yet and whose job is, and marks their
// deliveries returned, in one round trip and one transaction; it returns the (jid, minion) pairs
// inserted and the jobs found.
// Rows are written in key order, so that two masters' batches lock shared rows in one order.
func (g *returnGroup) write(group []queuedReturn) (added map[[2]string]bool, known map[string]bool, err error) {
	rows := slices.Clone(group)
	slices.SortFunc(rows, func(a, b queuedReturn) int {
		return cmp.Or(cmp.Compare(a.jid, b.jid), cmp.Compare(a.minion, b.minion))
	})
	rows = slices.CompactFunc(rows, func(a, b queuedReturn) bool { return a.jid == b.jid && a.minion == b.minion })
	jids := make([]string, len(rows))
	minions := make([]string, len(rows))
	records := make([][]byte, len(rows))
	for i, q := range rows {
		jids[i], minions[i], records[i] = q.jid, q.minion, q.record
	}
	ctx, cancel := g.s.ctx()
	defer cancel()
	// A batch is one implicit transaction: both statements commit together, or neither.
	// The first takes a share lock on each job's row, so that a prune deleting the job waits
	// for this commit (and deletes these returns) or goes first (and none is inserted): a return
	// is never kept without its job. It counts the inserted returns' bytes on this master's row
	// of each job in return_bytes (migration 4), and answers the jobs found (minion NULL) and
	// the returns inserted.
	var b pgx.Batch
	b.Queue(`WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(jid, minion, record)),
		j AS (SELECT jid FROM jobs WHERE jid IN (SELECT jid FROM u) ORDER BY jid FOR KEY SHARE),
		ins AS (INSERT INTO returns (jid, minion, record)
			SELECT u.jid, u.minion, u.record FROM u JOIN j USING (jid) ORDER BY u.jid, u.minion
			ON CONFLICT (jid, minion) DO NOTHING
			RETURNING jid, minion, octet_length(jid) + octet_length(minion) + octet_length(record) AS n),
		counted AS (INSERT INTO return_bytes (jid, instance, bytes)
			SELECT jid, $4, sum(n) FROM ins GROUP BY jid ORDER BY jid
			ON CONFLICT (jid, instance) DO UPDATE SET bytes = return_bytes.bytes + excluded.bytes)
		SELECT jid, minion FROM ins UNION ALL SELECT jid, NULL FROM j`, jids, minions, records, g.s.instance)
	b.Queue(`UPDATE delivery_targets t SET returned = true
		FROM unnest($1::text[], $2::text[]) AS u(jid, minion)
		WHERE t.jid = u.jid AND t.minion = u.minion AND NOT t.returned`, jids, minions)
	br := g.s.pool.SendBatch(ctx, &b)
	added, known = make(map[[2]string]bool, len(rows)), map[string]bool{}
	inserted, err := br.Query()
	if err == nil {
		var jid string
		var minion *string
		_, err = pgx.ForEachRow(inserted, []any{&jid, &minion}, func() error {
			if minion == nil {
				known[jid] = true
			} else {
				added[[2]string{jid, *minion}] = true
			}
			return nil
		})
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, err
	}
	return added, known, nil
}
