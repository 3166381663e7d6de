package master

import (
	"math/rand/v2"
	"testing"
	"time"
)

// A minion's presence lease never lapses while it makes its requests, every 1 to 1.5 request
// intervals as minions do, also when its first lease was written while the fleet was small
// (shorter than the current one) and its requests come late; it is renewed at about every
// second request, not at each.
func TestPresenceLeaseNeverLapses(t *testing.T) {
	m := &Master{cfg: Config{heartbeat: 5 * time.Second}}
	for _, n := range []int{10, 1000, 3000, 9000} {
		every := max(m.cfg.heartbeat, requestEvery(n))
		lease := m.leaseFor(n)
		for _, spacing := range []func() time.Duration{
			func() time.Duration { return every + rand.N(every/2) }, // as minions pick it
			func() time.Duration { return every * 3 / 2 },           // the latest, every time
		} {
			now := time.Unix(1e9, 0)
			// Authenticated when the master held few sessions: the shortest lease; then the
			// session's first heartbeat request, at once.
			st := leaseState{at: now, until: now.Add(m.leaseFor(0))}
			now = now.Add(100 * time.Millisecond)
			if renewLease(st, now, lease, false) {
				st = leaseState{at: now, until: now.Add(lease)}
			}
			renewals := 0
			for i := range 400 {
				now = now.Add(spacing())
				if i%50 == 0 {
					now = now.Add(every / 2) // a request late by half an interval now and then
				}
				if now.After(st.until) {
					t.Fatalf("%d minions: the lease lapsed %s before request %d", n, now.Sub(st.until), i)
				}
				if renewLease(st, now, lease, false) {
					st = leaseState{at: now, until: now.Add(lease)}
					renewals++
				}
			}
			if renewals > 400*6/10 {
				t.Fatalf("%d minions: %d renewals for 400 requests", n, renewals)
			}
		}
	}
	// On authentication the lease is written at once, but not more than once per leaseForceEvery.
	now := time.Unix(1e9, 0)
	st := leaseState{at: now, until: now.Add(time.Minute)}
	if renewLease(st, now.Add(leaseForceEvery/2), time.Minute, true) || !renewLease(st, now.Add(leaseForceEvery), time.Minute, true) {
		t.Fatal("forced renewal not bounded by leaseForceEvery")
	}
	if !renewLease(leaseState{}, now, time.Minute, false) {
		t.Fatal("no lease, not renewed")
	}
}

// A minion counts as connected while its last request is within two of the longest request
// periods its master asks for, and 30 s at least: a master of 10,000 minions spaces their
// requests 50-75 s apart, and a fixed 30 s took most of them for gone.
func TestConnectedWithinFollowsTheRequestPeriod(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{0, 30 * time.Second}, {1000, 30 * time.Second}, {3000, 45 * time.Second}, {10000, 150 * time.Second}} {
		if got := connectedWithin(c.n); got != c.want {
			t.Errorf("connectedWithin(%d) = %v, want %v", c.n, got, c.want)
		}
		// The longest period a minion may pick is 1.5 request intervals: two fit.
		if longest := requestEvery(c.n) * 3 / 2; connectedWithin(c.n) < 2*longest {
			t.Errorf("%d minions: %v is under two request periods of %v", c.n, connectedWithin(c.n), longest)
		}
	}
}
