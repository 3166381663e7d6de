package pki

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/lazyre"
)

// KeyState is where a minion's key stands with the master.
type KeyState string

// The states of a minion key. Denied is not a state of the accepted record: it is a separate
// record of a known id that presented a different key.
const (
	StatePending  KeyState = "pending"
	StateAccepted KeyState = "accepted"
	StateRejected KeyState = "rejected"
	StateDenied   KeyState = "denied"
)

var idRE = lazyre.New(`^[a-z0-9][a-z0-9.-]{0,62}$`)

// ValidID reports whether id is an acceptable minion id (DESIGN.md invariant 11): lower-case
// letters, digits, dots and dashes, at most 63 characters, no "..", so that it is safe as a file
// name everywhere.
func ValidID(id string) bool {
	return idRE.MatchString(id) && !strings.Contains(id, "..")
}

// MinionKey is the key store's record of one minion.
type MinionKey struct {
	ID      string    `json:"id"`
	Key     PublicKey `json:"-"`
	KeyText string    `json:"key"`
	State   KeyState  `json:"state"`
	// Groups are granted by the operator (brine key accept --groups) or a token, never taken
	// from what the minion asks.
	Groups []string `json:"groups,omitempty"`
	// Requested is what the minion's config asks for: shown to the operator as "requested, not
	// granted", never copied into Groups by the store.
	Requested []string `json:"requested,omitempty"`
	// Source is the address the key was first presented from (the host; an IPv6 /64), "" when
	// unknown.
	Source  string    `json:"source,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Finger is the fingerprint of the record's key.
func (m MinionKey) Finger() string { return m.Key.Fingerprint() }

// Errors of the key store. The ones about enrolment are logged by the master and, in a short
// form, told to the minion; none of them changes a record.
var (
	ErrNoSuchKey    = errors.New("no such minion key")
	ErrPendingFull  = errors.New("too many pending keys: the operator must accept, reject or delete some (brine key list)")
	ErrSourceFull   = errors.New("too many pending keys from this address")
	ErrEnrolLimited = errors.New("too many new keys from this address or in total; try again later")
	ErrKeyRejected  = errors.New("the operator rejected this id's key; a token does not override that")
	ErrKeyHeld      = errors.New("another key is accepted for this id")
)

// PendingLimits bound what unauthenticated peers can add to the key store. Zero values take
// the defaults.
type PendingLimits struct {
	Max       int           // pending keys in total (default 1000)
	PerSource int           // pending keys first presented from one source (default 64)
	TTL       time.Duration // a pending key older than this may be dropped when the store is full (default 24h)
}

func (l *PendingLimits) fill() {
	if l.Max <= 0 {
		l.Max = 1000
	}
	if l.PerSource <= 0 {
		l.PerSource = 64
	}
	if l.TTL <= 0 {
		l.TTL = 24 * time.Hour
	}
}

// KeyStore is the master's on-disk store of minion keys: one JSON file per minion under
// dir/minions and one per denied presentation under dir/denied. It is safe for concurrent use:
// wmu orders the writes of the files, mu guards the in-memory copy and the pending counts.
type KeyStore struct {
	dir    string
	limits PendingLimits

	// wmu serialises the writers. A group commit (PresentAll) syncs its files holding wmu
	// only, so that the readers, which take mu alone, never wait for a disk; every other
	// writer holds both.
	wmu sync.Mutex

	mu       sync.Mutex           // guards the fields below
	keys     map[string]MinionKey // id -> pending/accepted/rejected record
	denied   map[string]MinionKey // id -> last key presented that differed from keys[id]
	pending  int                  // records in keys with StatePending
	bySource map[string]int       // Source -> pending records first presented from it
	commits  int                  // group commits made by PresentAll

	syncing func() // when set (tests), called by a group commit before it syncs, without mu
}

// OpenKeyStore opens (creating if needed) the key store in dir.
func OpenKeyStore(dir string) (*KeyStore, error) {
	s := &KeyStore{dir: dir, keys: map[string]MinionKey{}, denied: map[string]MinionKey{}, bySource: map[string]int{}}
	s.limits.fill()
	for _, sub := range []string{"minions", "denied"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("key store: %w", err)
		}
	}
	keys := map[string]MinionKey{}
	if err := s.load("minions", keys); err != nil {
		return nil, err
	}
	for _, m := range keys {
		s.set(m)
	}
	if err := s.load("denied", s.denied); err != nil {
		return nil, err
	}
	return s, nil
}

// SetLimits replaces the bounds on pending keys; zero fields take the defaults. Keys already
// pending stay, even above the new bounds.
func (s *KeyStore) SetLimits(l PendingLimits) {
	l.fill()
	s.mu.Lock()
	s.limits = l
	s.mu.Unlock()
}

// Commits returns the number of group commits PresentAll has made: each syncs the files of
// its writes together, and their directories once.
func (s *KeyStore) Commits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}

// Pending returns the number of pending keys in total and from source.
func (s *KeyStore) Pending(source string) (total, fromSource int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending, s.bySource[source]
}

// set stores m in the in-memory copy and keeps the pending counts; s.mu must be held.
func (s *KeyStore) set(m MinionKey) {
	s.unset(m.ID)
	s.keys[m.ID] = m
	if m.State == StatePending {
		s.pending++
		s.bySource[m.Source]++
	}
}

// unset removes id from the in-memory copy; s.mu must be held.
func (s *KeyStore) unset(id string) {
	old, ok := s.keys[id]
	if !ok {
		return
	}
	delete(s.keys, id)
	if old.State == StatePending {
		s.pending--
		if s.bySource[old.Source]--; s.bySource[old.Source] <= 0 {
			delete(s.bySource, old.Source)
		}
	}
}

func (s *KeyStore) load(sub string, into map[string]MinionKey) error {
	ents, err := os.ReadDir(filepath.Join(s.dir, sub))
	if err != nil {
		return fmt.Errorf("key store: %w", err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !ValidID(id) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, sub, e.Name()))
		if err != nil {
			return fmt.Errorf("key store: %w", err)
		}
		var m MinionKey
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("key store: %s: %w", e.Name(), err)
		}
		if m.Key, err = ParsePublicKey(m.KeyText); err != nil || m.ID != id {
			return fmt.Errorf("key store: %s: corrupt record", e.Name())
		}
		into[id] = m
	}
	return nil
}

func (s *KeyStore) write(sub string, m MinionKey) error {
	m.KeyText = m.Key.String()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.dir, sub, m.ID+".json"), data, 0o600)
}

// Presentation is a minion that proved it holds Key and asks to be known as ID.
type Presentation struct {
	ID        string
	Key       PublicKey
	Source    string   // where it connected from (see MinionKey.Source)
	Requested []string // the groups its config asks for: recorded for the operator, never granted
}

// Present records that a minion proved possession of p.Key (the caller has checked the proof)
// and returns the record that now governs it: a new id becomes pending (or accepted with no
// groups, when autoAccept is set); a known id with the same key keeps its record unchanged; a
// known id with a different key is recorded as denied and the returned record has State
// StateDenied. Nothing presented here can move a key to accepted except autoAccept (DESIGN.md
// invariant 13).
//
// Every record Present writes is a file an unauthenticated peer caused: a new pending key must
// fit PendingLimits (ErrPendingFull, ErrSourceFull), and every write must first be allowed by
// allow (a rate limit; nil allows all), else ErrEnrolLimited and nothing is written. allow is
// asked only once the bounds have let the write through, so a refused presentation takes
// nothing from the rate limit.
func (s *KeyStore) Present(p Presentation, autoAccept bool, allow func() bool) (MinionKey, error) {
	var each func(Presentation) bool
	if allow != nil {
		each = func(Presentation) bool { return allow() }
	}
	recs, errs := s.PresentAll([]Presentation{p}, autoAccept, each)
	return recs[0], errs[0]
}

// PresentAll is Present for many presentations, decided in order as if presented one after
// the other, whose writes are group-committed (atomicfile.Batch): the files of a burst of new
// minions are synced together, about the price of one, instead of one after the other with two
// fsyncs each. allow is asked per write with the presentation that would make it. It returns
// a record and an error per presentation; a bound refuses only its own presentation, a failed
// commit fails those whose file it did not make durable.
//
// The readers (Get, Accepted, List, Pending) do not wait for the commit's syncs: the records
// join the in-memory copy once they are durable, so no reader sees one before. Other writers
// wait for it.
func (s *KeyStore) PresentAll(ps []Presentation, autoAccept bool, allow func(Presentation) bool) ([]MinionKey, []error) {
	recs := make([]MinionKey, len(ps))
	errs := make([]error, len(ps))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UTC()
	g := newGroup()
	for i, p := range ps {
		if !ValidID(p.ID) {
			errs[i] = fmt.Errorf("invalid minion id %q", p.ID)
			continue
		}
		if g.staged(p.ID) {
			// The same id again (a minion that retried): a record staged for it that already
			// answers it stands or falls with that record's commit; anything else is decided
			// on the durable record.
			if rec, ok := s.known(g, p); ok {
				recs[i] = rec
				g.deps[p.ID] = append(g.deps[p.ID], i)
				continue
			}
			s.commit(g, recs, errs)
		}
		var ok func() bool
		if allow != nil {
			ok = func() bool { return allow(p) }
		}
		rec, sub, err := s.decidePresent(g, p, autoAccept, ok, now)
		if err != nil || sub == "" {
			recs[i], errs[i] = rec, err
			continue
		}
		if err := s.stage(g, i, sub, rec); err != nil {
			errs[i] = err
			continue
		}
		recs[i] = rec
	}
	s.commit(g, recs, errs)
	return recs, errs
}

// decidePresent is Present's decision for p, counting what g has staged; s.mu must be held.
// sub is the directory of the record to write ("minions" or "denied"), "" when nothing is
// written.
func (s *KeyStore) decidePresent(g *group, p Presentation, autoAccept bool, allow func() bool, now time.Time) (rec MinionKey, sub string, err error) {
	if m, ok := s.known(g, p); ok {
		return m, "", nil // already on record: no write
	}
	if _, ok := g.key(s, p.ID); ok {
		if allow != nil && !allow() {
			return MinionKey{}, "", ErrEnrolLimited
		}
		d := MinionKey{ID: p.ID, Key: p.Key, State: StateDenied, Requested: cleanGroups(p.Requested), Source: p.Source, Created: now, Updated: now}
		return d, "denied", nil
	}
	m := MinionKey{ID: p.ID, Key: p.Key, State: StatePending, Requested: cleanGroups(p.Requested), Source: p.Source, Created: now, Updated: now}
	if autoAccept {
		m.State = StateAccepted
	} else {
		if s.pending+g.pending >= s.limits.Max {
			s.prunePending(now)
		}
		if s.pending+g.pending >= s.limits.Max {
			return MinionKey{}, "", ErrPendingFull
		}
		if s.bySource[p.Source]+g.bySource[p.Source] >= s.limits.PerSource {
			return MinionKey{}, "", ErrSourceFull
		}
	}
	if allow != nil && !allow() {
		return MinionKey{}, "", ErrEnrolLimited
	}
	return m, "minions", nil
}

// known returns the record that answers p without a write: its id's record when the key is
// the same, or the denied record of that very key (staged in g or durable). s.mu must be held.
func (s *KeyStore) known(g *group, p Presentation) (MinionKey, bool) {
	m, ok := g.key(s, p.ID)
	if !ok {
		return MinionKey{}, false
	}
	if m.Key.Equal(p.Key) {
		return m, true
	}
	d, ok := g.denied[p.ID]
	if !ok {
		d, ok = s.denied[p.ID]
	}
	if ok && d.Key.Equal(p.Key) {
		return d, true
	}
	return MinionKey{}, false
}

// group is the writes of PresentAll not yet committed, at most one per id: their files staged
// in a batch, their records kept apart from the in-memory copy (and counted against the bounds
// with it) until the commit has made them durable.
type group struct {
	b        atomicfile.Batch
	writes   []groupWrite         // in Stage order
	keys     map[string]MinionKey // staged records of s.keys
	denied   map[string]MinionKey // staged records of s.denied
	pending  int                  // staged new pending keys
	bySource map[string]int       // ... by source
	deps     map[string][]int     // id -> the later presentations answered by its staged record
}

type groupWrite struct {
	i       int    // the presentation
	sub, id string // where the record goes
	rec     MinionKey
}

func newGroup() *group {
	return &group{keys: map[string]MinionKey{}, denied: map[string]MinionKey{}, bySource: map[string]int{}, deps: map[string][]int{}}
}

// key returns id's record, staged or durable.
func (g *group) key(s *KeyStore, id string) (MinionKey, bool) {
	if m, ok := g.keys[id]; ok {
		return m, true
	}
	m, ok := s.keys[id]
	return m, ok
}

func (g *group) staged(id string) bool {
	_, k := g.keys[id]
	_, d := g.denied[id]
	return k || d
}

// stage writes rec's file into g's batch and records it in g; s.mu must be held.
func (s *KeyStore) stage(g *group, i int, sub string, rec MinionKey) error {
	rec.KeyText = rec.Key.String()
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := g.b.Stage(filepath.Join(s.dir, sub, rec.ID+".json"), data, 0o600, -1, -1); err != nil {
		return err
	}
	g.writes = append(g.writes, groupWrite{i: i, sub: sub, id: rec.ID, rec: rec})
	if sub == "denied" {
		g.denied[rec.ID] = rec
		return nil
	}
	g.keys[rec.ID] = rec
	if rec.State == StatePending {
		g.pending++
		g.bySource[rec.Source]++
	}
	return nil
}

// commit makes g's staged files durable in one group commit, without holding s.mu (s.wmu
// keeps the other writers out), then puts the records that are durable in the in-memory copy
// and fails the presentations of the others. g is empty afterwards. s.mu must be held.
func (s *KeyStore) commit(g *group, recs []MinionKey, errs []error) {
	if g.b.Len() == 0 {
		return
	}
	s.commits++
	s.mu.Unlock()
	if s.syncing != nil {
		s.syncing()
	}
	cerrs := g.b.Commit()
	s.mu.Lock()
	for k, w := range g.writes {
		if err := cerrs[k]; err != nil {
			for _, i := range append(g.deps[w.id], w.i) {
				recs[i], errs[i] = MinionKey{}, err
			}
			continue
		}
		if w.sub == "denied" {
			s.denied[w.id] = w.rec
		} else {
			s.set(w.rec)
		}
	}
	*g = *newGroup()
}

// prunePending drops the pending keys older than the limits' TTL; s.mu must be held. A minion
// that is still there presents its key again and is pending anew.
func (s *KeyStore) prunePending(now time.Time) {
	for id, m := range s.keys {
		if m.State != StatePending || now.Sub(m.Created) < s.limits.TTL {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, "minions", id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
			continue
		}
		s.unset(id)
	}
}

// Redeem enrols the minion of p with the enrolment token tok from ts: on success its key is
// accepted with the token's groups and the token is spent. The decision and the spending happen
// under both stores' locks, so a token enrols at most one minion however many present it at
// once, and a refused enrolment spends nothing:
//
//   - a token that is unknown, spent, expired or scoped to other ids enrols nothing;
//   - a rejected id stays rejected (ErrKeyRejected), whatever the key;
//   - an id accepted with another key stays so (ErrKeyHeld);
//   - an id accepted with this very key is returned as it is, and the token is not spent;
//   - an id pending with another key (a squatter: anyone can present any id) is taken over,
//     because the token is the operator's word for this id; the squatter's key is recorded as
//     denied.
//
// spent reports whether the token was used up.
func (s *KeyStore) Redeem(ts *TokenStore, p Presentation, tok string, now time.Time) (rec MinionKey, spent bool, err error) {
	if !ValidID(p.ID) {
		return MinionKey{}, false, fmt.Errorf("invalid minion id %q", p.ID)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, err := ts.check(tok, p.ID, now)
	if err != nil {
		return MinionKey{}, false, err
	}
	tokPath := filepath.Join(ts.dir, t.Hash+".json")
	tokData, err := os.ReadFile(tokPath)
	if err != nil {
		return MinionKey{}, false, ErrTokenInvalid
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, known := s.keys[p.ID]
	d, err := DecideRedeem(old, known, p, t, now)
	if err != nil || !d.Spend {
		return d.Record, false, err
	}
	m := d.Record
	// Spend first: if the master dies after this, the token is lost, never used twice.
	if err := os.Remove(tokPath); err != nil {
		return MinionKey{}, false, ErrTokenInvalid
	}
	restore := func() { _ = atomicfile.Write(tokPath, tokData, 0o600) }
	if d.Denied != nil {
		if err := s.write("denied", *d.Denied); err != nil {
			restore()
			return MinionKey{}, false, err
		}
	}
	if err := s.write("minions", m); err != nil {
		restore()
		return MinionKey{}, false, err
	}
	s.set(m)
	if d.Denied != nil {
		s.denied[p.ID] = *d.Denied
	}
	return m, true, nil
}

// Get returns the governing record of id (never the denied one).
func (s *KeyStore) Get(id string) (MinionKey, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.keys[id]
	return m, ok
}

// List returns every record, denied ones included, sorted by state then id.
func (s *KeyStore) List() []MinionKey {
	s.mu.Lock()
	out := make([]MinionKey, 0, len(s.keys)+len(s.denied))
	for _, m := range s.keys {
		out = append(out, m)
	}
	for _, m := range s.denied {
		out = append(out, m)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].State != out[j].State {
			return out[i].State < out[j].State
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Accepted returns the accepted records keyed by id.
func (s *KeyStore) Accepted() map[string]MinionKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]MinionKey{}
	for id, m := range s.keys {
		if m.State == StateAccepted {
			out[id] = m
		}
	}
	return out
}

// Accept moves the pending (and, with includeRejected, rejected) keys whose ids match glob to
// accepted and returns their ids. groups, when not nil, replaces their groups; nil keeps the
// groups they have (none, for a key never accepted): what a minion asked for is never granted.
func (s *KeyStore) Accept(glob string, groups []string, includeRejected bool) ([]string, error) {
	recs, err := s.AcceptKeys(glob, groups, includeRejected, "")
	ids := make([]string, len(recs))
	for i, m := range recs {
		ids[i] = m.ID
	}
	return ids, err
}

// AcceptKeys is Accept returning the accepted records. A non-empty finger accepts only keys
// with that fingerprint (in any form NormalizeFingerprint accepts), so that the operator accepts
// the key they checked and not one presented in between.
func (s *KeyStore) AcceptKeys(glob string, groups []string, includeRejected bool, finger string) ([]MinionKey, error) {
	want := NormalizeFingerprint(finger)
	return s.transitionRecs(glob, func(m *MinionKey) bool {
		if m.State != StatePending && !(includeRejected && m.State == StateRejected) {
			return false
		}
		if want != "" && NormalizeFingerprint(m.Finger()) != want {
			return false
		}
		m.State = StateAccepted
		if groups != nil {
			m.Groups = cleanGroups(groups)
		}
		return true
	})
}

// Reject moves the pending or accepted keys matching glob to rejected and returns their ids.
func (s *KeyStore) Reject(glob string) ([]string, error) {
	return s.transition(glob, func(m *MinionKey) bool {
		if m.State == StateRejected {
			return false
		}
		m.State = StateRejected
		return true
	})
}

// SetGroups replaces the groups of the minions matching glob.
func (s *KeyStore) SetGroups(glob string, groups []string) ([]string, error) {
	return s.transition(glob, func(m *MinionKey) bool {
		m.Groups = cleanGroups(groups)
		return true
	})
}

func (s *KeyStore) transition(glob string, f func(*MinionKey) bool) ([]string, error) {
	recs, err := s.transitionRecs(glob, f)
	ids := make([]string, len(recs))
	for i, m := range recs {
		ids[i] = m.ID
	}
	return ids, err
}

func (s *KeyStore) transitionRecs(glob string, f func(*MinionKey) bool) ([]MinionKey, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	var done []MinionKey
	for id, m := range s.keys {
		if ok, _ := path.Match(glob, id); !ok {
			continue
		}
		if !f(&m) {
			continue
		}
		m.Updated = time.Now().UTC()
		if err := s.write("minions", m); err != nil {
			return done, err
		}
		s.set(m)
		done = append(done, m)
	}
	sort.Slice(done, func(i, j int) bool { return done[i].ID < done[j].ID })
	return done, nil
}

// Delete removes every record (denied ones too) whose id matches glob and returns their ids. A
// deleted minion that comes back is a new, pending minion.
func (s *KeyStore) Delete(glob string) ([]string, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, pair := range []struct {
		sub string
		m   map[string]MinionKey
	}{{"minions", s.keys}, {"denied", s.denied}} {
		for id := range pair.m {
			if ok, _ := path.Match(glob, id); !ok {
				continue
			}
			if err := os.Remove(filepath.Join(s.dir, pair.sub, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			if pair.sub == "minions" {
				s.unset(id)
			} else {
				delete(pair.m, id)
			}
			seen[id] = true
		}
	}
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

func cleanGroups(gs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, g := range gs {
		g = strings.TrimSpace(g)
		if g == "" || seen[g] || !ValidID(g) {
			continue
		}
		seen[g] = true
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}
