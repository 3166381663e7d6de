package master

import (
	"errors"
	"fmt"
	"time"

	"github.com/brinecm/brine/pki"
)

// Enrolment: what the master decides when a minion that proved it holds its key asks to be
// known by an id, with or without an enrolment token. The decision itself lives in the key
// store (store.Keys: Present, PresentAll and Redeem, whose rules are pki.KeyStore's); this file
// adds where the peer connected from (the source the Router counts it against: its IP, or its
// /64 for IPv6), the rate limit on the records unauthenticated peers make the master write, and
// the registrar that group-commits them off the pre-authentication workers.

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

// newEnrolLimiter is the rate limit on key-store writes peers cause, by source.
func newEnrolLimiter() *keyedLimiter {
	return &keyedLimiter{rate: enrolSourceRate, burst: enrolSourceBurst, max: enrolMaxSources,
		global: &bucket{tokens: enrolGlobalBurst}, globalRate: enrolGlobalRate, globalBurst: enrolGlobalBurst}
}

// Registration: a minion whose key the store does not hold as it presents it (a new id, another
// key for a known id, or a token to redeem) makes the key store write, and a write is durable
// only after fsyncs. The two workers that serve unauthenticated peers (preAuthWorkers) do not
// wait for them: they hand the verified auth to the registrar and go on with the next hello.
// The registrar takes every auth queued meanwhile and registers them with one group commit
// (store.Keys.PresentAll), then answers each: 5,000 new minions cost tens of commits, not
// 5,000 fsynced files one after the other on two goroutines.
const (
	// registrarQueue bounds the verified auths waiting for the registrar. An auth that finds
	// it full is refused (errRegistrarBusy; the minion retries with its backoff): the
	// pre-authentication workers never wait for the store. They did, and a store that stopped
	// answering, its queue filled by auths of made-up ids that anyone can send, kept every
	// minion from authenticating again, accepted ones too.
	registrarQueue = 1024
	// registrarBatch bounds the presentations of one group commit.
	registrarBatch = 256
)

// registration is a verified auth whose key-store record the registrar decides.
type registration struct {
	p     pki.Presentation
	token string
	// finish answers the minion with the record (or the refusal); it runs on the registrar.
	finish func(rec pki.MinionKey, err error)
}

// errRegistrarBusy is the refusal of an auth that found the registrar's queue full.
var errRegistrarBusy = errors.New("too many new keys waiting to be registered; try again")

// register hands r to the registrar, or reports false at once if its queue is full.
func (m *Master) register(r registration) bool {
	select {
	case m.regQ <- r:
		return true
	default:
		return false
	}
}

// registrar registers the queued auths, as many at a time as are waiting (up to
// registrarBatch), until the master stops.
func (m *Master) registrar() {
	batch := make([]registration, 0, registrarBatch)
	for {
		select {
		case r := <-m.regQ:
			batch = append(batch[:0], r)
		case <-m.ctx.Done():
			return
		}
	more:
		for len(batch) < registrarBatch {
			select {
			case r := <-m.regQ:
				batch = append(batch, r)
			default:
				break more
			}
		}
		m.registerSafe(batch)
		clear(batch) // drop the finished closures
	}
}

// registerSafe is registerBatch that survives a panic, as the workers' handleSafe: what peers
// send never stops the master (the batch's minions get no answer and retry).
func (m *Master) registerSafe(batch []registration) {
	defer func() {
		if r := recover(); r != nil {
			m.panics.error(m.log, "register", "panic while registering minion keys; dropped the batch", "minions", len(batch), "panic", fmt.Sprint(r))
		}
	}()
	m.registerBatch(batch)
}

// registerBatch decides the records of the minions in batch and answers each. A token that
// enrols nothing (unknown, spent, expired, for other ids, or a rejected or accepted id) is not
// spent, and its minion is then presented as one without a token. Redemptions go one by one
// (a token is the operator's, and rare); the presentations are committed together.
func (m *Master) registerBatch(batch []registration) {
	recs := make([]pki.MinionKey, len(batch))
	errs := make([]error, len(batch))
	var plain []int
	var ps []pki.Presentation
	for i, r := range batch {
		if r.token != "" {
			rec, spent, err := m.keys.Redeem(r.p, r.token, time.Now())
			if err == nil {
				if spent {
					m.log.Info("minion enrolled with a token", "minion", r.p.ID, "source", r.p.Source, "groups", rec.Groups, "finger", r.p.Key.Fingerprint())
				}
				recs[i] = rec
				continue
			}
			// Anyone can send tokens to guess: one line a minute, whatever the ids and sources.
			m.garbage.warn(m.log, "token", "enrolment token refused", "minion", r.p.ID, "source", r.p.Source, "err", err)
		}
		plain = append(plain, i)
		ps = append(ps, r.p)
	}
	if len(ps) > 0 {
		var allow func(pki.Presentation) bool
		if !m.cfg.AutoAccept {
			allow = func(p pki.Presentation) bool { return m.enrolLimit.allow(p.Source, time.Now()) }
		}
		rs, es := m.keys.PresentAll(ps, m.cfg.AutoAccept, allow)
		for k, i := range plain {
			recs[i], errs[i] = rs[k], es[k]
			if isEnrolLimit(es[k]) {
				m.garbage.warn(m.log, "enrol-limit", "new minion key refused", "minion", ps[k].ID, "source", ps[k].Source, "err", es[k])
			}
		}
	}
	for i, r := range batch {
		r.finish(recs[i], errs[i])
	}
}

// isEnrolLimit reports whether err is a bound on pending keys (told to the minion) rather than
// a failure of the store.
func isEnrolLimit(err error) bool {
	return errors.Is(err, pki.ErrPendingFull) || errors.Is(err, pki.ErrSourceFull) || errors.Is(err, pki.ErrEnrolLimited)
}
