package master

import (
	"errors"
	"sync"

	"github.com/brinecm/brine/internal/jobstore"
)

// jobInfos keeps what a return's check needs of a job this master holds no copies of (one
// another master published and this one has not delivered, or one from before a restart): its
// kind and its minions, read from the store once per job, not once per return. Reading the
// job's record for each return cost a decode of all its minion ids, 42 kB and 1,000
// allocations per return at 1,000 minions, so a failover of N minions mid-job cost N x N.
// Jobs are immutable once stored; a read that fails is not kept, so ids a minion makes up
// never take a place.
type jobInfos struct {
	mu    sync.Mutex // guards jobs, order and ids
	jobs  map[string]*jobInfo
	order []string // ids in the order they were added, oldest first
	ids   int      // minion ids held by the jobs read
}

type jobInfo struct {
	ready   chan struct{} // closed once kind, minions and err are set
	kind    string
	minions map[string]struct{}
	err     error
	counted bool // its minions are in jobInfos.ids; guarded by jobInfos.mu
}

// The jobs kept: the live jobs of a fleet are few, but one may name 100,000 minions.
const (
	jobInfoMax    = 64
	jobInfoMaxIDs = 1 << 18 // minion ids of all jobs together (tens of MB), the newest job kept whatever its size
)

var errJobUnread = errors.New("the job could not be read")

// get returns job jid's kind and whether it names minion, reading it with load the first time.
// Concurrent calls for one job wait for one read.
func (c *jobInfos) get(jid, minion string, load func(string) (jobstore.Job, error)) (kind string, addressed bool, err error) {
	c.mu.Lock()
	ji, ok := c.jobs[jid]
	if !ok {
		ji = &jobInfo{ready: make(chan struct{})}
		if c.jobs == nil {
			c.jobs = map[string]*jobInfo{}
		}
		c.jobs[jid] = ji
		c.order = append(c.order, jid)
		c.evict()
	}
	c.mu.Unlock()
	if !ok {
		c.read(jid, ji, load)
	}
	<-ji.ready
	_, addressed = ji.minions[minion]
	return ji.kind, addressed, ji.err
}

// read fills ji from load(jid). Whatever happens, a panic in load included, ji is ready when it
// returns, and not kept unless it was read.
func (c *jobInfos) read(jid string, ji *jobInfo, load func(string) (jobstore.Job, error)) {
	ji.err = errJobUnread
	defer func() {
		close(ji.ready)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.jobs[jid] != ji {
			return // evicted meanwhile
		}
		if ji.err != nil {
			c.drop(jid)
			return
		}
		c.ids += len(ji.minions)
		ji.counted = true
		c.evict()
	}()
	job, err := load(jid)
	ji.minions = make(map[string]struct{}, len(job.Minions))
	for _, id := range job.Minions {
		ji.minions[id] = struct{}{}
	}
	ji.kind, ji.err = job.Kind, err
}

// evict drops the oldest jobs while there are too many, or too many of their minion ids; the
// newest job stays. c.mu is held.
func (c *jobInfos) evict() {
	for len(c.order) > 1 && (len(c.order) > jobInfoMax || c.ids > jobInfoMaxIDs) {
		c.drop(c.order[0])
	}
}

// drop forgets jid. c.mu is held.
func (c *jobInfos) drop(jid string) {
	ji, ok := c.jobs[jid]
	if !ok {
		return
	}
	if ji.counted {
		c.ids -= len(ji.minions)
	}
	delete(c.jobs, jid)
	for i, id := range c.order {
		if id == jid {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}
