package master

import (
	"log/slog"
	"sync"
	"time"
)

// garbageLogEvery is how often at most the master logs about what unauthenticated peers send
// (bad frames, other protocol versions): one line per kind and interval, with the count of
// those it did not log, so that a flood of garbage cannot flood the log.
const garbageLogEvery = time.Minute

// rateLog logs at most one line per key per interval (every; zero: garbageLogEvery); the next
// line says how many were suppressed in between.
type rateLog struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	quiet map[string]int
}

func (r *rateLog) warn(l *slog.Logger, key, msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	if r.last == nil {
		r.last, r.quiet = map[string]time.Time{}, map[string]int{}
	}
	every := r.every
	if every == 0 {
		every = garbageLogEvery
	}
	if t, ok := r.last[key]; ok && now.Sub(t) < every {
		r.quiet[key]++
		r.mu.Unlock()
		return
	}
	n := r.quiet[key]
	r.last[key] = now
	delete(r.quiet, key)
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.Warn(msg, args...)
}
