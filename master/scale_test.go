package master

import (
	"testing"
	"time"
)

// The heartbeat request interval a master asks for keeps a fleet's heartbeats under
// maxHeartbeatRate a second, and leaves small fleets to their own setting.
func TestRequestEvery(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{0, 0}, {50, 0}, {1000, 0}, {1001, 5005 * time.Millisecond}, {5000, 25 * time.Second}, {20000, 100 * time.Second}} {
		if got := requestEvery(c.n); got != c.want {
			t.Errorf("requestEvery(%d) = %s, want %s", c.n, got, c.want)
		}
		if c.n > 1000 && float64(c.n)/requestEvery(c.n).Seconds() > maxHeartbeatRate+0.001 {
			t.Errorf("%d minions would send more than %d heartbeats a second", c.n, maxHeartbeatRate)
		}
	}
}

// pubGroups: a few minions get a copy each on their own topic; many are grouped by bucket, each
// minion in exactly one group; a large bundle goes once to all.
func TestPubGroups(t *testing.T) {
	few := pubGroups([]string{"a", "b"}, 100)
	if len(few) != 2 || few[0].topic != "ma\x00" || len(few[1].minions) != 1 {
		t.Fatalf("few: %+v", few)
	}
	var many []string
	for i := range 1000 {
		many = append(many, "m"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('0'+i/676)))
	}
	seen := map[string]int{}
	for _, g := range pubGroups(many, 100) {
		if len(g.minions) > 60 {
			t.Errorf("bucket %s has %d minions", g.topic, len(g.minions))
		}
		for _, id := range g.minions {
			seen[id]++
		}
	}
	if len(seen) != len(many) {
		t.Fatalf("%d of %d minions in a group", len(seen), len(many))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s in %d groups", id, n)
		}
	}
	if g := pubGroups(many, groupedBundleMax+1); g != nil {
		t.Fatalf("a large bundle was split into %d copies", len(g))
	}
}
