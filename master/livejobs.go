package master

import (
	"crypto/sha256"
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
// master without copies (the job was published by another master, or before this one
// restarted) makes them once from the signed job in the store, split as its publisher split
// them (Master.copiesOfSigned), and keeps them.
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
	set := copyIndex(minions, copies, frames)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(time.Now())
	c.jobs[jid] = &copySet{kind: kind, copies: copies, minions: set, expires: expires, returned: map[string]struct{}{}}
}

// addIfAbsent is add unless copies of jid are kept already; it returns the set kept.
func (c *sealedCopies) addIfAbsent(jid, kind string, minions []string, expires time.Time, copies []sealedJob, frames []jobFrame) *copySet {
	set := copyIndex(minions, copies, frames)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune(time.Now())
	if j, ok := c.jobs[jid]; ok {
		return j
	}
	j := &copySet{kind: kind, copies: copies, minions: set, expires: expires, returned: map[string]struct{}{}}
	c.jobs[jid] = j
	return j
}

// copyIndex maps each of minions to the copy its frame carries.
func copyIndex(minions []string, copies []sealedJob, frames []jobFrame) map[string]int {
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
	return set
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

// forMinion returns the copy of jid for minion: the one kept, or else the copies of signed (the
// signed job from the store, whose delivery to minion the store has just approved) made now by
// split and kept for the other minions of the job.
func (c *sealedCopies) forMinion(jid, minion string, signed []byte, split func(signed []byte) (wire.JobMeta, []sealedJob, []jobFrame, error)) (sealedJob, error) {
	c.mu.Lock()
	if j, ok := c.jobs[jid]; ok {
		if i, ok := j.minions[minion]; ok && i < len(j.copies) {
			sj := j.copies[i]
			c.mu.Unlock()
			return sj, nil
		}
	}
	c.mu.Unlock()
	meta, copies, frames, err := split(signed)
	if err != nil {
		return sealedJob{}, err
	}
	j := c.addIfAbsent(jid, meta.Kind, meta.Minions, meta.ExpiresAt, copies, frames)
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := j.minions[minion]; ok && i < len(j.copies) {
		return j.copies[i], nil
	}
	return sealedJob{}, fmt.Errorf("job %s does not address %s", jid, minion)
}

// addressed returns the kind of job jid and whether it addresses minion, while its copies are
// kept (held false otherwise): the copies name every minion of the job, so a return is checked
// without asking the store.
func (c *sealedCopies) addressed(jid, minion string) (kind string, addressed, held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, ok := c.jobs[jid]
	if !ok {
		return "", false, false
	}
	_, addressed = j.minions[minion]
	return j.kind, addressed, true
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

// copiesOfSigned makes the copies of a signed job from the store as its publisher made them
// (sealJobCopies): the stored job is checked against the master key (the masters of a store
// share one) and names every minion of the job; split into its buckets' copies, each signed
// again and sealed once, each names only its bucket's minions. Sealed whole, every minion of a
// job of thousands received and decoded the list of all of them, as many times as it has
// minions: most of a three-master fleet's CPU in a ping of 3,000 minions.
func (m *Master) copiesOfSigned(signed []byte) (wire.JobMeta, []sealedJob, []jobFrame, error) {
	var meta wire.JobMeta
	content, ok := pki.OpenAttached(m.key.Pub.Sign, signed)
	if !ok {
		return meta, nil, nil, errors.New("the stored job is not signed by the master key")
	}
	metaJSON, bundle, err := wire.UnpackJob(content)
	if err != nil {
		return meta, nil, nil, err
	}
	if err := json.Unmarshal(metaJSON, &meta); err != nil {
		return meta, nil, nil, fmt.Errorf("the stored job's meta: %w", err)
	}
	copies, frames, _, err := m.sealJobCopies(meta, bundle)
	return meta, copies, frames, err
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

// factsCache remembers the last facts stored for each minion, as their SHA-256 (32 bytes, not the
// report's up to 1 MiB: it holds every minion of the fleet), so that the facts a minion sends
// after every apply (usually unchanged) do not cost a store write each.
type factsCache struct {
	mu   sync.Mutex // guards last
	last map[string][sha256.Size]byte
}

// changed records raw as id's facts and reports whether they differ from the last ones.
func (f *factsCache) changed(id string, raw []byte) bool {
	sum := sha256.Sum256(raw)
	f.mu.Lock()
	defer f.mu.Unlock()
	if last, ok := f.last[id]; ok && last == sum {
		return false
	}
	f.put(id, sum)
	return true
}

// set records raw as id's facts as the store holds them (another master stored them).
func (f *factsCache) set(id string, raw []byte) {
	sum := sha256.Sum256(raw)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.put(id, sum)
}

// put records sum for id. f.mu is held.
func (f *factsCache) put(id string, sum [sha256.Size]byte) {
	if f.last == nil {
		f.last = map[string][sha256.Size]byte{}
	}
	f.last[id] = sum
}

// reset forgets every minion's facts.
func (f *factsCache) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = nil
}

func (f *factsCache) forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.last, id)
}
