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
// max and in maxBytes. bbolt puts the freed pages on its freelist and reuses them for later writes, so a store
// pruned to a steady size stops growing (TestPruneReusesPages) without a compaction.
func (s *Bolt) Prune(olderThan time.Time, max int, maxBytes int64) (int, error) {
	total := 0
	for {
		n, more, err := s.pruneBatch(olderThan, max, maxBytes)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// pruneBatch deletes at most pruneBatch jobs; more says whether there may be others to delete.
// The victims are found in a read transaction (counting the jobs walks the bucket's pages), which
// does not hold up the returns being recorded; only the deletes take the writer lock.
func (s *Bolt) pruneBatch(olderThan time.Time, max int, maxBytes int64) (n int, more bool, err error) {
	var victims [][]byte
	err = s.db.View(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bJobs)
		over := 0
		if max > 0 {
			if count := jobs.Stats().KeyN; count > max {
				over = count - max
			}
		}
		if maxBytes > 0 {
			over = overBytes(tx, maxBytes, over)
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

// jobBytes is the bytes of one job in the history: its record and its returns' records.
func jobBytes(outcomes *bolt.Bucket, k, v []byte) int64 {
	return int64(len(k)+len(v)) + returnBytes(outcomes, k)
}

// overBytes returns how many of the oldest jobs must go for the history to fit in maxBytes, or
// least if more. It reads every job's size (one walk of the jobs and one lookup each: about
// 0.1 s for 100,000 jobs), so that the count needs no record of its own that every return's
// transaction would update.
func overBytes(tx *bolt.Tx, maxBytes int64, least int) int {
	outcomes := tx.Bucket(bOutcomes)
	var sizes []int64
	var total int64
	c := tx.Bucket(bJobs).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		n := jobBytes(outcomes, k, v)
		sizes = append(sizes, n)
		total += n
	}
	over := 0
	for over < len(sizes) && total > maxBytes {
		total -= sizes[over]
		over++
	}
	return max(over, least)
}

// HistoryBytes implements Store.
func (s *Bolt) HistoryBytes() (int64, error) {
	var total int64
	err := s.db.View(func(tx *bolt.Tx) error {
		outcomes := tx.Bucket(bOutcomes)
		return tx.Bucket(bJobs).ForEach(func(k, v []byte) error {
			total += jobBytes(outcomes, k, v)
			return nil
		})
	})
	return total, err
}
