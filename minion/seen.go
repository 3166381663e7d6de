package minion

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/recordlog"
)

// maxSeen bounds the seen-job record. An entry is needed only until its job expires (an expired
// job is refused anyway), so the record stays small; past the bound the oldest-expiring go first.
const maxSeen = 10000

// seenCompactMin is how many records of jobs no longer kept (expired, or past maxSeen) the
// seen log holds at least before it is rewritten; it is rewritten once they also outnumber the
// jobs kept, so the log stays under twice the record plus this many lines. (A variable for
// tests.)
var seenCompactMin = 1024

// The seen-jobs record: <data_dir>/seen.log, one record per job accepted (recordlog), synced
// before the job runs. seen.json is the whole map rewritten per job, as minions before the log
// kept it; it is read once, into the log, and removed.
const (
	seenLog    = "seen.log"
	seenLegacy = "seen.json"
)

// seenJobs is the on-disk record of the jobs a minion has accepted, so that a replayed job is
// refused, also after a restart (DESIGN.md invariant 2).
type seenJobs struct {
	mu   sync.Mutex           // guards the fields below
	log  *recordlog.Log       // the jobs in jobs, and dead others
	jobs map[string]time.Time // jid -> expires_at
	dead int                  // records in log of jobs no longer in jobs
}

// seenRecord is one line of the seen log.
type seenRecord struct {
	JID     string    `json:"jid"`
	Expires time.Time `json:"exp"`
}

// openSeen loads the seen record of the data dir dir. A torn last record (a crash during its
// append, before its sync returned, so its job never ran) is dropped; any other record that
// cannot be read makes it refuse, as does a corrupt seen.json: a lost record would reopen the
// door to replays of unexpired jobs.
func openSeen(dir string) (*seenJobs, error) {
	path := filepath.Join(dir, seenLog)
	log, recs, st, err := recordlog.Open(path)
	if err != nil {
		return nil, err
	}
	corrupt := func() (*seenJobs, error) {
		log.Close()
		return nil, errors.New("seen-jobs record " + path + " is corrupt; remove it only if no job can still be replayed")
	}
	if st.Bad > 0 {
		return corrupt()
	}
	s := &seenJobs{log: log, jobs: make(map[string]time.Time, len(recs))}
	for _, r := range recs {
		var rec seenRecord
		if json.Unmarshal(r.Payload, &rec) != nil || rec.JID == "" {
			return corrupt()
		}
		s.jobs[rec.JID] = rec.Expires
	}
	s.dead = len(recs) - len(s.jobs)

	legacy := filepath.Join(dir, seenLegacy)
	data, err := os.ReadFile(legacy)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err == nil {
		old := map[string]time.Time{}
		if json.Unmarshal(data, &old) != nil {
			log.Close()
			return nil, errors.New("seen-jobs record " + legacy + " is corrupt; remove it only if no job can still be replayed")
		}
		for jid, exp := range old {
			if _, ok := s.jobs[jid]; !ok {
				s.jobs[jid] = exp
			}
		}
		// Into the log first, durably; then the old file goes (a crash between: read again).
		err = s.compact()
		if err == nil {
			err = os.Remove(legacy)
		}
	}
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("seen-jobs record %s: %w", legacy, err)
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
			s.dead++
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
		s.dead++
	}
	s.jobs[jid] = expires
	var err error
	if s.dead >= seenCompactMin && s.dead >= len(s.jobs) {
		err = s.compact()
	} else {
		rec, _ := json.Marshal(seenRecord{JID: jid, Expires: expires})
		if _, err = s.log.Append(rec, true); err != nil {
			// The job does not run. A log the failed append left broken is mended by a
			// rewrite (without this job), so that the next add may succeed.
			delete(s.jobs, jid)
			_ = s.compact()
			return false
		}
	}
	if err != nil {
		delete(s.jobs, jid)
		return false // cannot promise at-most-once: do not run
	}
	return true
}

// compact rewrites the log with the jobs kept (atomicfile: durable when it returns).
func (s *seenJobs) compact() error {
	recs := make([][]byte, 0, len(s.jobs))
	for jid, exp := range s.jobs {
		rec, _ := json.Marshal(seenRecord{JID: jid, Expires: exp})
		recs = append(recs, rec)
	}
	if _, err := s.log.Rewrite(recs); err != nil {
		return err
	}
	s.dead = 0
	return nil
}
