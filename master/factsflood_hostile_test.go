package master_test

import (
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// A compromised minion that sends facts reports as fast as its transport rates let it, each as
// costly to check as the limits allow (16,000 numbers, tens of milliseconds of the master's CPU
// each), has the master check 30 at once and then one every 2 s: the rest are refused before
// they are decoded, the master keeps the facts it accepted last, and a legitimate minion is
// served meanwhile. Without the limit the master checked 30 such reports a second, over a core.
func TestFactsFloodThrottled(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "legit", nil)
	evil := evilMinion(t, m, "evil", nil, nil)
	costly := func(n int) map[string]any {
		xs := make([]int, 16000)
		for i := range xs {
			xs[i] = n + i
		}
		return map[string]any{"n": n, "x": xs}
	}
	start := time.Now()
	accepted, refused, last := 0, 0, -1
	for n := 0; n < 80; n++ {
		r, _, ok := evil.request(wire.KindFacts, costly(n))
		switch {
		case !ok:
			t.Fatalf("report %d: no reply", n)
		case r.OK:
			accepted++
			last = n
		case strings.Contains(r.Error, "too often"):
			refused++
		default:
			t.Fatalf("report %d refused for another reason: %s", n, r.Error)
		}
	}
	elapsed := time.Since(start)
	// 30 at once, then one every 2 s of the flood.
	if most := 30 + int(elapsed.Seconds()/2) + 1; accepted > most {
		t.Errorf("the master checked %d of 80 costly facts reports in %s (at most %d)", accepted, elapsed.Round(time.Millisecond), most)
	}
	if refused == 0 || accepted < 30 {
		t.Errorf("%d reports accepted, %d refused as too often: want the burst of 30 accepted, then refusals", accepted, refused)
	}
	if got := m.Facts("evil")["n"]; got != float64(last) {
		t.Errorf("the evil minion's facts say n=%v; the last report accepted was %d", got, last)
	}
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "legit"}); res.Failed() {
		t.Errorf("a legitimate minion's ping after the flood: %+v", res)
	}
}
