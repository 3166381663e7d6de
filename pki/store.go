package pki

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
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

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)

// ValidID reports whether id is an acceptable minion id (DESIGN.md invariant 11): lower-case
// letters, digits, dots and dashes, at most 63 characters, no "..", so that it is safe as a file
// name everywhere.
func ValidID(id string) bool {
	return idRE.MatchString(id) && !strings.Contains(id, "..")
}

// MinionKey is the key store's record of one minion.
type MinionKey struct {
	ID        string    `json:"id"`
	Key       PublicKey `json:"-"`
	KeyText   string    `json:"key"`
	State     KeyState  `json:"state"`
	Groups    []string  `json:"groups,omitempty"`    // granted by the operator or a token
	Requested []string  `json:"requested,omitempty"` // asked for in the minion's config
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// Finger is the fingerprint of the record's key.
func (m MinionKey) Finger() string { return m.Key.Fingerprint() }

// ErrNoSuchKey is returned for an id the store does not know.
var ErrNoSuchKey = errors.New("no such minion key")

// KeyStore is the master's on-disk store of minion keys: one JSON file per minion under
// dir/minions and one per denied presentation under dir/denied. It is safe for concurrent use;
// the mutex guards the files and the in-memory copy.
type KeyStore struct {
	dir string

	mu     sync.Mutex
	keys   map[string]MinionKey // id -> pending/accepted/rejected record
	denied map[string]MinionKey // id -> last key presented that differed from keys[id]
}

// OpenKeyStore opens (creating if needed) the key store in dir.
func OpenKeyStore(dir string) (*KeyStore, error) {
	s := &KeyStore{dir: dir, keys: map[string]MinionKey{}, denied: map[string]MinionKey{}}
	for _, sub := range []string{"minions", "denied"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("key store: %w", err)
		}
	}
	if err := s.load("minions", s.keys); err != nil {
		return nil, err
	}
	if err := s.load("denied", s.denied); err != nil {
		return nil, err
	}
	return s, nil
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
	return WriteFileAtomic(filepath.Join(s.dir, sub, m.ID+".json"), data, 0o600)
}

// Present records that minion id proved possession of key (the caller has checked the proof)
// and returns the record that now governs it: a new id becomes pending (or accepted, when
// autoAccept is set); a known id with the same key keeps its state; a known id with a different
// key is recorded as denied and the returned record has State StateDenied. Nothing presented
// here can move a key to accepted except autoAccept (DESIGN.md invariant 13).
func (s *KeyStore) Present(id string, key PublicKey, requested []string, autoAccept bool) (MinionKey, error) {
	if !ValidID(id) {
		return MinionKey{}, fmt.Errorf("invalid minion id %q", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UTC()
	if m, ok := s.keys[id]; ok {
		if m.Key.Equal(key) {
			if m.State == StatePending && !equalStrings(m.Requested, requested) {
				m.Requested, m.Updated = cleanGroups(requested), now
				if err := s.write("minions", m); err != nil {
					return MinionKey{}, err
				}
				s.keys[id] = m
			}
			return m, nil
		}
		d := MinionKey{ID: id, Key: key, State: StateDenied, Requested: cleanGroups(requested), Created: now, Updated: now}
		if err := s.write("denied", d); err != nil {
			return MinionKey{}, err
		}
		s.denied[id] = d
		return d, nil
	}
	m := MinionKey{ID: id, Key: key, State: StatePending, Requested: cleanGroups(requested), Created: now, Updated: now}
	if autoAccept {
		m.State, m.Groups = StateAccepted, m.Requested
	}
	if err := s.write("minions", m); err != nil {
		return MinionKey{}, err
	}
	s.keys[id] = m
	return m, nil
}

// Enrol accepts a minion that presented a valid enrolment token, with the token's groups. A
// known id keeps its record unless it is the same key (then its groups become the token's); a
// different key for a known id is denied, token or not.
func (s *KeyStore) Enrol(id string, key PublicKey, groups []string) (MinionKey, error) {
	if !ValidID(id) {
		return MinionKey{}, fmt.Errorf("invalid minion id %q", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UTC()
	m, ok := s.keys[id]
	if ok && !m.Key.Equal(key) {
		d := MinionKey{ID: id, Key: key, State: StateDenied, Created: now, Updated: now}
		if err := s.write("denied", d); err != nil {
			return MinionKey{}, err
		}
		s.denied[id] = d
		return d, nil
	}
	if !ok {
		m = MinionKey{ID: id, Key: key, Created: now}
	}
	m.State, m.Groups, m.Updated = StateAccepted, cleanGroups(groups), now
	if err := s.write("minions", m); err != nil {
		return MinionKey{}, err
	}
	s.keys[id] = m
	return m, nil
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

// Accept moves the pending or rejected keys whose ids match glob to accepted. groups, when not
// nil, replaces the groups the minions asked for. It returns the ids it accepted.
func (s *KeyStore) Accept(glob string, groups []string, includeRejected bool) ([]string, error) {
	return s.transition(glob, func(m *MinionKey) bool {
		if m.State != StatePending && !(includeRejected && m.State == StateRejected) {
			return false
		}
		m.State = StateAccepted
		if groups != nil {
			m.Groups = cleanGroups(groups)
		} else {
			m.Groups = m.Requested
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
	s.mu.Lock()
	defer s.mu.Unlock()
	var done []string
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
		s.keys[id] = m
		done = append(done, id)
	}
	sort.Strings(done)
	return done, nil
}

// Delete removes every record (denied ones too) whose id matches glob and returns their ids. A
// deleted minion that comes back is a new, pending minion.
func (s *KeyStore) Delete(glob string) ([]string, error) {
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
			delete(pair.m, id)
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

func equalStrings(a, b []string) bool {
	a, b = cleanGroups(a), cleanGroups(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
