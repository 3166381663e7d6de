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
	minions   map[string]struct{}
	expires   time.Time
	published time.Time

	// For redelivery to minions that missed the job: its signed content (nil once every minion
	// returned), who returned, and when it was last published again for whom.
	signed     []byte
	returned   map[string]struct{}
	lastResend map[string]time.Time
}

// liveJobsKeep is how long after its expiry a job is still remembered (late redeliveries).
const liveJobsKeep = time.Hour

func (l *liveJobs) add(jid string, minions []string, expires time.Time, signed []byte) {
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
	l.jobs[jid] = liveJob{minions: set, expires: expires, published: now, signed: signed, returned: map[string]struct{}{}, lastResend: map[string]time.Time{}}
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

// markReturned records that minion returned jid; a job everyone returned is not kept for
// redelivery any more.
func (l *liveJobs) markReturned(jid, minion string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j, ok := l.jobs[jid]
	if !ok || j.returned == nil {
		return
	}
	j.returned[minion] = struct{}{}
	if len(j.returned) >= len(j.minions) {
		j.signed = nil
	}
	l.jobs[jid] = j
}

// pending returns the unexpired jobs addressed to minion that it has not returned and that were
// published at least grace ago. The grace matters at scale: under load a minion may take
// seconds to receive and return a job, and a job still in flight is not missed; asking for it
// again only adds a republish per minion to the load (thousands of them at 5,000 minions).
func (l *liveJobs) pending(minion string, now time.Time, grace time.Duration) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for jid, j := range l.jobs {
		if j.signed == nil || now.After(j.expires) || now.Sub(j.published) < grace {
			continue
		}
		if _, ok := j.minions[minion]; !ok {
			continue
		}
		if _, done := j.returned[minion]; !done {
			out = append(out, jid)
		}
	}
	return out
}

// resendable returns the signed content of jid for minion if it is pending for it and was not
// published again for it within the last interval.
func (l *liveJobs) resendable(jid, minion string, now time.Time, interval time.Duration) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	j, ok := l.jobs[jid]
	if !ok || j.signed == nil || now.After(j.expires) || now.Sub(j.lastResend[minion]) < interval {
		return nil
	}
	if _, ok := j.minions[minion]; !ok {
		return nil
	}
	if _, done := j.returned[minion]; done {
		return nil
	}
	j.lastResend[minion] = now
	return j.signed
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
