package master

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// garbageLogEvery is how often at most the master logs about what unauthenticated peers send
// (bad frames, other protocol versions): one line per kind and interval, with the count of
// those it did not log, so that a flood of garbage cannot flood the log.
const garbageLogEvery = time.Minute

// rateLogMaxKeys bounds the keys one rateLog tracks at once. Keys are fixed names, or the ids of
// authenticated minions; beyond the bound (more minions than that misbehaving within one
// interval) the lines of new keys share one key, so that neither the map nor the log grows with
// the fleet.
const rateLogMaxKeys = 1024

// rateLogOverflow is the key the lines of keys beyond rateLogMaxKeys share.
const rateLogOverflow = "\x00overflow"

// rateLog logs at most one line per key per interval (every; zero: garbageLogEvery); the next
// line says how many were suppressed in between. Lines that peers can make the master write
// go through one, at the rate of their requests: a key is a fixed name for lines a peer causes
// before it has authenticated (never a string the peer chose, which would let it grow the map),
// or an authenticated minion's id. A key idle for an interval is forgotten at the next line
// of any key, which logs its suppressed count if it has one (a flood that stopped).
type rateLog struct {
	every time.Duration

	mu    sync.Mutex // guards the fields below
	keys  map[string]*rateKey
	swept time.Time // when keys last lost the ones idle for an interval
}

// rateKey is the state of one key: when its last line was logged, and how many were suppressed
// since.
type rateKey struct {
	last  time.Time
	quiet int
	level slog.Level // of the suppressed lines, for the count logged when the key is forgotten
	msg   string
}

func (r *rateLog) info(l *slog.Logger, key, msg string, args ...any) {
	r.log(l, slog.LevelInfo, key, msg, args...)
}

func (r *rateLog) warn(l *slog.Logger, key, msg string, args ...any) {
	r.log(l, slog.LevelWarn, key, msg, args...)
}

func (r *rateLog) error(l *slog.Logger, key, msg string, args ...any) {
	r.log(l, slog.LevelError, key, msg, args...)
}

// log logs msg at level unless key's last line is less than an interval old.
func (r *rateLog) log(l *slog.Logger, level slog.Level, key, msg string, args ...any) {
	now := time.Now()
	every := r.every
	if every == 0 {
		every = garbageLogEvery
	}
	r.mu.Lock()
	if r.keys == nil {
		r.keys = map[string]*rateKey{}
		r.swept = now
	}
	var forgotten []forgottenKey
	if now.Sub(r.swept) >= every {
		forgotten = r.sweep(now, every)
	}
	k, ok := r.keys[key]
	if !ok && len(r.keys) >= rateLogMaxKeys {
		key = rateLogOverflow
		k, ok = r.keys[key]
	}
	if ok && now.Sub(k.last) < every {
		k.quiet++
		k.level, k.msg = level, msg
		r.mu.Unlock()
		logForgotten(l, forgotten)
		return
	}
	n := 0
	if ok {
		n, k.last, k.quiet = k.quiet, now, 0
	} else {
		r.keys[key] = &rateKey{last: now}
	}
	r.mu.Unlock()
	logForgotten(l, forgotten)
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.Log(context.Background(), level, msg, args...)
}

// forgottenKey is a key sweep forgot with lines suppressed since its last.
type forgottenKey struct {
	key string
	k   rateKey
}

// sweep forgets the keys whose last line is an interval old or older (their next line is logged
// anyway) and returns those with a suppressed count to log. r.mu is held.
func (r *rateLog) sweep(now time.Time, every time.Duration) []forgottenKey {
	var out []forgottenKey
	for key, k := range r.keys {
		if now.Sub(k.last) >= every {
			if k.quiet > 0 {
				out = append(out, forgottenKey{key: key, k: *k})
			}
			delete(r.keys, key)
		}
	}
	r.swept = now
	return out
}

// logForgotten logs the suppressed counts of keys sweep forgot: the last message suppressed,
// the key and when its last line was logged.
func logForgotten(l *slog.Logger, keys []forgottenKey) {
	for _, f := range keys {
		key := f.key
		if key == rateLogOverflow {
			key = "others"
		}
		l.Log(context.Background(), f.k.level, f.k.msg, "suppressed", f.k.quiet, "key", key, "since", f.k.last)
	}
}

// tracked returns the number of keys r holds (for tests of its bound).
func (r *rateLog) tracked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.keys)
}
