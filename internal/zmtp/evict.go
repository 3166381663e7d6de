package zmtp

import (
	"container/list"
	"io"
)

// Eviction. A listener's limits (handshakes in progress, connections) are places that peers
// which never authenticate could take, reconnecting as fast as they are cut off, and keep every
// minion out. When a limit is reached, a new connection takes the place of the oldest one that
// has not proved itself: the oldest handshake in progress, or the oldest connection the
// application has not trusted (Router.Trust, a Pub's admission). When the process is out of
// file descriptors, the oldest connection not trusted is closed too. Trusted connections are never evicted, and a legitimate
// peer proves itself within a round trip or two of connecting: to keep it out, an attacker
// would have to open connections faster than that, for as long as it retries.

// slot is one connection's place in its listener.
type slot struct {
	src      string
	c        io.Closer     // the raw connection while pending, then the guarded one
	queue    *list.List    // the queue elem is in (pendingQ or untrustedQ), nil if none
	elem     *list.Element // in queue
	pending  bool          // has not finished its handshake
	evicted  bool          // closed to make room; its counts go at its release
	released bool
}

// unqueue takes sl out of its queue. Called with l.mu held.
func (l *listener) unqueue(sl *slot) {
	if sl.queue != nil {
		sl.queue.Remove(sl.elem)
		sl.queue, sl.elem = nil, nil
	}
}

// evictOldest marks the oldest connection of q evicted and returns it to be closed (once l.mu
// is released), or nil if q is empty. Called with l.mu held.
func (l *listener) evictOldest(q *list.List) io.Closer {
	e := q.Front()
	if e == nil {
		return nil
	}
	sl := e.Value.(*slot)
	l.unqueue(sl)
	sl.evicted = true
	if sl.pending {
		l.evictingPending++
	}
	l.evictingConns++
	l.Evicted.Add(1)
	return sl.c
}

// evictForDescriptor evicts the oldest connection that has finished its handshake and is not
// trusted: the process is out of file descriptors. Handshakes in progress are left to finish
// (they are cut at HandshakeTimeout anyway): those are what Accept would make room for.
func (l *listener) evictForDescriptor() []io.Closer {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v := l.evictOldest(&l.untrustedQ); v != nil {
		return []io.Closer{v}
	}
	return nil
}

// trustSlot moves sl out of the eviction queue (trusted) or back into it, as the newest.
func (l *listener) trustSlot(sl *slot, trusted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sl.released || sl.evicted || sl.pending {
		return
	}
	l.unqueue(sl)
	if !trusted {
		sl.elem = l.untrustedQ.PushBack(sl)
		sl.queue = &l.untrustedQ
	}
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		c.Close()
	}
}
