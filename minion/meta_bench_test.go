package minion

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
)

// pingMeta is the meta of one bucket's copy of a ping to 9,000 minions: 140 of them.
func pingMeta() []byte {
	m := wire.JobMeta{JID: "20261202064907366676-d52d01", Kind: wire.JobPing, Target: "*", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	for i := range 140 {
		m.Minions = append(m.Minions, fmt.Sprintf("swarm-%06d", i*64))
	}
	b, _ := json.Marshal(m)
	return b
}

// The full decoding a minion did before readMeta, for comparison.
func BenchmarkMetaFullDecode(b *testing.B) {
	raw := pingMeta()
	b.ReportAllocs()
	for b.Loop() {
		var m wire.JobMeta
		if err := wire.Unmarshal(raw, wire.MaxJobFrame, &m); err != nil || !slices.Contains(m.Minions, "swarm-004480") {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadMeta(b *testing.B) {
	raw := pingMeta()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := readMeta(raw, "swarm-004480"); err != nil || !ok {
			b.Fatal(err)
		}
	}
}
