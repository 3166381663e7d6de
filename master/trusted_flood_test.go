package master_test

import (
	"encoding/json"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// A compromised minion holds its accepted key and its session: its connection is trusted, so
// the pre-authentication limits (16 KiB messages, 50 a second, the in-flight budget) no longer
// apply to it. It sends one sealed request of 15 MiB and then the same bytes again and again:
// each copy costs the master a read, a secretbox open and a JSON scan of 15 MiB before the
// sequence number refuses it. The master must take them one at a time from that connection
// (its heap stays bounded) and keep serving the others.
func TestAcceptedMinionCannotQueueLargeRequests(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "legit", nil)
	evil := evilMinion(t, m, "evil", nil, nil)

	body, _ := json.Marshal(strings.Repeat("A", 15<<20))
	frame := evil.requestFrame(wire.KindFacts, json.RawMessage(body))

	runtime.GC()
	watch := heapWatch()
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			evil.send(frame)
			sent.Add(1)
		}
	}()
	// The attack stops at 2 GiB of master heap (the bound below is missed: no need to take the
	// machine down) or after 3 GB have gone through.
	var peak uint64
	tb.WaitFor(t, 3*time.Minute, "the flood through or the heap over 2 GiB", func() bool {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
		return sent.Load() >= 200 || ms.HeapInuse > 2<<30
	})
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "legit", Timeout: time.Minute}); res.Failed() {
		t.Errorf("a legitimate minion's ping during the flood: %+v", res)
	}
	close(stop)
	<-done
	peak = max(peak, watch())
	t.Logf("evil sent %d requests of %d MiB; master heap peak %d MiB", sent.Load(), len(frame)>>20, peak>>20)
	// One message of that connection being read and one being handled, with their copies
	// (decoded, opened), beside the master's own heap: well under 512 MiB.
	if peak > 512<<20 {
		t.Fatalf("one accepted minion replaying a 15 MiB request took the master's heap to %d MiB (%d sent)", peak>>20, sent.Load())
	}
}
