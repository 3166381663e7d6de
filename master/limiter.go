package master

import (
	"sync"
	"time"
)

type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(b.last).Seconds(); d > 0 {
		b.tokens = min(burst, b.tokens+d*rate)
	}
	b.last = now
}

// keyedLimiter is a token bucket per key (a peer's source address, a minion id), of rate tokens a
// second up to burst, and optionally one bucket that every key draws from too. It tracks at most
// max keys: when full, keys whose buckets have refilled are forgotten (a fresh bucket is the
// same), and a new key is refused while none has.
type keyedLimiter struct {
	rate, burst             float64
	max                     int
	global                  *bucket // nil: none
	globalRate, globalBurst float64

	mu   sync.Mutex // guards keys and the buckets
	keys map[string]*bucket
}

// allow takes one token from key's bucket and the global one, or reports false and takes
// nothing.
func (l *keyedLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[string]*bucket{}
	}
	b := l.keys[key]
	if b == nil {
		if len(l.keys) >= l.max {
			for k, o := range l.keys {
				if o.refill(now, l.rate, l.burst); o.tokens >= l.burst {
					delete(l.keys, k)
				}
			}
		}
		if len(l.keys) >= l.max {
			return false
		}
		b = &bucket{tokens: l.burst, last: now}
		l.keys[key] = b
	}
	b.refill(now, l.rate, l.burst)
	if l.global != nil {
		if l.global.last.IsZero() {
			l.global.last = now
		}
		l.global.refill(now, l.globalRate, l.globalBurst)
		if l.global.tokens < 1 {
			return false
		}
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	if l.global != nil {
		l.global.tokens--
	}
	return true
}
