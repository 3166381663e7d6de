package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/pki"
)

// Files is the embedded store of one master, in its data dir: keys and tokens as JSON files
// (pki.KeyStore, pki.TokenStore), jobs, returns and facts in one bbolt file, attested values as
// JSON files, drift checks in one JSON file; deliveries and presence live in memory (one master has nobody to share them
// with, and a restarted master publishes anew).
type Files struct {
	dir      string
	keys     fileKeys
	tokens   *pki.TokenStore
	jobs     *jobstore.Bolt
	deliver  *MemDeliveries
	attested *fileAttested
	presence *memPresence
	rounds   *memRounds
	drifts   *fileDrifts
}

// OpenFiles opens (creating if needed) the files store in dataDir, for the master whose key is
// master.
func OpenFiles(dataDir string, master pki.PublicKey) (*Files, error) {
	keys, err := pki.OpenKeyStore(filepath.Join(dataDir, "pki"))
	if err != nil {
		return nil, err
	}
	tokens, err := pki.OpenTokenStore(filepath.Join(dataDir, "pki", "tokens"), master)
	if err != nil {
		return nil, err
	}
	attested, err := openFileAttested(filepath.Join(dataDir, "attested"))
	if err != nil {
		return nil, err
	}
	jobs, err := jobstore.OpenBolt(filepath.Join(dataDir, "master.db"))
	if err != nil {
		return nil, err
	}
	return &Files{
		dir: dataDir, keys: fileKeys{KeyStore: keys, ts: tokens}, tokens: tokens, jobs: jobs,
		deliver: &MemDeliveries{}, attested: attested, presence: &memPresence{}, rounds: &memRounds{},
		drifts: openFileDrifts(filepath.Join(dataDir, "drift.json")),
	}, nil
}

// Keys implements Store.
func (f *Files) Keys() Keys { return f.keys }

// Tokens implements Store.
func (f *Files) Tokens() Tokens { return f.tokens }

// Jobs implements Store.
func (f *Files) Jobs() jobstore.Store { return f.jobs }

// Deliveries implements Store.
func (f *Files) Deliveries() Deliveries { return f.deliver }

// Attested implements Store.
func (f *Files) Attested() Attested { return f.attested }

// Presence implements Store.
func (f *Files) Presence() Presence { return f.presence }

// Rounds implements Store.
func (f *Files) Rounds() Rounds { return f.rounds }

// Drifts implements Store.
func (f *Files) Drifts() Drifts { return f.drifts }

// ClaimIdentity implements Store. The files store belongs to one master, whose key lives beside
// it in the data dir: there is no other master to disagree with, and an operator who replaces
// master.key deliberately is not refused (as before there was a store interface).
func (f *Files) ClaimIdentity(finger string) error { return nil }

// Close implements Store.
func (f *Files) Close() error { return f.jobs.Close() }

// fileKeys is pki.KeyStore with its token store, so that Redeem has the Keys signature.
type fileKeys struct {
	*pki.KeyStore
	ts *pki.TokenStore
}

func (k fileKeys) Redeem(p pki.Presentation, tok string, now time.Time) (pki.MinionKey, bool, error) {
	return k.KeyStore.Redeem(k.ts, p, tok, now)
}

// fileAttested keeps one JSON file per minion in dir, with a copy in memory.
type fileAttested struct {
	dir string
	mu  sync.Mutex // guards all and the files
	all map[string][]byte
}

func openFileAttested(dir string) (*fileAttested, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("attestation dir: %w", err)
	}
	s := &fileAttested{dir: dir, all: map[string][]byte{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !pki.ValidID(id) {
			continue
		}
		if data, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			s.all[id] = data
		}
	}
	return s, nil
}

func (s *fileAttested) Get(id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all[id], nil
}

func (s *fileAttested) Update(id string, fn func(old []byte) ([]byte, error)) error {
	if !pki.ValidID(id) {
		return fmt.Errorf("invalid minion id %q", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := fn(s.all[id])
	if err != nil || data == nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.dir, id+".json"), data, 0o600); err != nil {
		return fmt.Errorf("save attestation of %s: %w", id, err)
	}
	s.all[id] = data
	return nil
}

func (s *fileAttested) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.all, id)
	if !pki.ValidID(id) {
		return nil
	}
	if err := os.Remove(filepath.Join(s.dir, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// memPresence keeps the leases of one master in memory.
type memPresence struct {
	mu     sync.Mutex // guards leases
	leases map[string]Lease
}

func (p *memPresence) SetPresence(minion, master string, until time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leases == nil {
		p.leases = map[string]Lease{}
	}
	p.leases[minion] = Lease{Master: master, Until: until.UTC()}
	return nil
}

func (p *memPresence) RenewPresence(master string, minions []string, until, now time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leases == nil {
		p.leases = map[string]Lease{}
	}
	for _, id := range minions {
		if l, ok := p.leases[id]; ok && l.Master != master && l.Until.After(now) {
			continue
		}
		p.leases[id] = Lease{Master: master, Until: until.UTC()}
	}
	return nil
}

func (p *memPresence) Presence(now time.Time) (map[string]Lease, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]Lease{}
	for id, l := range p.leases {
		if l.Until.After(now) {
			out[id] = l
		} else {
			delete(p.leases, id)
		}
	}
	return out, nil
}

// memRounds keeps the schedule rounds of one master in memory: a restarted master starts its
// schedules afresh, as it always did.
type memRounds struct {
	mu     sync.Mutex // guards rounds
	rounds map[string]*memRound
}

type memRound struct {
	Round
	claimed, due time.Time
}

func (rs *memRounds) ClaimRound(name, master string, every, stale time.Duration) (Round, bool, time.Duration, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.rounds == nil {
		rs.rounds = map[string]*memRound{}
	}
	now := time.Now()
	r, ok := rs.rounds[name]
	if !ok {
		r = &memRound{}
		rs.rounds[name] = r
	} else if !(!now.Before(r.due) && (r.Done || !now.Before(r.claimed.Add(stale)))) {
		wait := time.Duration(0)
		if r.Done {
			wait = max(r.due.Sub(now), 0)
		}
		return r.Round, false, wait, nil
	}
	r.N++
	r.Master, r.Done, r.claimed, r.due = master, false, now, now.Add(every)
	return r.Round, true, 0, nil
}

func (rs *memRounds) FinishRound(name string, n int64, every time.Duration) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r, ok := rs.rounds[name]; ok && r.N == n {
		r.Done, r.due = true, time.Now().Add(every)
	}
	return nil
}

func (rs *memRounds) LastRound(name string) (Round, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r, ok := rs.rounds[name]; ok {
		return r.Round, nil
	}
	return Round{}, nil
}
