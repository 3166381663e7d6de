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

// returnSucceeded reads the "success" field of a return's data (the wire.Return JSON the
// minion signed); data that does not parse counts as a failure.
func returnSucceeded(data []byte) bool {
	var ret struct {
		Success bool `json:"success"`
	}
	_ = json.Unmarshal(data, &ret)
	return ret.Success
}

// countReturn adds a return of jid to the job's counts, in AddReturn's transaction.
func countReturn(tx *bolt.Tx, jid string, success bool) error {
	b := tx.Bucket(bOutcomes)
	key := []byte(jid)
	var v [8]byte
	if old := b.Get(key); len(old) == 8 {
		copy(v[:], old)
	}
	binary.BigEndian.PutUint32(v[:4], binary.BigEndian.Uint32(v[:4])+1)
	if success {
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
