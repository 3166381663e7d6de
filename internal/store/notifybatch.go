package store

import (
	"context"
	"strings"
	"sync"
	"time"
)

// NOTIFY serialises commits: PostgreSQL holds a global lock on its notification queue from a
// notifying transaction's commit until its WAL is flushed, so a NOTIFY in every return's
// transaction made concurrent returns commit one fsync after another (3.9 ms each, measured in
// BenchmarkStoreWrites). Returns and facts therefore commit without NOTIFY, and a batcher tells
// the other masters afterwards, many (job, minion) pairs per notification, in transactions that
// write nothing. A master that dies between a commit and its notification leaves the other
// masters' waiting commands without that return; the store has it (brine jobs show).

const (
	batchDelay   = 5 * time.Millisecond // how long an event waits for company
	batchPayload = 7000                 // bytes per notification (PostgreSQL's limit is 8000)
	batchMax     = 100_000              // events waiting at most; beyond, they are dropped
)

// batcher coalesces notifications by channel and first field ("<jid>" for returns, "" for
// facts).
type batcher struct {
	s *Postgres

	mu      sync.Mutex // guards pending, n
	pending map[[2]string][]string
	n       int

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newBatcher(s *Postgres) *batcher {
	b := &batcher{s: s, pending: map[[2]string][]string{}, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go b.run()
	return b
}

// add queues item under channel and key.
func (b *batcher) add(channel, key, item string) {
	b.mu.Lock()
	if b.n < batchMax {
		k := [2]string{channel, key}
		b.pending[k] = append(b.pending[k], item)
		b.n++
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *batcher) run() {
	defer close(b.done)
	for {
		select {
		case <-b.stop:
			b.flush()
			return
		case <-b.kick:
		}
		select {
		case <-b.stop:
			b.flush()
			return
		case <-time.After(batchDelay):
		}
		b.flush()
	}
}

func (b *batcher) flush() {
	b.mu.Lock()
	pending := b.pending
	b.pending, b.n = map[[2]string][]string{}, 0
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	for k, items := range pending {
		head := b.s.instance
		if k[1] != "" {
			head += " " + k[1]
		}
		var sb strings.Builder
		send := func() {
			if sb.Len() == 0 {
				return
			}
			if _, err := b.s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, k[0], head+sb.String()); err != nil {
				b.s.logError("store: could not notify the other masters", "channel", k[0], "err", err)
			}
			sb.Reset()
		}
		for _, it := range items {
			if len(head)+sb.Len()+1+len(it) > batchPayload {
				send()
			}
			sb.WriteString(" ")
			sb.WriteString(it)
		}
		send()
	}
}

func (b *batcher) close() {
	close(b.stop)
	<-b.done
}
