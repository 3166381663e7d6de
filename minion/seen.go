package minion

import (
	"encoding/json"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
)

// maxSeen bounds the seen-job record. An entry is needed only until its job expires (an expired
// job is refused anyway), so the record stays small; past the bound the oldest-expiring go first.
const maxSeen = 10000

// seenJobs is the on-disk record of the jobs a minion has accepted, so that a replayed job is
// refused, also after a restart (DESIGN.md invariant 2).
type seenJobs struct {
	path string
	mu   sync.Mutex
	jobs map[string]time.Time // jid -> expires_at
}

func openSeen(path string) (*seenJobs, error) {
	s := &seenJobs{path: path, jobs: map[string]time.Time{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &s.jobs); err != nil {
		// A corrupt record must not reopen the door to replays of unexpired jobs: refuse to start.
		return nil, errors.New("seen-jobs record " + path + " is corrupt; remove it only if no job can still be replayed")
	}
	return s, nil
}

// has reports whether jid was seen.
func (s *seenJobs) has(jid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.jobs[jid]
	return ok
}

// add records jid and reports whether it was new. It persists before returning true.
func (s *seenJobs) add(jid string, expires, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.jobs[jid]; ok {
		return false
	}
	for id, exp := range s.jobs {
		if now.After(exp) {
			delete(s.jobs, id)
		}
	}
	for len(s.jobs) >= maxSeen {
		var oldest string
		var oldestT time.Time
		for id, exp := range s.jobs {
			if oldest == "" || exp.Before(oldestT) {
				oldest, oldestT = id, exp
			}
		}
		delete(s.jobs, oldest)
	}
	s.jobs[jid] = expires
	data, _ := json.Marshal(s.jobs)
	if err := atomicfile.Write(s.path, data, 0o600); err != nil {
		delete(s.jobs, jid)
		return false // cannot promise at-most-once: do not run
	}
	return true
}
