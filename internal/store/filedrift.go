package store

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/pki"
)

// fileDrifts keeps every minion's last drift check in one JSON file (drift.json in the data dir),
// with a copy in memory; a round of checks is one write of the file.
type fileDrifts struct {
	path string

	mu  sync.Mutex // guards all and the file
	all map[string]DriftCheck
}

// fileDrift is one entry of the file.
type fileDrift struct {
	Checked time.Time       `json:"checked"`
	Record  json.RawMessage `json:"record"`
}

// openFileDrifts reads path. A file that cannot be read or parsed counts as no checks: the next
// round of each drift schedule records them again (and replaces the file).
func openFileDrifts(path string) *fileDrifts {
	s := &fileDrifts{path: path, all: map[string]DriftCheck{}}
	data, err := os.ReadFile(path)
	if err != nil {
		return s
	}
	var entries map[string]json.RawMessage
	if json.Unmarshal(data, &entries) != nil {
		return s
	}
	for id, raw := range entries {
		var e fileDrift
		if !pki.ValidID(id) || json.Unmarshal(raw, &e) != nil {
			continue
		}
		if len(e.Record) == 0 {
			// Written before the store kept drift (the master's record by id, which has its own
			// "checked"): the entry is the record.
			e.Record = raw
		}
		s.all[id] = DriftCheck{Checked: e.Checked, Record: e.Record}
	}
	return s
}

// checkDrifts validates what PutDrifts is given, in both implementations.
func checkDrifts(checks map[string]DriftCheck) error {
	for id, c := range checks {
		if !pki.ValidID(id) {
			return fmt.Errorf("drift check of invalid minion id %q", id)
		}
		if !json.Valid(c.Record) {
			return fmt.Errorf("drift check of %s: the record is not JSON", id)
		}
	}
	return nil
}

func (s *fileDrifts) PutDrifts(checks map[string]DriftCheck) error {
	if err := checkDrifts(checks); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]DriftCheck, len(s.all)+len(checks))
	for id, c := range s.all {
		next[id] = c
	}
	changed := false
	for id, c := range checks {
		if old, ok := next[id]; ok && old.Checked.After(c.Checked) {
			continue
		}
		next[id] = DriftCheck{Checked: c.Checked, Record: append([]byte(nil), c.Record...)}
		changed = true
	}
	if !changed {
		return nil
	}
	if err := s.saveLocked(next); err != nil {
		return err
	}
	s.all = next
	return nil
}

func (s *fileDrifts) Drifts(minions []string) (map[string]DriftCheck, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]DriftCheck{}
	for _, id := range minions {
		if c, ok := s.all[id]; ok {
			out[id] = c
		}
	}
	return out, nil
}

func (s *fileDrifts) DeleteDrift(minion string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.all[minion]; !ok {
		return nil
	}
	next := make(map[string]DriftCheck, len(s.all))
	for id, c := range s.all {
		if id != minion {
			next[id] = c
		}
	}
	if err := s.saveLocked(next); err != nil {
		return err
	}
	s.all = next
	return nil
}

// saveLocked replaces the file by all.
func (s *fileDrifts) saveLocked(all map[string]DriftCheck) error {
	entries := make(map[string]fileDrift, len(all))
	for id, c := range all {
		entries[id] = fileDrift{Checked: c.Checked, Record: c.Record}
	}
	data, err := json.Marshal(entries)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.path, data, 0o600); err != nil {
		return fmt.Errorf("save drift checks: %w", err)
	}
	return nil
}
