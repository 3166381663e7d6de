package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// sealedCopies keeps the sealed copies of the jobs this master published or delivered, so that
// a resend only wraps a copy's job key again for the minion's current session key: nothing is
// signed or sealed again. What is owed to whom, and the signed job itself, are in the store
// (Master.deliver), shared by the masters of a fleet; each master keeps its own copies. A
// master without a copy (the job was published by another master, or before this one
// restarted) seals the signed job from the store once under a fresh job key and keeps that.
type sealedCopies struct {
	mu   sync.Mutex // guards jobs
	jobs map[string]*copySet
}

type copySet struct {
	kind     string // the job's kind (wire.Job*)
	copies   []sealedJob
	minions  map[string]int // minion -> the copy it is sent
	expires  time.Time
	returned map[string]struct{}
}

// add keeps the copies of job jid; frames say which minion is sent which copy.
func (c *sealedCopies) add(jid, kind string, minions []string, expires time.Time, copies []sealedJob, frames []jobFrame) {
	set := make(map[string]int, len(minions))
	for _, id := range minions {
		set[id] = 0
	}
	if len(copies) > 1 {
		for _, f := range frames {
			for _, id := range f.minions {
				set[id] = f.copy
			}
		}
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(now)
	c.jobs[jid] = &copySet{kind: kind, copies: copies, minions: set, expires: expires, returned: map[string]struct{}{}}
}

// prune drops the copies of expired jobs (never sent again: do not hold their bundles).
func (c *sealedCopies) prune(now time.Time) {
	if c.jobs == nil {
		c.jobs = map[string]*copySet{}
	}
	for k, j := range c.jobs {
		if now.After(j.expires) {
			delete(c.jobs, k)
		}
	}
}

// forMinion returns the copy of jid for minion: the one kept, or else a copy of signed (the
// signed job from the store, whose delivery to minion the store has just approved) sealed now
// and kept for the other minions of the job.
func (c *sealedCopies) forMinion(jid, minion string, signed []byte, master pki.PublicKey) (sealedJob, error) {
	c.mu.Lock()
	if j, ok := c.jobs[jid]; ok {
		if i, ok := j.minions[minion]; ok && i < len(j.copies) {
			sj := j.copies[i]
			c.mu.Unlock()
			return sj, nil
		}
	}
	c.mu.Unlock()
	sj, meta, _, err := sealSigned(signed, master)
	if err != nil {
		return sealedJob{}, err
	}
	c.addSigned(jid, meta, sj)
	return sj, nil
}

// addSigned keeps sj, the one copy of the signed job of meta, unless a copy is kept already.
func (c *sealedCopies) addSigned(jid string, meta wire.JobMeta, sj sealedJob) {
	set := make(map[string]int, len(meta.Minions))
	for _, id := range meta.Minions {
		set[id] = 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(time.Now())
	if _, ok := c.jobs[jid]; ok {
		return
	}
	c.jobs[jid] = &copySet{kind: meta.Kind, copies: []sealedJob{sj}, minions: set, expires: meta.ExpiresAt, returned: map[string]struct{}{}}
}

// kindOf returns the kind of job jid while its copies are kept.
func (c *sealedCopies) kindOf(jid string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if j, ok := c.jobs[jid]; ok {
		return j.kind, true
	}
	return "", false
}

// markReturned records that minion returned jid (here or on another master); the copies of a
// job every minion returned are dropped.
func (c *sealedCopies) markReturned(jid, minion string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, ok := c.jobs[jid]
	if !ok {
		return
	}
	if _, ok := j.minions[minion]; !ok {
		return
	}
	j.returned[minion] = struct{}{}
	if len(j.returned) >= len(j.minions) {
		delete(c.jobs, jid)
	}
}

// sealSigned seals a signed job from the store once under a fresh job key, and returns its
// meta and the length of its bundle. master is the key that signed it (the masters of a store
// share one).
func sealSigned(signed []byte, master pki.PublicKey) (sealedJob, wire.JobMeta, int, error) {
	var meta wire.JobMeta
	content, ok := pki.OpenAttached(master.Sign, signed)
	if !ok {
		return sealedJob{}, meta, 0, errors.New("the stored job is not signed by the master key")
	}
	metaJSON, bundle, err := wire.UnpackJob(content)
	if err != nil {
		return sealedJob{}, meta, 0, err
	}
	if err := json.Unmarshal(metaJSON, &meta); err != nil {
		return sealedJob{}, meta, 0, fmt.Errorf("the stored job's meta: %w", err)
	}
	key := pki.NewJobKey()
	return sealedJob{key: key, payload: key.Seal(signed)}, meta, len(bundle), nil
}

// maxHeartbeatRate is the heartbeat requests per second a master asks its fleet to stay under.
// Each is an ed25519 verification and a signature (about 0.2 ms of CPU here): at 5,000 minions
// and the default 5 s, heartbeats alone took 40% of a 2-core master.
const maxHeartbeatRate = 200

// requestEvery is the least interval between one minion's heartbeat requests for a fleet of n
// connected minions: 0 (the minions' own, 5 s by default) up to 1,000 minions, then n/200 s.
func requestEvery(n int) time.Duration {
	if n <= 5*maxHeartbeatRate {
		return 0
	}
	return time.Duration(n) * time.Second / maxHeartbeatRate
}

// factsCache remembers the last facts stored for each minion, so that the facts a minion sends
// after every apply (usually unchanged) do not cost a store write each.
type factsCache struct {
	mu   sync.Mutex // guards last
	last map[string]string
}

// changed records raw as id's facts and reports whether they differ from the last ones.
func (f *factsCache) changed(id string, raw []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		f.last = map[string]string{}
	}
	if f.last[id] == string(raw) {
		return false
	}
	f.last[id] = string(raw)
	return true
}

func (f *factsCache) forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.last, id)
}
