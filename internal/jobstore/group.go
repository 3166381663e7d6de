package jobstore

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// maxGroup bounds the writes of one group commit (bbolt's own default batch size).
const maxGroup = 1000

// errClosed answers a write that comes after Close.
var errClosed = errors.New("job store: closed")

// groupCommit commits the writes of concurrent callers together: a write goes into the next
// transaction with every write queued while the one before it committed. A lone write commits
// at once; under load each transaction, and its two fsyncs, holds whatever arrived during the
// previous one. bbolt's Batch instead starts a batch's transaction after a fixed delay
// (MaxBatchDelay): when a commit takes longer than the delay, as an fsync does on a busy disk,
// the waiting writes are split into several small batches that queue for the writer lock, and
// each pays for a commit (BenchmarkReturn in master/ measured 0.12-0.19 commits per return, 64
// request workers).
//
// Its goroutine is started by newGroupCommit and stopped by close, which commits what is queued
// first.
type groupCommit struct {
	db      *bolt.DB
	commits atomic.Int64 // transactions committed, for benchmarks and tests

	mu     sync.Mutex // guards queue and closed
	queue  []groupWrite
	closed bool

	kick chan struct{} // a write was queued (capacity 1)
	done chan struct{} // closed when the goroutine has returned
}

// groupWrite is one caller's write: fn runs in the group's transaction and must not keep tx;
// it may run more than once (when another write of its group fails, the rest are retried).
type groupWrite struct {
	fn  func(*bolt.Tx) error
	err chan error
}

func newGroupCommit(db *bolt.DB) *groupCommit {
	g := &groupCommit{db: db, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go g.run()
	return g
}

// write runs fn in a write transaction shared with concurrent writes and returns once that
// transaction has committed (fn's error, or the commit's).
func (g *groupCommit) write(fn func(*bolt.Tx) error) error {
	w := groupWrite{fn: fn, err: make(chan error, 1)}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return errClosed
	}
	g.queue = append(g.queue, w)
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default: // the committer is already told
	}
	return <-w.err
}

// close commits the queued writes, stops the goroutine and waits for it. Later writes fail.
func (g *groupCommit) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
	<-g.done
}

func (g *groupCommit) run() {
	defer close(g.done)
	for range g.kick {
		for {
			g.mu.Lock()
			n := min(len(g.queue), maxGroup)
			group := g.queue[:n:n]
			g.queue = g.queue[n:]
			if len(g.queue) == 0 {
				g.queue = nil // let the backing array go
			}
			closed := g.closed
			g.mu.Unlock()
			if n == 0 {
				if closed {
					return
				}
				break
			}
			g.commit(group)
		}
	}
}

// commit writes group in one transaction. A write whose fn fails gets its error and the
// transaction is retried without it, so that one bad write does not fail the others.
func (g *groupCommit) commit(group []groupWrite) {
	for len(group) > 0 {
		failed := -1
		var failErr error
		err := g.db.Update(func(tx *bolt.Tx) error {
			for i, w := range group {
				if err := safeCall(w.fn, tx); err != nil {
					failed, failErr = i, err
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			group[failed].err <- failErr
			group = append(group[:failed:failed], group[failed+1:]...)
			continue
		}
		if err == nil {
			g.commits.Add(1)
		}
		for _, w := range group {
			w.err <- err
		}
		return
	}
}

// safeCall is fn(tx) with a panic turned into its error: the committer serves every writer and
// must not stop.
func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("job store: panic in a write: %v", p)
		}
	}()
	return fn(tx)
}
