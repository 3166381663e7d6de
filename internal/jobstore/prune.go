package jobstore

import (
	"bytes"
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// pruneBatch bounds the jobs one prune transaction deletes: a transaction holds the single
// writer lock, and returns wait behind it.
const pruneBatch = 500

// Prune implements Store. Job ids sort by creation time, so the jobs to delete are the first
// ones in the bucket: it deletes from the front until a job is young enough and the rest fit in
// max. bbolt puts the freed pages on its freelist and reuses them for later writes, so a store
// pruned to a steady size stops growing (TestPruneReusesPages) without a compaction.
func (s *Bolt) Prune(olderThan time.Time, max int) (int, error) {
	total := 0
	for {
		n, more, err := s.pruneBatch(olderThan, max)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// pruneBatch deletes at most pruneBatch jobs; more says whether there may be others to delete.
// The victims are found in a read transaction (counting the jobs walks the bucket's pages), which
// does not hold up the returns being recorded; only the deletes take the writer lock.
func (s *Bolt) pruneBatch(olderThan time.Time, max int) (n int, more bool, err error) {
	var victims [][]byte
	err = s.db.View(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bJobs)
		over := 0
		if max > 0 {
			if count := jobs.Stats().KeyN; count > max {
				over = count - max
			}
		}
		c := jobs.Cursor()
		for k, v := c.First(); k != nil && len(victims) < pruneBatch; k, v = c.Next() {
			if len(victims) >= over {
				if olderThan.IsZero() {
					break
				}
				var j struct {
					Created time.Time `json:"created"`
				}
				if json.Unmarshal(v, &j) == nil && !j.Created.Before(olderThan) {
					break
				}
			}
			victims = append(victims, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil || len(victims) == 0 {
		return 0, false, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		jobs, rets, outcomes := tx.Bucket(bJobs), tx.Bucket(bReturns), tx.Bucket(bOutcomes)
		for _, k := range victims {
			if err := jobs.Delete(k); err != nil {
				return err
			}
			if err := outcomes.Delete(k); err != nil {
				return err
			}
			prefix := append(append([]byte(nil), k...), 0)
			var keys [][]byte
			rc := rets.Cursor()
			for rk, _ := rc.Seek(prefix); rk != nil && bytes.HasPrefix(rk, prefix); rk, _ = rc.Next() {
				keys = append(keys, append([]byte(nil), rk...))
			}
			for _, rk := range keys {
				if err := rets.Delete(rk); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return len(victims), len(victims) == pruneBatch, nil
}
