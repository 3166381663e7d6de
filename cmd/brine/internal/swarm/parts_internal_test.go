package swarm

import (
	"strconv"
	"testing"
)

func TestFewStatuses(t *testing.T) {
	st := map[string]int{"connected": 90}
	for i := range 40 {
		st["dial error "+strconv.Itoa(i)] = 1
	}
	got := fewStatuses(st, 8)
	if len(got) != 8 || got["connected"] != 90 || got["(other statuses)"] != 34 {
		t.Fatalf("%v", got)
	}
	total := 0
	for _, n := range got {
		total += n
	}
	if total != 130 {
		t.Fatalf("total %d, want 130", total)
	}
	if small := map[string]int{"a": 1}; len(fewStatuses(small, 8)) != 1 {
		t.Fatal("a short report changed")
	}
}
