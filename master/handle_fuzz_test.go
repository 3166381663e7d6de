package master

import (
	"net/netip"
	"testing"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// FuzzHandle feeds the master's request handler (hello, sealed auth, sealed requests) arbitrary
// frames, as any peer of port 4506 can: it must never panic, and answer only what the protocol
// answers in clear.
func FuzzHandle(f *testing.F) {
	m, err := New(Config{DataDir: f.TempDir()}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	peer, _ := pki.GenerateKeyPair()
	f.Add(wire.Encode(wire.THello, []byte(`{"id":"a","key":"`+peer.Pub.String()+`","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`)))
	f.Add(wire.Encode(wire.TAuth, wire.AuthFrame(make([]byte, wire.NonceLen), peer.SealTo(m.Key().Box, []byte("x")))))
	f.Add(wire.SessionFrame(wire.TRequest, make([]byte, wire.SessionIDLen), [wire.KeyIDLen]byte{}, []byte("sealed")))
	f.Fuzz(func(t *testing.T, frame []byte) {
		out, authed := m.handle(nil, "fuzz", netip.MustParseAddr("127.0.0.1"), frame)
		if authed {
			t.Fatal("an unauthenticated frame was taken as authenticated")
		}
		if out == nil {
			return
		}
		typ, _, err := wire.Decode(out, wire.MaxReplyFrame)
		if err != nil {
			t.Fatalf("master answered with an undecodable frame: %v", err)
		}
		switch typ {
		case wire.TChallenge, wire.TAuthReply, wire.TNoSession:
		default:
			t.Fatalf("an unauthenticated frame got a %v", typ)
		}
	})
}
