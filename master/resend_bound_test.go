package master

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// countingDeliveries counts the store lookups of resends.
type countingDeliveries struct {
	store.Deliveries
	resendable atomic.Int64
}

func (c *countingDeliveries) Resendable(jid, minion string, now time.Time, interval time.Duration) ([]byte, error) {
	c.resendable.Add(1)
	return c.Deliveries.Resendable(jid, minion, now, interval)
}

// A compromised minion's resend request (64 KiB of job ids, thousands of them, repeated) costs
// the store at most maxResend lookups per request: on PostgreSQL each is a conditional UPDATE.
func TestResendRequestBounded(t *testing.T) {
	m, err := New(Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cd := &countingDeliveries{Deliveries: m.deliver}
	m.deliver = cd
	peer, _ := pki.GenerateKeyPair()
	s := session{id: "00", minion: "evil", key: peer.Pub, sk: pki.NewSessionKey(), remote: netip.MustParseAddr("127.0.0.1")}
	var jids []string
	for i := 0; len(jids) < 5000; i++ {
		jids = append(jids, fmt.Sprintf("j%d", i), fmt.Sprintf("j%d", i)) // duplicates too
	}
	body, _ := json.Marshal(wire.ResendBody{JIDs: jids})
	if len(body) > 64<<10 {
		t.Fatalf("request body of %d bytes is over what the master reads", len(body))
	}
	for range 3 {
		var reply wire.Reply
		if err := m.serve(s, wire.Request{Seq: 1, Kind: wire.KindResend, Body: body}, &reply); err != nil {
			t.Fatal(err)
		}
	}
	if n := cd.resendable.Load(); n != 3*maxResend {
		t.Fatalf("%d store lookups for 3 resend requests of %d job ids; want %d", n, len(jids), 3*maxResend)
	}
}
