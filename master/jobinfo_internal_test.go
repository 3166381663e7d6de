package master

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/brinecm/brine/internal/jobstore"
)

// jobInfos reads a job once for all the returns that need it, keeps no failed read, and keeps
// at most jobInfoMax jobs.
func TestJobInfosReadOnce(t *testing.T) {
	var c jobInfos
	var reads atomic.Int32
	load := func(jid string) (jobstore.Job, error) {
		reads.Add(1)
		if jid == "missing" {
			return jobstore.Job{}, jobstore.ErrNotFound
		}
		return jobstore.Job{JID: jid, Kind: "ping", Minions: []string{"a", "b"}}, nil
	}
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kind, addressed, err := c.get("j1", []string{"a", "b", "c"}[i%3], load)
			if err != nil || kind != "ping" || addressed != (i%3 != 2) {
				t.Errorf("get: %q %v %v", kind, addressed, err)
			}
		}()
	}
	wg.Wait()
	if n := reads.Load(); n != 1 {
		t.Fatalf("64 returns of one job read it %d times", n)
	}
	for range 2 {
		if _, _, err := c.get("missing", "a", load); !errors.Is(err, jobstore.ErrNotFound) {
			t.Fatalf("missing job: %v", err)
		}
	}
	if n := reads.Load(); n != 3 {
		t.Fatalf("a failed read was kept: %d reads", n)
	}
	for i := range 3 * jobInfoMax {
		c.get(fmt.Sprintf("j%d", i+2), "a", load)
	}
	if len(c.jobs) != jobInfoMax || len(c.order) != jobInfoMax {
		t.Fatalf("%d jobs kept (%d in order), want %d", len(c.jobs), len(c.order), jobInfoMax)
	}
}

// The minion ids held are bounded too (the newest job stays whatever its size), and a load that
// panics leaves no waiter hanging and nothing kept.
func TestJobInfosBoundedAndPanicSafe(t *testing.T) {
	var c jobInfos
	big := make([]string, jobInfoMaxIDs/2+1)
	for i := range big {
		big[i] = fmt.Sprintf("m%d", i)
	}
	load := func(jid string) (jobstore.Job, error) {
		return jobstore.Job{JID: jid, Kind: "ping", Minions: big}, nil
	}
	for i := range 3 {
		if _, addressed, err := c.get(fmt.Sprint("big", i), "m7", load); err != nil || !addressed {
			t.Fatalf("big%d: %v %v", i, addressed, err)
		}
	}
	if len(c.jobs) != 1 || c.ids != len(big) {
		t.Fatalf("%d jobs and %d ids kept, want the newest one's %d", len(c.jobs), c.ids, len(big))
	}
	func() {
		defer func() { recover() }()
		c.get("panics", "a", func(string) (jobstore.Job, error) { panic("store") })
	}()
	if _, _, err := c.get("panics", "a", func(string) (jobstore.Job, error) { return jobstore.Job{}, jobstore.ErrNotFound }); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("after a panicking read: %v", err)
	}
	if len(c.jobs) != 1 || c.ids != len(big) {
		t.Fatalf("%d jobs and %d ids kept after the failed reads", len(c.jobs), c.ids)
	}
}
