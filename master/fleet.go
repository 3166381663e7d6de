package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// Many masters, one fleet. Masters that share a PostgreSQL store (Config.Store) sign with one
// master key (ClaimIdentity in New), read keys, tokens, jobs and returns from the database, and
// tell each other through LISTEN/NOTIFY what they did: a job published on one master is
// published by every other master to its targeted minions (read from the store); a return
// recorded on one reaches the commands waiting on another; facts and key removals propagate.
// Each minion is connected to one master at a time and holds a presence lease in the store.

// openStore opens the store cfg names.
func openStore(cfg Config, master pki.PublicKey, logger *slog.Logger) (store.Store, error) {
	if postgresStore(cfg.Store) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return store.OpenPostgres(ctx, cfg.Store, master, logger)
	}
	return store.OpenFiles(cfg.DataDir, master)
}

// fleetState is this master's side of presence, and whether its database answers.
type fleetState struct {
	storeErr   atomic.Pointer[error]     // the last failed check of the database; nil when it answers
	storeSince atomic.Pointer[time.Time] // when the database was last found lost or back
	storeLog   rateLog                   // store errors met while serving minions, one line a minute per kind
}

// ErrStoreLost is returned instead of publishing when the master cannot reach its database: it
// does not act on state it cannot read, and another master may be publishing meanwhile.
var ErrStoreLost = errors.New("this master lost its database; it publishes no new job until the database is back (another master of the fleet can)")

// errStoreUnavailable marks a request that failed because the store did not answer, as opposed
// to one the master refuses: the minion is told "no session", so that it keeps what it sent (a
// return stays in its outbox) and sends it again once authenticated, to this master when its
// database is back or to another master of its list.
var errStoreUnavailable = errors.New("the store does not answer")

// storeUnavailable wraps err, a failure of the store, as errStoreUnavailable.
func storeUnavailable(err error) error { return fmt.Errorf("%w: %v", errStoreUnavailable, err) }

// storeLost reports why the database does not answer, or nil.
func (m *Master) storeLost() error {
	if p := m.fleet.storeErr.Load(); p != nil {
		return fmt.Errorf("%w: %v", ErrStoreLost, *p)
	}
	return nil
}

// lookupKey reads minion's key record; err is set when the store could not say (a lost
// database), as opposed to a key that is not there.
func (m *Master) lookupKey(minion string) (pki.MinionKey, bool, error) {
	l, ok := m.keys.(store.KeyLookup)
	if !ok {
		rec, ok := m.keys.Get(minion)
		return rec, ok, nil
	}
	rec, ok, err := l.Lookup(minion)
	if err != nil {
		m.fleet.storeLog.warn(m.log, "key", "could not read a minion's key; told it to authenticate again", "minion", minion, "err", err)
	}
	return rec, ok, err
}

// acceptedKeys returns the accepted keys, with an error when the store could not say.
func (m *Master) acceptedKeys() (map[string]pki.MinionKey, error) {
	if l, ok := m.keys.(store.KeyLookup); ok {
		return l.AcceptedKeys()
	}
	return m.keys.Accepted(), nil
}

// StoreHealth reports whether this master's store answers, as its last check found.
func (m *Master) StoreHealth() StoreHealth {
	h := StoreHealth{Kind: "files", Up: true}
	if _, ok := m.st.(store.Pinger); ok {
		h.Kind = "postgres"
	}
	if t := m.fleet.storeSince.Load(); t != nil {
		h.Since = *t
	}
	if p := m.fleet.storeErr.Load(); p != nil {
		h.Up, h.Error = false, (*p).Error()
	}
	return h
}

// watchStore checks the database every storeCheckEvery and says when it goes and comes back.
// While it is lost the master publishes no new job (publishJob), runs no schedule, and tells
// minions whose requests need the store "no session"; the log repeats the loss once a minute.
func (m *Master) watchStore(p store.Pinger) {
	now := time.Now()
	m.fleet.storeSince.Store(&now)
	t := time.NewTicker(storeCheckEvery)
	defer t.Stop()
	var lost time.Time
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(m.ctx, storeCheckEvery)
		err := p.Ping(ctx)
		cancel()
		if m.ctx.Err() != nil {
			return
		}
		was := m.fleet.storeErr.Load() != nil
		now := time.Now()
		switch {
		case err != nil && !was:
			lost = now
			m.fleet.storeSince.Store(&now)
			m.log.Error("lost the database: publishing no new jobs until it is back", "err", err)
		case err != nil:
			m.fleet.storeLog.warn(m.log, "lost", "the database is still lost: publishing no new jobs", "for", now.Sub(lost).Round(time.Second), "err", err)
		case was:
			m.fleet.storeSince.Store(&now)
			m.log.Info("the database is back: publishing again", "lost_for", now.Sub(lost).Round(time.Second))
		}
		if err != nil {
			m.fleet.storeErr.Store(&err)
		} else {
			m.fleet.storeErr.Store(nil)
		}
	}
}

// Presence leases. A master writes a minion's lease when the minion authenticates, and renews
// the leases of every minion it serves in one write every third of a lease. So presence does not depend on how far apart a large fleet's
// requests are (renewing on requests let leases lapse while a fleet grew and its requests were
// spaced further apart than the leases written before: half of 9,000 minions over three masters
// had none), and it costs a master one statement a period, not a write per request.
const leaseFor = 30 * time.Second // renewed every third of it

// lease is the presence lease: leaseFor, or the tests' own.
func (m *Master) lease() time.Duration {
	if m.cfg.presenceLease > 0 {
		return m.cfg.presenceLease
	}
	return leaseFor
}

// leasePresence records that minion authenticated here: the lease is this master's from now.
// (The store skips the write when the lease is this master's already and barely shorter: a peer
// with an accepted key authenticating again and again costs a statement, not a row written.)
func (m *Master) leasePresence(minion string) {
	if err := m.st.Presence().SetPresence(minion, m.cfg.Name, time.Now().Add(m.lease())); err != nil {
		m.fleet.storeLog.warn(m.log, "presence", "could not record a minion's presence", "minion", minion, "err", err)
	}
}

// renewLeases renews, every third of a lease, the leases of the minions connected here: those
// with a session whose last request is recent (connectedWithin). A lease another master took
// meanwhile (the minion moved there) is left to it.
func (m *Master) renewLeases() {
	t := time.NewTicker(m.lease() / 3)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		seen := m.seen.snapshot(nil)
		now := time.Now()
		m.mu.Lock()
		within := connectedWithin(len(m.sessions))
		ids := make([]string, 0, len(m.byMinion))
		for id := range m.byMinion {
			if t, ok := seen[id]; ok && now.Sub(t) < within {
				ids = append(ids, id)
			}
		}
		m.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		if err := m.st.Presence().RenewPresence(m.cfg.Name, ids, now.Add(m.lease()), now); err != nil {
			m.fleet.storeLog.warn(m.log, "presence", "could not renew the presence leases of this master's minions", "minions", len(ids), "err", err)
		}
	}
}

// Presence returns where each minion is connected (unexpired leases), by minion.
func (m *Master) Presence() (map[string]store.Lease, error) {
	return m.st.Presence().Presence(time.Now())
}

// Name is this master's name in presence leases.
func (m *Master) Name() string { return m.cfg.Name }

// storeCheckEvery is how often a master checks that its database answers.
const storeCheckEvery = 2 * time.Second

// reachableIDs is the set of minions a job published here reaches now: those connected here,
// and those holding a presence lease on another master of a shared store.
func (m *Master) reachableIDs() map[string]bool {
	up := m.connectedIDs()
	p, err := m.Presence()
	if err != nil {
		m.fleet.storeLog.warn(m.log, "presence-read", "could not read presence leases", "err", err)
		return up
	}
	for id, l := range p {
		if l.Master != m.cfg.Name {
			up[id] = true
		}
	}
	return up
}

// startFleet listens to the other masters when the store is shared, and watches the database.
func (m *Master) startFleet() {
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.renewLeases() }()
	if p, ok := m.st.(store.Pinger); ok {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.watchStore(p) }()
	}
	n, ok := m.st.(store.Notifier)
	if !ok {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		n.Listen(m.ctx, m.onFleetEvent)
	}()
}

// onFleetEvent acts on what another master did.
func (m *Master) onFleetEvent(ev store.Event) {
	switch ev.Kind {
	case store.EventJob:
		m.deliverHere(ev.JID)
	case store.EventReturn:
		for _, id := range ev.Minions {
			m.copies.markReturned(ev.JID, id)
		}
		m.mu.Lock()
		watched := len(m.watchers[ev.JID]) > 0
		m.mu.Unlock()
		if watched {
			m.replayReturns(ev.JID, ev.Minions)
		}
	case store.EventResync:
		m.log.Info("reconnected to the store's notifications; reading the returns of running jobs again")
		m.factsSeen.reset() // facts stored meanwhile were not seen: the next reports are written
		m.mu.Lock()
		var jids []string
		for jid := range m.watchers {
			jids = append(jids, jid)
		}
		m.mu.Unlock()
		for _, jid := range jids {
			m.replayReturns(jid, nil)
		}
	case store.EventFacts:
		m.mu.Lock()
		_, here := m.byMinion[ev.Minion]
		m.mu.Unlock()
		if here {
			// The minion reports to this master now: its session's facts are newer than a
			// read of what another master stored before (facts are read in batches, later).
			return
		}
		var f map[string]any
		if err := wire.Unmarshal(ev.Data, wire.MaxFacts+4096, &f); err != nil {
			return
		}
		clean, err := cleanStored(ev.Minion, f)
		if err != nil {
			return
		}
		m.mu.Lock()
		m.facts[ev.Minion] = clean
		m.mu.Unlock()
		// What the store holds now: a minion that fails over to this master and reports the
		// same facts costs no write, and the other masters no notification and no read.
		m.factsSeen.set(ev.Minion, ev.Data)
	case store.EventKey:
		switch ev.State {
		case string(pki.StateRejected):
			m.removeLocal([]string{ev.Minion}, false)
		case "deleted":
			m.removeLocal([]string{ev.Minion}, true)
		}
	}
}

// removeLocal is RemoveMinions for a removal another master made: the store is already
// changed; this master ends the sessions, and with them the session keys later jobs would be
// wrapped for.
func (m *Master) removeLocal(ids []string, forget bool) {
	for _, id := range ids {
		m.dropSession(id)
		if forget {
			m.mu.Lock()
			delete(m.facts, id)
			m.mu.Unlock()
			m.factsSeen.forget(id)
		}
	}
}

// deliverHere publishes job jid, published by another master, to the minions it addresses that
// are connected here: this master reads the signed job from the store, makes its copies as its
// publisher did (copiesOfSigned: on each minion's topic, by bucket naming only the bucket's
// minions, or to all; kept for resends) and wraps each copy's key under the session keys of
// these minions, each frame carrying only the wraps of its minions. A minion of the job connected to no
// master gets it when it comes back, from KindResend on whichever master it reaches.
func (m *Master) deliverHere(jid string) {
	signed, minions, err := m.deliver.Job(jid)
	if err != nil {
		m.log.Error("could not read a job another master published", "jid", jid, "err", err)
		return
	}
	if signed == nil {
		return
	}
	keys := m.sessionKeys(minions)
	if len(keys) == 0 {
		return
	}
	here := make([]string, 0, len(keys))
	for id := range keys {
		here = append(here, id)
	}
	sort.Strings(here)
	meta, copies, frames, err := m.copiesOfSigned(signed)
	if err != nil {
		m.log.Error("could not seal a job another master published", "jid", jid, "err", err)
		return
	}
	// Copies a resend made first are kept: the minions given one hold either.
	m.copies.addIfAbsent(jid, meta.Kind, meta.Minions, meta.ExpiresAt, copies, frames)
	sent := m.publishJobFrames(copies, frames, here)
	m.log.Info("published a job of another master to its minions here", "jid", jid, "minions", len(here), "bytes", sent)
}

// replayReturns hands the stored returns of jid to its watchers: those of minions, which another
// master has just recorded, or all of them (nil: after the notifications were lost), which
// the watchers may have already and skip. Only the returns told are read: reading the whole
// job for each batch of returns was quadratic in the job's minions.
func (m *Master) replayReturns(jid string, minions []string) {
	var rs []jobstore.Return
	var err error
	if minions == nil {
		rs, err = m.store.Returns(jid)
	} else {
		rs, err = m.store.ReturnsOf(jid, minions)
	}
	if err != nil {
		m.log.Error("could not read returns another master recorded", "jid", jid, "err", err)
		return
	}
	for _, r := range rs {
		var ret wire.Return
		if json.Unmarshal(r.Data, &ret) == nil && ret.Minion == r.Minion {
			m.notifyReturn(ret)
		}
	}
}
