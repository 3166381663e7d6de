package master_test

import (
	"fmt"
	"testing"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// A compromised minion that names new tinc networks in every facts report cannot grow what the
// master pins for it (its attestation, in every peers() entry of it) without bound: 16
// networks at most, in one report and over all of them; a report beyond is refused and the
// minion keeps its previous facts.
func TestEvilMinionTincNetworksBounded(t *testing.T) {
	m := master.TestMaster(t)
	evil := evilMinion(t, m, "evil", nil, mustKey(t))
	key := tincKey(t)
	nets := func(from, n int) map[string]any {
		keys := map[string]any{}
		for i := from; i < from+n; i++ {
			keys[fmt.Sprintf("net%d", i)] = key
		}
		return map[string]any{"os": "linux", "tinc_pubkey": keys}
	}
	if r, _, ok := evil.request(wire.KindFacts, nets(0, 16)); !ok || !r.OK {
		t.Fatalf("16 networks refused: %+v", r)
	}
	if r, _, ok := evil.request(wire.KindFacts, nets(100, 17)); !ok || r.OK {
		t.Fatalf("17 networks in one report accepted: %+v", r)
	}
	for round := 1; round <= 5; round++ {
		if r, _, ok := evil.request(wire.KindFacts, nets(round*16, 16)); !ok || r.OK {
			t.Fatalf("round %d: 16 new networks beyond the 16 pinned were accepted: %+v", round, r)
		}
	}
	a := m.Attestation("evil")
	if len(a.Tinc)+len(a.TincPending) != 16 {
		t.Fatalf("%d tinc networks pinned and %d pending after 5 rounds of new ones", len(a.Tinc), len(a.TincPending))
	}
	f := m.Facts("evil")["tinc_pubkey"].(map[string]any)
	if _, ok := f["net0"]; !ok || len(f) != 16 {
		t.Fatalf("the minion's facts are not its last accepted ones: %v", f)
	}
	// Known networks keep working: the same 16 again are accepted.
	if r, _, ok := evil.request(wire.KindFacts, nets(0, 16)); !ok || !r.OK {
		t.Fatalf("the 16 pinned networks again: %+v", r)
	}
}
