package master

import (
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
	mu    sync.Mutex // guards jobs and order
	jobs  map[string]*jobInfo
	order []string // ids in the order they were added, oldest first
}

type jobInfo struct {
	ready   chan struct{} // closed once kind, minions and err are set
	kind    string
	minions map[string]struct{}
	err     error
}

// jobInfoMax bounds the jobs kept: the live jobs of a fleet are few.
const jobInfoMax = 64

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
		for len(c.order) > jobInfoMax {
			delete(c.jobs, c.order[0])
			c.order = c.order[1:]
		}
	}
	c.mu.Unlock()
	if !ok {
		job, err := load(jid)
		ji.kind, ji.err = job.Kind, err
		ji.minions = make(map[string]struct{}, len(job.Minions))
		for _, id := range job.Minions {
			ji.minions[id] = struct{}{}
		}
		close(ji.ready)
		if err != nil {
			c.forget(jid, ji)
		}
	}
	<-ji.ready
	_, addressed = ji.minions[minion]
	return ji.kind, addressed, ji.err
}

// forget drops jid's entry if it is still ji.
func (c *jobInfos) forget(jid string, ji *jobInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jobs[jid] != ji {
		return
	}
	delete(c.jobs, jid)
	for i, id := range c.order {
		if id == jid {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}
