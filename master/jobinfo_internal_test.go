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
