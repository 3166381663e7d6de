package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// readGroup answers the reads of concurrent callers by key with one query for all of them: a
// read waits for the query being run, then goes into the next with every read queued
// meanwhile. Every request of a minion reads its key (master.lookupKey), and with 64 request
// workers per master those were 64 round trips where one does; each read still sees every
// write committed before it was asked for, as the query starts after. Its goroutine is
// started by newReadGroup and stopped by close.
type readGroup[V any] struct {
	s     *Postgres
	fetch func(ctx context.Context, keys []string) (map[string]V, error)
	runs  atomic.Int64 // queries run, for tests
	hold  sync.Mutex   // held by each query, and by tests to let reads queue

	mu     sync.Mutex // guards queue and closed
	queue  []queuedRead[V]
	closed bool

	kick chan struct{} // a read was queued (capacity 1)
	done chan struct{} // closed when the goroutine has returned
}

type queuedRead[V any] struct {
	key string
	res chan readResult[V]
}

type readResult[V any] struct {
	v   V
	ok  bool
	err error
}

// maxReadGroup bounds the keys of one query.
const maxReadGroup = 1000

func newReadGroup[V any](s *Postgres, fetch func(ctx context.Context, keys []string) (map[string]V, error)) *readGroup[V] {
	g := &readGroup[V]{s: s, fetch: fetch, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go g.run()
	return g
}

// get returns key's value (ok false: there is none) as a query run after the call found it.
func (g *readGroup[V]) get(key string) (V, bool, error) {
	q := queuedRead[V]{key: key, res: make(chan readResult[V], 1)}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		var zero V
		return zero, false, errors.New("store: closed")
	}
	g.queue = append(g.queue, q)
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
	r := <-q.res
	return r.v, r.ok, r.err
}

// queued is the number of reads waiting for a query.
func (g *readGroup[V]) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// close answers the queued reads, stops the goroutine and waits for it. Later reads fail.
func (g *readGroup[V]) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
	<-g.done
}

func (g *readGroup[V]) run() {
	defer close(g.done)
	for range g.kick {
		for {
			// hold is taken before the queue is drained: while a test holds it, every caller
			// stays counted in queued.
			g.hold.Lock()
			g.mu.Lock()
			n := min(len(g.queue), maxReadGroup)
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
			g.answer(group)
			g.hold.Unlock()
		}
	}
}

func (g *readGroup[V]) answer(group []queuedRead[V]) {
	keys := make([]string, 0, len(group))
	seen := make(map[string]bool, len(group))
	for _, q := range group {
		if !seen[q.key] {
			seen[q.key] = true
			keys = append(keys, q.key)
		}
	}
	ctx, cancel := g.s.ctx()
	found, err := g.fetch(ctx, keys)
	cancel()
	g.runs.Add(1)
	for _, q := range group {
		var r readResult[V]
		if err != nil {
			r.err = err
		} else {
			r.v, r.ok = found[q.key]
		}
		q.res <- r
	}
}
