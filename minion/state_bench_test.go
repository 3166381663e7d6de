package minion

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
)

// BenchmarkJobState is what one job costs the minion's data dir: the job recorded as seen
// (durable before it runs), its return kept (durable before it is sent), sent and acknowledged.
// The jobs expire after a minute, one a second, so about 60 are kept, as on a busy minion.
func BenchmarkJobState(b *testing.B) {
	dir := b.TempDir()
	s, err := openSeen(dir)
	if err != nil {
		b.Fatal(err)
	}
	o, err := openOutbox(dir, testKey(b), quietLog())
	if err != nil {
		b.Fatal(err)
	}
	report, _ := json.Marshal(map[string]string{"changes": strings.Repeat("x", 1000)})
	ret := wire.Return{Minion: "m1", Kind: wire.JobApply, Success: true, Report: report}
	ack := func(string, any) (wire.Reply, error) { return wire.Reply{}, nil }
	now := time.Now()
	b.ResetTimer()
	for i := range b.N {
		now = now.Add(time.Second)
		jid := fmt.Sprintf("%020d", i)
		if !s.add(jid, now.Add(time.Minute), now) {
			b.Fatal("add failed")
		}
		ret.JID = jid
		o.put(ret)
		o.flush(ack)
	}
}
