package master

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// returnRig is a master (not started: no sockets) with accepted minions in session, and the
// sealed return requests of those minions for jobs published to all of them, as the minions
// send them: what handle gets from the ROUTER for each return.
type returnRig struct {
	m       *Master
	minions []rigMinion
	jids    []string
}

type rigMinion struct {
	id  string
	kp  *pki.KeyPair
	sid []byte
	sk  *pki.SessionKey
	seq uint64
}

// newReturnRig makes a master in dir with n accepted minions in session.
func newReturnRig(tb testing.TB, dir string, n int) *returnRig {
	tb.Helper()
	m, err := New(Config{DataDir: dir}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	r := &returnRig{m: m}
	ps := make([]pki.Presentation, n)
	for i := range n {
		kp, err := pki.GenerateKeyPair()
		if err != nil {
			tb.Fatal(err)
		}
		id := fmt.Sprintf("m%05d", i)
		ps[i] = pki.Presentation{ID: id, Key: kp.Pub}
		mn := rigMinion{id: id, kp: kp, sid: pki.RandomBytes(wire.SessionIDLen), sk: pki.NewSessionKey()}
		sid := hex.EncodeToString(mn.sid)
		m.sessions[sid] = &session{id: sid, minion: id, key: kp.Pub, sk: mn.sk, gen: m.keyGen}
		m.byMinion[id] = sid
		r.minions = append(r.minions, mn)
	}
	m.keys.SetLimits(pki.PendingLimits{Max: n, PerSource: n})
	_, errs := m.keys.PresentAll(ps, true, nil) // accepted, in one group commit
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
	return r
}

// publish records a ping job addressed to every minion, as publishJob does.
func (r *returnRig) publish(tb testing.TB) string {
	tb.Helper()
	ids := make([]string, len(r.minions))
	for i, mn := range r.minions {
		ids[i] = mn.id
	}
	jid := NewJID()
	now := time.Now().UTC()
	if err := r.m.store.PutJob(jobstore.Job{JID: jid, Kind: wire.JobPing, Target: "*", Minions: ids, Created: now, Expires: now.Add(time.Hour)}); err != nil {
		tb.Fatal(err)
	}
	if err := r.m.deliver.Add(jid, ids, now.Add(time.Hour), []byte("signed")); err != nil {
		tb.Fatal(err)
	}
	r.jids = append(r.jids, jid)
	return jid
}

// returnFrame is minion i's sealed request carrying its signed ping return for jid, as the
// minion's outbox and session make it.
func (r *returnRig) returnFrame(i int, jid string) []byte {
	mn := &r.minions[i]
	now := time.Now().UTC()
	data, _ := json.Marshal(wire.Return{JID: jid, Minion: mn.id, Kind: wire.JobPing, Success: true, Started: now, Finished: now})
	body, _ := json.Marshal(wire.SignedReturn{Data: data, Sig: mn.kp.Sign(wire.DomainReturn, data)})
	mn.seq++
	req, _ := json.Marshal(wire.Request{Seq: mn.seq, Kind: wire.KindReturn, Body: body})
	return wire.SessionFrame(wire.TRequest, mn.sid, mn.sk.ID, mn.sk.SealTagged(wire.DomainRequest, req))
}

// frames publishes jobs until there are n returns to make, and returns their frames, job by
// job, each job's in the order of the minions.
func (r *returnRig) frames(tb testing.TB, n int) [][]byte {
	out := make([][]byte, 0, n)
	for len(out) < n {
		jid := r.publish(tb)
		for i := range r.minions {
			if len(out) == n {
				break
			}
			out = append(out, r.returnFrame(i, jid))
		}
	}
	return out
}

// serve hands frames to workers goroutines, as the master's request workers take them from the
// ROUTER, and fails on the first request that gets no sealed reply. Frame k is minion k % n's
// (n minions), and each minion's frames go to one worker, in order: the master refuses a
// request whose sequence number is not above the last it served for that minion.
func (r *returnRig) serve(tb testing.TB, frames [][]byte, workers int) {
	var wg sync.WaitGroup
	var failed atomic.Value
	remote := netip.MustParseAddr("127.0.0.1")
	n := len(r.minions)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range frames {
				if k%n%workers != w {
					continue
				}
				reply, authed := r.m.handle(nil, "bench", remote, frames[k])
				if reply == nil || !authed {
					failed.CompareAndSwap(nil, fmt.Sprintf("request %d: no sealed reply", k))
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		tb.Fatal(f)
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReturn is the master's work per return, from the sealed request frame to the sealed
// reply (decode, session, key state, sequence, the return's signature, addressed-to-minion, the
// job store's write): 64 request workers, as the master runs, serve the returns of 1,000
// minions to ping jobs, on the data dir's file system (bbolt, fsynced). cpu-ns/return is the
// process's CPU time (all goroutines: the store's commits, GC) per return; commits/return the
// job store's write transactions per return.
func BenchmarkReturn(b *testing.B) {
	r := newReturnRig(b, b.TempDir(), 1000)
	frames := r.frames(b, b.N)
	// The job store's count of group commits (jobstore.Bolt; a store without one reports none).
	counter, counts := r.m.store.(interface{ Commits() int })
	commits0 := 0
	if counts {
		commits0 = counter.Commits()
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	r.serve(b, frames, requestWorkers)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/return")
	if counts {
		b.ReportMetric(float64(counter.Commits()-commits0)/float64(b.N), "commits/return")
	}
}

// heartbeatFrame is minion i's sealed heartbeat request.
func (r *returnRig) heartbeatFrame(i int) []byte {
	mn := &r.minions[i]
	mn.seq++
	req, _ := json.Marshal(wire.Request{Seq: mn.seq, Kind: wire.KindHeartbeat})
	return wire.SessionFrame(wire.TRequest, mn.sid, mn.sk.ID, mn.sk.SealTagged(wire.DomainRequest, req))
}

// BenchmarkHeartbeat is the master's work per heartbeat request (a fleet of 5,000 sends 200 a
// second): session, key state, presence lease, the jobs pending for the minion among 100 live
// ones (each addressed to it, none a heartbeat interval old yet), the sealed reply.
func BenchmarkHeartbeat(b *testing.B) {
	r := newReturnRig(b, b.TempDir(), 1000)
	for range 100 {
		r.publish(b)
	}
	frames := make([][]byte, b.N)
	for i := range frames {
		frames[i] = r.heartbeatFrame(i % len(r.minions))
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	r.serve(b, frames, requestWorkers)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/heartbeat")
}
