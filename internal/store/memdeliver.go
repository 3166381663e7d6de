package store

import (
	"sync"
	"time"
)

// MemDeliveries is Deliveries in memory, for one master. It also spares the master reading and
// decoding the whole job record (minion list included) for every return: with thousands of
// minions that was O(minions) per return, O(minions^2) per job. The zero value is ready.
type MemDeliveries struct {
	mu   sync.Mutex // guards jobs
	jobs map[string]memJob
}

type memJob struct {
	minions   map[string]struct{}
	expires   time.Time
	published time.Time

	// signed is nil once every minion returned; returned and lastResend are by minion.
	signed     []byte
	returned   map[string]struct{}
	lastResend map[string]time.Time
}

// DeliveriesKeep is how long after its expiry a job is still remembered (late returns).
const DeliveriesKeep = time.Hour

// Add implements Deliveries.
func (l *MemDeliveries) Add(jid string, minions []string, expires time.Time, signed []byte) error {
	set := make(map[string]struct{}, len(minions))
	for _, id := range minions {
		set[id] = struct{}{}
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.jobs == nil {
		l.jobs = map[string]memJob{}
	}
	for k, j := range l.jobs {
		if now.After(j.expires.Add(DeliveriesKeep)) {
			delete(l.jobs, k)
		}
	}
	l.jobs[jid] = memJob{minions: set, expires: expires, published: now, signed: signed, returned: map[string]struct{}{}, lastResend: map[string]time.Time{}}
	return nil
}

// Addressed implements Deliveries.
func (l *MemDeliveries) Addressed(jid, minion string) (addressed, known bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j, ok := l.jobs[jid]
	if !ok {
		return false, false, nil
	}
	_, addressed = j.minions[minion]
	return addressed, true, nil
}

// MarkReturned implements Deliveries.
func (l *MemDeliveries) MarkReturned(jid, minion string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	j, ok := l.jobs[jid]
	if !ok || j.returned == nil {
		return nil
	}
	if _, ok := j.minions[minion]; !ok {
		return nil
	}
	j.returned[minion] = struct{}{}
	if len(j.returned) >= len(j.minions) {
		j.signed = nil
	}
	l.jobs[jid] = j
	return nil
}

// Pending implements Deliveries. The grace matters at scale: under load a minion may take
// seconds to receive and return a job, and a job still in flight is not missed; asking for it
// again only adds a republish per minion to the load.
func (l *MemDeliveries) Pending(minion string, now time.Time, grace time.Duration) ([]string, error) {
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
	return out, nil
}

// Resendable implements Deliveries.
func (l *MemDeliveries) Resendable(jid, minion string, now time.Time, interval time.Duration) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j, ok := l.jobs[jid]
	if !ok || j.signed == nil || now.After(j.expires) || now.Sub(j.lastResend[minion]) < interval {
		return nil, nil
	}
	if _, ok := j.minions[minion]; !ok {
		return nil, nil
	}
	if _, done := j.returned[minion]; done {
		return nil, nil
	}
	j.lastResend[minion] = now
	return j.signed, nil
}

// Job implements Deliveries.
func (l *MemDeliveries) Job(jid string) ([]byte, []string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j, ok := l.jobs[jid]
	if !ok || j.signed == nil {
		return nil, nil, nil
	}
	ids := make([]string, 0, len(j.minions))
	for id := range j.minions {
		ids = append(ids, id)
	}
	return j.signed, ids, nil
}
