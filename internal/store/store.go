// Package store is the master's system of record behind small interfaces: minion keys,
// enrolment tokens, jobs, returns and facts, attested values, pending deliveries, presence,
// schedule rounds and drift checks.
// Two implementations pass one contract suite (contract_test.go): Files, the embedded default
// for one master (JSON files and one bbolt file in the data dir), and Postgres, one PostgreSQL
// database shared by any number of masters of one fleet.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/pki"
)

// Keys is the store of minion keys. Its decisions are pki.KeyStore's (see there for each
// method's rules); implementations differ only in where the records live and how a decision is
// made atomic: Present, Redeem and the transitions are each one atomic step for all masters
// sharing the store.
//
// The reads (Get, List, Accepted, Pending) return no error: an implementation that cannot read
// its records answers as if there were none (a minion is then refused, a job is not sent) and
// reports the error in its log; a master never acts on records it could not read.
type Keys interface {
	// SetLimits replaces the bounds on pending keys (zero fields: defaults).
	SetLimits(l pki.PendingLimits)
	// Pending returns the number of pending keys in total and first presented from source.
	Pending(source string) (total, fromSource int)
	// Present records a minion that proved it holds p.Key (pki.KeyStore.Present).
	Present(p pki.Presentation, autoAccept bool, allow func() bool) (pki.MinionKey, error)
	// PresentAll is Present for many presentations, decided in order, whose writes are
	// committed together (pki.KeyStore.PresentAll): a burst of new minions costs about one
	// commit. allow is asked per write, with the presentation that makes it. It returns a
	// record and an error per presentation.
	PresentAll(ps []pki.Presentation, autoAccept bool, allow func(pki.Presentation) bool) ([]pki.MinionKey, []error)
	// Redeem enrols p with token tok (pki.KeyStore.Redeem): the decision and the spending of
	// the token are one atomic step, so a token enrols at most one minion across all masters.
	Redeem(p pki.Presentation, tok string, now time.Time) (rec pki.MinionKey, spent bool, err error)
	// Get returns the governing record of id (never a denied one).
	Get(id string) (pki.MinionKey, bool)
	// List returns every record, denied ones included, sorted by state then id.
	List() []pki.MinionKey
	// Accepted returns the accepted records by id.
	Accepted() map[string]pki.MinionKey
	// Accept, AcceptKeys, Reject, SetGroups and Delete are the operator's transitions.
	Accept(glob string, groups []string, includeRejected bool) ([]string, error)
	AcceptKeys(glob string, groups []string, includeRejected bool, finger string) ([]pki.MinionKey, error)
	Reject(glob string) ([]string, error)
	SetGroups(glob string, groups []string) ([]string, error)
	Delete(glob string) ([]string, error)
}

// KeyLookup is a key store whose reads can fail (a database): Lookup is Get and AcceptedKeys is
// Accepted with the error, so that a master tells keys it could not read from keys that are gone.
type KeyLookup interface {
	Lookup(id string) (pki.MinionKey, bool, error)
	AcceptedKeys() (map[string]pki.MinionKey, error)
}

// Tokens is the store of enrolment tokens (spent by Keys.Redeem).
type Tokens interface {
	// Create makes a token and returns its secret form, shown once.
	Create(req pki.TokenRequest) (string, pki.Token, error)
	// Check reports whether tok may enrol id at now, spending nothing (an expired token is
	// removed).
	Check(tok, id string, now time.Time) (pki.Token, error)
	// List returns the unused tokens (hashes only).
	List() ([]pki.Token, error)
}

// Deliveries are the jobs still owed to minions: their signed content, whom they address and
// who has returned. A master answers heartbeats and resend requests from them, so a job reaches
// a minion that missed it, also through another master after a failover when the store is
// shared.
type Deliveries interface {
	// Add records the signed content of a job for minions, deliverable until expires.
	Add(jid string, minions []string, expires time.Time, signed []byte) error
	// Addressed reports whether jid addresses minion; known is false when the job is not
	// recorded here (the caller asks the job store).
	Addressed(jid, minion string) (addressed, known bool, err error)
	// MarkReturned records that minion returned jid. (A job store that is a DeliveryMarker
	// marks it with the return already.)
	MarkReturned(jid, minion string) error
	// Pending returns the unexpired jobs for minion that it has not returned, published at
	// least grace before now.
	Pending(minion string, now time.Time, grace time.Duration) ([]string, error)
	// Resendable returns the signed content of jid if it is pending for minion and was not
	// handed out again for it within interval before now (then it counts as handed out at now);
	// nil otherwise. With several masters, one of them gets it per interval.
	Resendable(jid, minion string, now time.Time, interval time.Duration) ([]byte, error)
	// Job returns the signed content of jid and the minions it addresses (nil content when
	// unknown or everyone returned).
	Job(jid string) (signed []byte, minions []string, err error)
}

// DeliveryMarker is a job store whose AddReturn marks the return's delivery returned in the
// same transaction (Deliveries.MarkReturned): the caller need not mark it again.
type DeliveryMarker interface {
	MarksDeliveries()
}

// Attested keeps what the master vouches for about each minion (master/attest.go), as opaque
// JSON by minion id.
type Attested interface {
	// Get returns id's record, nil when there is none.
	Get(id string) ([]byte, error)
	// Update replaces id's record by fn(old) atomically; fn returning nil changes nothing.
	Update(id string, fn func(old []byte) ([]byte, error)) error
	// Delete forgets id's record.
	Delete(id string) error
}

// Lease says a minion is connected to a master until a time.
type Lease struct {
	Master string    `json:"master"`
	Until  time.Time `json:"until"`
}

// Presence is where each minion is connected.
type Presence interface {
	// SetPresence records that minion is connected to master until until.
	SetPresence(minion, master string, until time.Time) error
	// RenewPresence extends to until the leases of minions that master holds, and gives it
	// those that no master holds unexpired at now. A lease another master holds unexpired
	// stays: the minion has moved there.
	RenewPresence(master string, minions []string, until, now time.Time) error
	// Presence returns the leases not expired at now, by minion.
	Presence(now time.Time) (map[string]Lease, error)
}

// Round is the last round of a schedule: which master claimed it, and whether it is over.
type Round struct {
	N      int64  // rounds claimed so far (the first is 1)
	Master string // the master that claimed round N
	Done   bool   // round N is over (FinishRound)
}

// Rounds are the rounds of the masters' schedules (master.hcl `schedule` blocks), so that a
// schedule runs once per period however many masters share the store: each round is claimed by
// one master, and the next cannot be claimed before the previous one is over and its period has
// passed. Times are the store's clock, not the masters'.
type Rounds interface {
	// ClaimRound claims the next round of schedule name for master when round N is over (or was
	// claimed more than stale ago: its master died) and `every` has passed since it ended.
	// Exactly one of concurrent claimants gets it (claimed true, the round's number in r.N);
	// the others get the last round and, in wait, how long until it may be claimed (0: when it
	// is over).
	ClaimRound(name, master string, every, stale time.Duration) (r Round, claimed bool, wait time.Duration, err error)
	// FinishRound records that round n of name is over: the next may be claimed every after now.
	FinishRound(name string, n int64, every time.Duration) error
	// LastRound returns the last round of name (zero when none was claimed).
	LastRound(name string) (Round, error)
}

// DriftCheck is a minion's last drift check as stored: when it was made, and the master's
// record of it (JSON, opaque to the store: master/schedule.go makes and reads it).
type DriftCheck struct {
	Checked time.Time
	Record  []byte
}

// Drifts keeps each minion's last drift check (a master.hcl schedule in drift mode), so that
// `brine drift` and `brine status` on any master of a shared store show the same drift.
type Drifts interface {
	// PutDrifts records each check as its minion's last one (by id), except where a check made
	// later is recorded already: the rounds of two masters may finish out of order. A minion id
	// that is not valid fails the call before anything is recorded.
	PutDrifts(checks map[string]DriftCheck) error
	// Drifts returns the recorded checks of minions, by id; minions without one are absent.
	Drifts(minions []string) (map[string]DriftCheck, error)
	// DeleteDrift forgets minion's check.
	DeleteDrift(minion string) error
}

// ErrOtherIdentity is returned by ClaimIdentity when the store belongs to a fleet whose
// masters sign with another key.
var ErrOtherIdentity = errors.New("the store belongs to masters with another master key")

// Store is everything a master keeps.
type Store interface {
	Keys() Keys
	Tokens() Tokens
	Jobs() jobstore.Store
	Deliveries() Deliveries
	Attested() Attested
	Presence() Presence
	Rounds() Rounds
	Drifts() Drifts
	// ClaimIdentity records finger (the master key's fingerprint) on first use and returns
	// ErrOtherIdentity when another one is recorded: all masters of a shared store sign with
	// one key. A store of one master (Files) accepts any.
	ClaimIdentity(finger string) error
	// Close releases the store.
	Close() error
}

// Event is a change another master made to a shared store.
type Event struct {
	Kind   string // one of the Event* kinds
	JID    string // EventJob, EventReturn
	Minion string // EventFacts, EventKey
	// Minions: EventReturn, the minions whose returns of JID were recorded (one notification
	// names many: returns are told in batches).
	Minions []string
	State   string // EventKey: the key's new state, or "deleted"
	Data    []byte // EventFacts: the facts stored
}

// The kinds of Event.
const (
	EventJob    = "job"    // a job was published
	EventReturn = "return" // a return was recorded (once per job and minion)
	EventFacts  = "facts"  // a minion's facts were stored
	EventKey    = "key"    // the operator changed a key's state or deleted it
	// EventResync: the notification connection was lost and is back; events in between are
	// lost, so the master reads again what it waits for.
	EventResync = "resync"
)

// Notifier is a store shared by several masters: it tells one master what the others did.
type Notifier interface {
	// Listen calls fn for every event of another master until ctx ends, reconnecting after a
	// loss of the connection; fn must not block for long, and may be called from more than one
	// goroutine at once (facts events come from their own). It returns when ctx ends.
	Listen(ctx context.Context, fn func(Event))
}

// Pinger is a store that can be unreachable (a database): Ping reports whether it answers.
type Pinger interface {
	Ping(ctx context.Context) error
}
