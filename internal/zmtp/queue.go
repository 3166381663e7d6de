package zmtp

import (
	"sync"

	"github.com/go-zeromq/zmq4"
)

// sendQueue holds the messages waiting for one peer's writer, at most max of them (those
// being written included). It takes memory only for what it holds: a channel of SendQueue
// messages allocated at connect cost 12 KiB per connection, two thirds of what an idle
// connection cost a master (18 KiB; BENCHMARKS.md, "A master's descriptors and memory per
// minion"), most of them never holding more than one message.
type sendQueue struct {
	max   int
	ready chan struct{} // one token: there are messages to take

	mu  sync.Mutex
	buf []zmq4.Msg // guarded by mu
	n   int        // guarded by mu: queued and taken but not yet written
}

func newSendQueue(max int) *sendQueue {
	return &sendQueue{max: max, ready: make(chan struct{}, 1)}
}

// push queues m and reports whether there was room. It never blocks.
func (q *sendQueue) push(m zmq4.Msg) bool {
	q.mu.Lock()
	if q.n >= q.max {
		q.mu.Unlock()
		return false
	}
	q.n++
	q.buf = append(q.buf, m)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// take returns the queued messages, oldest first; the writer calls written after each.
func (q *sendQueue) take() []zmq4.Msg {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.buf
	q.buf = nil
	return b
}

// written frees the room of one taken message.
func (q *sendQueue) written() {
	q.mu.Lock()
	q.n--
	q.mu.Unlock()
}
