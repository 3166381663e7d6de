package minion

import (
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// FuzzOpenJob feeds a minion holding a session key arbitrary job bodies, including frames with
// a wrap for its key around garbage: it must refuse them without panicking.
func FuzzOpenJob(f *testing.F) {
	master, err := pki.GenerateKeyPair()
	if err != nil {
		f.Fatal(err)
	}
	m, err := New(Config{ID: "fuzz", DataDir: f.TempDir(), Master: "127.0.0.1"}, nil)
	if err != nil {
		f.Fatal(err)
	}
	sk := pki.NewSessionKey()
	m.keys.master = &master.Pub
	m.keys.authenticated(sk, [8]byte{})
	nonce := pki.RandomNonce()
	jk := pki.NewJobKey()
	wrap := []wire.Wrap{{KeyID: sk.ID, Key: sk.Wrap(nonce, jk)}}
	for _, content := range [][]byte{
		jk.Seal(master.SignAttached(wire.PackJob([]byte(`{"jid":"j","kind":"ping","minions":["fuzz"]}`), nil))),
		jk.Seal(master.SignAttached([]byte("not a job"))),
		jk.Seal([]byte("unsigned")),
		[]byte("garbage"),
	} {
		f.Add(wire.JobFrame(nonce, wrap, content)[wire.HeaderLen:])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := m.OpenJob(body, time.Now())
		if err == nil && j.meta.JID == "" {
			t.Fatal("accepted a job without an id")
		}
	})
}
