package jobstore

import (
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

// countReturn adds r to its job's counts, in AddReturn's transaction. r.Data is the return's
// JSON as the minion signed it (wire.Return); only its "success" field is read.
func countReturn(tx *bolt.Tx, r Return) error {
	var ret struct {
		Success bool `json:"success"`
	}
	_ = json.Unmarshal(r.Data, &ret) // unparseable data counts as a failure
	b := tx.Bucket(bOutcomes)
	key := []byte(r.JID)
	var v [8]byte
	if old := b.Get(key); len(old) == 8 {
		copy(v[:], old)
	}
	binary.BigEndian.PutUint32(v[:4], binary.BigEndian.Uint32(v[:4])+1)
	if ret.Success {
		binary.BigEndian.PutUint32(v[4:], binary.BigEndian.Uint32(v[4:])+1)
	}
	return b.Put(key, v[:])
}

// Outcome implements OutcomeCounter.
func (s *Bolt) Outcome(jid string) (o Outcome, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bOutcomes).Get([]byte(jid))
		if len(v) != 8 {
			return nil
		}
		ok = true
		o = Outcome{Returned: int(binary.BigEndian.Uint32(v[:4])), Succeeded: int(binary.BigEndian.Uint32(v[4:]))}
		return nil
	})
	return o, ok, err
}
