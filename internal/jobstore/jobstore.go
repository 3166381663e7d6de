// Package jobstore keeps the master's job history, the returns of every job and the last-known
// facts of every minion. The Store interface is what the master uses; Bolt is the embedded
// implementation (one bbolt file, fsynced on every write, so it survives kill -9). A shared
// PostgreSQL store for several masters can implement the same interface later.
package jobstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Job is the record of one published job.
type Job struct {
	JID       string    `json:"jid"`
	Kind      string    `json:"kind"`
	Target    string    `json:"target"`
	Minions   []string  `json:"minions"` // the expected set, computed when it was published
	DryRun    bool      `json:"dry_run,omitempty"`
	Digest    string    `json:"bundle_digest,omitempty"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	Phase     int       `json:"phase,omitempty"` // >0 for the later phases of a peers() convergence
	ParentJID string    `json:"parent_jid,omitempty"`
	// Bundle names what was sent: the bundle's directory for apply, the bundle set of a converge.
	Bundle string `json:"bundle,omitempty"`
	// StartedBy says who started the job: "uid N" (the control socket's peer) or "schedule NAME".
	StartedBy string `json:"started_by,omitempty"`
}

// Return is one minion's result for one job, as signed by the minion.
type Return struct {
	JID      string    `json:"jid"`
	Minion   string    `json:"minion"`
	Data     []byte    `json:"data"` // the wire.Return JSON the minion signed
	Sig      []byte    `json:"sig"`
	Received time.Time `json:"received"`
}

// ErrNotFound is returned for an unknown job id.
var ErrNotFound = errors.New("job not found")

// Store is the master's persistent state besides keys. Methods are safe for concurrent use.
type Store interface {
	// PutJob records a job before it is published.
	PutJob(j Job) error
	// AddReturn records r unless a return of the same (job, minion) is already recorded; it
	// reports whether it recorded it. A return of a job that is not recorded (never, or pruned)
	// is not stored: ErrNotFound. Its bytes count in the history's (HistoryBytes) in the same
	// transaction.
	AddReturn(r Return) (bool, error)
	// Job returns the job jid, or ErrNotFound.
	Job(jid string) (Job, error)
	// Returns returns the returns of jid, by minion id.
	Returns(jid string) ([]Return, error)
	// ReturnsOf returns the returns of jid of the given minions that are recorded, by minion id.
	ReturnsOf(jid string, minions []string) ([]Return, error)
	// Jobs returns at most limit jobs, newest first.
	Jobs(limit int) ([]Job, error)
	// PutFacts stores the last facts a minion reported (JSON).
	PutFacts(id string, facts []byte) error
	// AllFacts returns every minion's last facts.
	AllFacts() (map[string][]byte, error)
	// DeleteFacts forgets a minion's facts (its key was deleted).
	DeleteFacts(id string) error
	// Prune deletes, with their returns, the jobs created before olderThan (zero: no age
	// limit), the oldest jobs beyond the newest max (0: no count limit), and the oldest jobs
	// while the history holds more than maxBytes (0: no byte limit; see HistoryBytes); it
	// reports how many jobs it deleted. It works in bounded transactions, so writers are not
	// held up for long.
	Prune(olderThan time.Time, max int, maxBytes int64) (int, error)
	// HistoryBytes returns the bytes of the job history as Prune counts them against its
	// maxBytes: the stored records of every job and of every return (keys and values), counted
	// as they are written.
	HistoryBytes() (int64, error)
	// Close releases the store.
	Close() error
}

var (
	bJobs    = []byte("jobs")
	bReturns = []byte("returns")
	bFacts   = []byte("facts")
	// bOutcomes counts each job's returns and their bytes as they are recorded (outcome.go).
	bOutcomes = []byte("outcomes")
	// bMeta holds the store's own records: the version of the outcomes' form (outcome.go).
	bMeta = []byte("meta")
)

// Bolt is a Store in one bbolt file.
type Bolt struct {
	db    *bolt.DB
	group *groupCommit // returns and facts, which thousands of minions send at once
}

// Commits returns how many group commits (of returns and facts) the store has made.
func (s *Bolt) Commits() int { return int(s.group.commits.Load()) }

// OpenBolt opens (creating if needed) the store at path.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("job store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bJobs, bReturns, bFacts, bOutcomes, bMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return migrateOutcomes(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("job store %s: %w", path, err)
	}
	return &Bolt{db: db, group: newGroupCommit(db)}, nil
}

// PutJob implements Store.
func (s *Bolt) PutJob(j Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bJobs).Put([]byte(j.JID), data) })
}

// AddReturn implements Store. Returns are keyed jid \x00 minion, so the check and the write
// happen in one transaction and a (job, minion) is recorded once however often it is delivered.
// The returns of a job arrive together from thousands of minions: they are group-committed,
// many to a transaction (one fsync), and the record is encoded before, outside the writer.
func (s *Bolt) AddReturn(r Return) (bool, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	key := returnKey(r.JID, r.Minion)
	success := returnSucceeded(r.Data)
	added, known := false, false
	err = s.group.write(func(tx *bolt.Tx) error {
		added = false
		// A return without its job would be kept past every prune, which walks the jobs.
		if known = tx.Bucket(bJobs).Get([]byte(r.JID)) != nil; !known {
			return nil
		}
		b := tx.Bucket(bReturns)
		if b.Get(key) != nil {
			return nil
		}
		if err := b.Put(key, data); err != nil {
			return err
		}
		added = true
		return countReturn(tx, r.JID, success, len(key)+len(data))
	})
	if err == nil && !known {
		err = ErrNotFound
	}
	return added, err
}

// returnKey is the key of the return of minion for jid in the returns bucket.
func returnKey(jid, minion string) []byte {
	key := make([]byte, 0, len(jid)+1+len(minion))
	key = append(key, jid...)
	key = append(key, 0)
	return append(key, minion...)
}

// Job implements Store.
func (s *Bolt) Job(jid string) (Job, error) {
	var j Job
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bJobs).Get([]byte(jid))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &j)
	})
	return j, err
}

// Returns implements Store.
func (s *Bolt) Returns(jid string) ([]Return, error) {
	var out []Return
	prefix := []byte(jid + "\x00")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bReturns).Cursor()
		for k, v := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			var r Return
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// ReturnsOf implements Store: one lookup per minion, not a scan of the job's returns.
func (s *Bolt) ReturnsOf(jid string, minions []string) ([]Return, error) {
	ids := slices.Clone(minions)
	slices.Sort(ids)
	var out []Return
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bReturns)
		for i, id := range ids {
			if i > 0 && id == ids[i-1] {
				continue
			}
			v := b.Get([]byte(jid + "\x00" + id))
			if v == nil {
				continue
			}
			var r Return
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Jobs implements Store. Job ids sort by time, so the newest are last in the bucket.
func (s *Bolt) Jobs(limit int) ([]Job, error) {
	var out []Job
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bJobs).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var j Job
			if err := json.Unmarshal(v, &j); err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	return out, err
}

// PutFacts implements Store.
func (s *Bolt) PutFacts(id string, facts []byte) error {
	return s.group.write(func(tx *bolt.Tx) error { return tx.Bucket(bFacts).Put([]byte(id), facts) })
}

// AllFacts implements Store.
func (s *Bolt) AllFacts() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bFacts).ForEach(func(k, v []byte) error {
			out[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	return out, err
}

// DeleteFacts implements Store.
func (s *Bolt) DeleteFacts(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bFacts).Delete([]byte(id)) })
}

// Close implements Store. The writes already queued are committed first.
func (s *Bolt) Close() error {
	s.group.close()
	return s.db.Close()
}
