package master

import (
	"testing"
	"time"
)

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
