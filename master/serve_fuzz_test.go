package master

import (
	"net/netip"
	"testing"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// FuzzServe feeds the requests of an authenticated session (what a compromised minion sends
// once its sealed frames open: facts, returns, resends, heartbeats, rotations) arbitrary
// bodies. serve itself must not panic (serveSafe would hide it), and whatever facts it keeps
// stay fit for a bundle.
func FuzzServe(f *testing.F) {
	m, err := New(Config{DataDir: f.TempDir()}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	peer, _ := pki.GenerateKeyPair()
	s := session{id: "00", minion: "fz", key: peer.Pub, sk: pki.NewSessionKey(), remote: netip.MustParseAddr("127.0.0.1")}
	kinds := []string{wire.KindFacts, wire.KindReturn, wire.KindResend, wire.KindHeartbeat, wire.KindSession, "other"}
	f.Add(uint8(0), []byte(`{"os":"linux","tinc_pubkey":{"mesh":"x"},"interfaces":{"eth0":{"ipv4":["10.0.0.1"]}}}`))
	f.Add(uint8(0), []byte(`{"caf\u00e9":1,"cafe\u0301":2}`))
	f.Add(uint8(1), []byte(`{"data":"eyJqaWQiOiJ4In0=","sig":"AAAA"}`))
	f.Add(uint8(2), []byte(`{"jids":["20261130000000000000-abcdef","",".."]}`))
	f.Add(uint8(3), []byte(`null`))
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		r := wire.Request{Seq: 1, Kind: kinds[int(kind)%len(kinds)], Body: body}
		var reply wire.Reply
		_ = m.serve(s, r, &reply)
		if facts := m.Facts("fz"); facts != nil {
			if err := states.CheckData(facts); err != nil {
				t.Fatalf("kept facts a bundle cannot hold: %v", err)
			}
		}
	})
}
