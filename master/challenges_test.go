package master

import (
	"strconv"
	"testing"
	"time"
)

// A source holds maxChallengesPerSource challenges, or as many as the connections the master
// allows it when that is more (up to maxChallenges); beyond, its oldest are evicted.
func TestChallengesPerSource(t *testing.T) {
	for _, c := range []struct{ conns, want int }{{0, 256}, {100, 256}, {5000, 5000}, {50000, 20000}} {
		if got := challengesPerSource(c.conns); got != c.want {
			t.Errorf("challengesPerSource(%d) = %d, want %d", c.conns, got, c.want)
		}
	}
	now := time.Now()
	for _, c := range []struct{ perSource, kept int }{{0, 256}, {challengesPerSource(5000), 300}} {
		tab := challengeTable{perSource: c.perSource}
		for i := range 300 {
			tab.add("127.0.0.1", strconv.Itoa(i), challenge{id: "m" + strconv.Itoa(i), expires: now.Add(challengeTTL)}, now)
		}
		kept := 0
		for i := range 300 {
			if _, ok := tab.take(strconv.Itoa(i), now); ok {
				kept++
			} else if i >= 300-c.kept {
				t.Fatalf("per source %d: challenge %d of 300 evicted", c.perSource, i)
			}
		}
		if kept != c.kept {
			t.Fatalf("per source %d: %d of 300 challenges kept, want %d", c.perSource, kept, c.kept)
		}
	}
}
