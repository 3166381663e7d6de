package master

import (
	"errors"
	"sync"
	"time"

	"github.com/brinecm/brine/pki"
)

// Enrolment: what the master decides when a minion that proved it holds its key asks to be
// known by an id, with or without an enrolment token. The decision itself lives in the key store
// (store.Keys: Present and Redeem, whose rules are pki.KeyStore's); this file adds where the peer connected from (the source
// the Router counts it against: its IP, or its /64 for IPv6) and the rate limit on the records
// unauthenticated peers make the master write.

// Rate limits on key-store writes caused by peers (new pending keys, denied presentations): a
// token bucket per source address and one for the whole master. A minion that was refused
// retries with its backoff, so a legitimate one gets through once the flood stops or the
// operator acts.
const (
	enrolSourceRate  = 1.0 // writes per second per source, on average
	enrolSourceBurst = 20
	enrolGlobalRate  = 20.0 // writes per second in total
	enrolGlobalBurst = 200
	enrolMaxSources  = 4096 // sources tracked at once; idle ones are forgotten first
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

// enrolLimiter is the rate limit on key-store writes peers cause. The zero value is ready.
type enrolLimiter struct {
	mu      sync.Mutex // guards the fields below
	global  *bucket
	sources map[string]*bucket
}

// allow takes one write from src's bucket and the global one, or reports false and takes
// nothing.
func (l *enrolLimiter) allow(src string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.global == nil {
		l.global = &bucket{tokens: enrolGlobalBurst, last: now}
		l.sources = map[string]*bucket{}
	}
	b := l.sources[src]
	if b == nil {
		if len(l.sources) >= enrolMaxSources {
			for k, o := range l.sources {
				if o.refill(now, enrolSourceRate, enrolSourceBurst); o.tokens >= enrolSourceBurst {
					delete(l.sources, k) // idle: a fresh bucket is the same
				}
			}
		}
		if len(l.sources) >= enrolMaxSources {
			return false
		}
		b = &bucket{tokens: enrolSourceBurst, last: now}
		l.sources[src] = b
	}
	b.refill(now, enrolSourceRate, enrolSourceBurst)
	l.global.refill(now, enrolGlobalRate, enrolGlobalBurst)
	if b.tokens < 1 || l.global.tokens < 1 {
		return false
	}
	b.tokens--
	l.global.tokens--
	return true
}

// enrol returns the key-store record that governs a minion which proved it holds key and asks
// to be id, from source src, with token (possibly empty). A token that enrols nothing (unknown,
// spent, expired, for other ids, or a rejected or accepted id) is not spent, and the minion is
// then presented as one without a token.
func (m *Master) enrol(src, id string, key pki.PublicKey, requested []string, token string) (pki.MinionKey, error) {
	if src == "" {
		src = "unknown" // the peer is gone; its reply will not be delivered either
	}
	p := pki.Presentation{ID: id, Key: key, Source: src, Requested: requested}
	if token != "" {
		rec, spent, err := m.keys.Redeem(p, token, time.Now())
		if err == nil {
			if spent {
				m.log.Info("minion enrolled with a token", "minion", id, "source", src, "groups", rec.Groups, "finger", key.Fingerprint())
			}
			return rec, nil
		}
		m.log.Warn("enrolment token refused", "minion", id, "source", src, "err", err)
	}
	var allow func() bool
	if !m.cfg.AutoAccept {
		allow = func() bool { return m.enrolLimit.allow(src, time.Now()) }
	}
	rec, err := m.keys.Present(p, m.cfg.AutoAccept, allow)
	if err != nil && isEnrolLimit(err) {
		m.log.Warn("new minion key refused", "minion", id, "source", src, "err", err)
	}
	return rec, err
}

// isEnrolLimit reports whether err is a bound on pending keys (told to the minion) rather than
// a failure of the store.
func isEnrolLimit(err error) bool {
	return errors.Is(err, pki.ErrPendingFull) || errors.Is(err, pki.ErrSourceFull) || errors.Is(err, pki.ErrEnrolLimited)
}
