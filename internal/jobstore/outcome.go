package jobstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"

	bolt "go.etcd.io/bbolt"
)

// Outcome counts the returns of one job.
type Outcome struct {
	Returned  int // minions that returned
	Succeeded int // of which reported success
}

// OutcomeCounter is a Store that counts each job's returns as it records them, so that a job
// list need not read every return. It is optional: without it, callers count Returns.
type OutcomeCounter interface {
	// Outcome returns jid's counts; ok is false when the store has none for it (no return yet,
	// or returns recorded before the store counted them), and the caller counts Returns.
	Outcome(jid string) (o Outcome, ok bool, err error)
}

// returnSucceeded reads the "success" field of a return's data (the wire.Return JSON the
// minion signed); data that does not parse counts as a failure.
func returnSucceeded(data []byte) bool {
	var ret struct {
		Success bool `json:"success"`
	}
	_ = json.Unmarshal(data, &ret)
	return ret.Success
}

// An outcome's record in bOutcomes: the returns counted (4 bytes), the successes among them (4),
// and the bytes of the returns' records (8, outcomeLen; a store of an earlier release has 8-byte
// records without them until migrateOutcomes).
const outcomeLen = 16

// countReturn adds a return of jid, of size bytes as stored, to the job's counts, in AddReturn's
// transaction.
func countReturn(tx *bolt.Tx, jid string, success bool, size int) error {
	b := tx.Bucket(bOutcomes)
	key := []byte(jid)
	var v [outcomeLen]byte
	copy(v[:], b.Get(key))
	binary.BigEndian.PutUint32(v[:4], binary.BigEndian.Uint32(v[:4])+1)
	if success {
		binary.BigEndian.PutUint32(v[4:8], binary.BigEndian.Uint32(v[4:8])+1)
	}
	binary.BigEndian.PutUint64(v[8:], binary.BigEndian.Uint64(v[8:])+uint64(size))
	return b.Put(key, v[:])
}

// returnBytes is the bytes of jid's returns as counted in its outcome record.
func returnBytes(outcomes *bolt.Bucket, jid []byte) int64 {
	v := outcomes.Get(jid)
	if len(v) < outcomeLen {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v[8:]))
}

// outcomesForm is the form of the outcome records this release writes (in bMeta).
var (
	keyOutcomesForm = []byte("outcomes_form")
	outcomesForm    = []byte("2") // 2: with the returns' bytes
)

// migrateOutcomes makes the outcome records of a store of an earlier release whole, once: the
// bytes of every job's returns (and the counts of jobs recorded before there were counts), from
// the returns themselves; a return whose job is gone is deleted (no prune would reach it).
func migrateOutcomes(tx *bolt.Tx) error {
	meta := tx.Bucket(bMeta)
	if string(meta.Get(keyOutcomesForm)) == string(outcomesForm) {
		return nil
	}
	jobs, rets, outcomes := tx.Bucket(bJobs), tx.Bucket(bReturns), tx.Bucket(bOutcomes)
	counts := map[string]*[outcomeLen]byte{}
	var orphans [][]byte
	err := rets.ForEach(func(k, v []byte) error {
		i := bytes.IndexByte(k, 0)
		if i < 0 || jobs.Get(k[:i]) == nil {
			orphans = append(orphans, append([]byte(nil), k...))
			return nil
		}
		jid := string(k[:i])
		c := counts[jid]
		if c == nil {
			c = new([outcomeLen]byte)
			counts[jid] = c
		}
		var r Return
		_ = json.Unmarshal(v, &r)
		binary.BigEndian.PutUint32(c[:4], binary.BigEndian.Uint32(c[:4])+1)
		if returnSucceeded(r.Data) {
			binary.BigEndian.PutUint32(c[4:8], binary.BigEndian.Uint32(c[4:8])+1)
		}
		binary.BigEndian.PutUint64(c[8:], binary.BigEndian.Uint64(c[8:])+uint64(len(k)+len(v)))
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range orphans {
		if err := rets.Delete(k); err != nil {
			return err
		}
	}
	for jid, c := range counts {
		if err := outcomes.Put([]byte(jid), c[:]); err != nil {
			return err
		}
	}
	return meta.Put(keyOutcomesForm, outcomesForm)
}

// Outcome implements OutcomeCounter.
func (s *Bolt) Outcome(jid string) (o Outcome, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bOutcomes).Get([]byte(jid))
		if len(v) < 8 {
			return nil
		}
		ok = true
		o = Outcome{Returned: int(binary.BigEndian.Uint32(v[:4])), Succeeded: int(binary.BigEndian.Uint32(v[4:8]))}
		return nil
	})
	return o, ok, err
}
