package master

import (
	"sync"
	"time"
)

// liveJobs remembers the minion sets of recent jobs, so that checking a return (DESIGN.md
// invariant 6) does not read and decode the whole job record, minion list included, from the
// store: with thousands of minions that was O(minions) per return, O(minions^2) per job.
// A job it does not know (the master restarted, or it expired long ago) is looked up in the
// store as before.
type liveJobs struct {
	mu   sync.Mutex // guards jobs
	jobs map[string]liveJob
}

type liveJob struct {
	minions map[string]struct{}
	expires time.Time
}

// liveJobsKeep is how long after its expiry a job is still remembered (late redeliveries).
const liveJobsKeep = time.Hour

func (l *liveJobs) add(jid string, minions []string, expires time.Time) {
	set := make(map[string]struct{}, len(minions))
	for _, id := range minions {
		set[id] = struct{}{}
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.jobs == nil {
		l.jobs = map[string]liveJob{}
	}
	for k, j := range l.jobs {
		if now.After(j.expires.Add(liveJobsKeep)) {
			delete(l.jobs, k)
		}
	}
	l.jobs[jid] = liveJob{minions: set, expires: expires}
}

// addressed reports whether job jid was addressed to minion; known is false when the job is not
// remembered and the caller must ask the store.
func (l *liveJobs) addressed(jid, minion string) (addressed, known bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j, ok := l.jobs[jid]
	if !ok {
		return false, false
	}
	_, addressed = j.minions[minion]
	return addressed, true
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
