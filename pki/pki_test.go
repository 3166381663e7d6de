package pki

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestKeyFileRoundTripAndMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k", "master.key")
	k, created, err := LoadOrCreateKeyPair(p)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKeyPair(p)
	if err != nil || created || !k2.Pub.Equal(k.Pub) {
		t.Fatalf("reload: %v %v", created, err)
	}
	sig := k2.Sign("d", []byte("m"))
	if !Verify(k.Pub.Sign, "d", []byte("m"), sig) {
		t.Fatal("reloaded key signs differently")
	}
	os.Chmod(p, 0o644)
	if _, err := LoadKeyPair(p); err == nil {
		t.Fatal("loaded a world-readable key")
	}
	pub, err := ParsePublicKey(k.Pub.String())
	if err != nil || !pub.Equal(k.Pub) {
		t.Fatal("public key round trip")
	}
	if NormalizeFingerprint(k.Pub.Fingerprint()) == NormalizeFingerprint(k2.Pub.Fingerprint())+"x" {
		t.Fatal("unreachable")
	}
}

func TestSignDomainsAndSeal(t *testing.T) {
	a, _ := GenerateKeyPair()
	b, _ := GenerateKeyPair()
	c, _ := GenerateKeyPair()
	sig := a.Sign("auth", []byte("x"))
	if Verify(a.Pub.Sign, "job", []byte("x"), sig) {
		t.Fatal("signature valid across domains")
	}
	if Verify(b.Pub.Sign, "auth", []byte("x"), sig) {
		t.Fatal("signature valid under another key")
	}
	sealed := a.SealTo(b.Pub.Box, []byte("secret"))
	if got, ok := b.OpenFrom(a.Pub.Box, sealed); !ok || string(got) != "secret" {
		t.Fatal("recipient cannot open")
	}
	if _, ok := c.OpenFrom(a.Pub.Box, sealed); ok {
		t.Fatal("third party opened a sealed box")
	}
	sk := NewSessionKey()
	other := NewSessionKey()
	box := sk.Seal([]byte("job"))
	if _, ok := other.Open(box); ok {
		t.Fatal("other session key opened")
	}
	rt, _ := UnmarshalSessionKey(sk.Marshal())
	if got, ok := rt.Open(box); !ok || string(got) != "job" {
		t.Fatal("session key round trip")
	}
	signed := a.SignAttached([]byte("payload"))
	if _, ok := OpenAttached(b.Pub.Sign, signed); ok {
		t.Fatal("attached signature valid under another key")
	}
	signed[70] ^= 1
	if _, ok := OpenAttached(a.Pub.Sign, signed); ok {
		t.Fatal("tampered attached message verified")
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"web1": true, "a.b-c": true, "": false, "-x": false, "a..b": false, "a/b": false,
		"A": false, "x\x00": false, "../etc": false, string(make([]byte, 64)): false,
	} {
		if ValidID(id) != want {
			t.Errorf("ValidID(%q) = %v", id, !want)
		}
	}
}

func TestKeyStoreStates(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenKeyStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := GenerateKeyPair()
	k2, _ := GenerateKeyPair()
	m, err := s.Present("web1", k1.Pub, []string{"app"}, false)
	if err != nil || m.State != StatePending {
		t.Fatalf("new key: %v %v", m.State, err)
	}
	// A peer presenting again cannot move itself anywhere.
	if m, _ = s.Present("web1", k1.Pub, []string{"app", "db"}, false); m.State != StatePending {
		t.Fatalf("re-present: %v", m.State)
	}
	if ids, _ := s.Accept("web*", nil, false); len(ids) != 1 {
		t.Fatalf("accept: %v", ids)
	}
	if m, _ = s.Get("web1"); m.State != StateAccepted || len(m.Groups) != 2 {
		t.Fatalf("after accept: %+v", m)
	}
	// Another key for the same id is denied and leaves the accepted record alone.
	if m, _ = s.Present("web1", k2.Pub, nil, true); m.State != StateDenied {
		t.Fatalf("impostor: %v", m.State)
	}
	if m, _ = s.Get("web1"); m.State != StateAccepted || !m.Key.Equal(k1.Pub) {
		t.Fatal("impostor changed the accepted record")
	}
	if m, _ = s.Enrol("web1", k2.Pub, []string{"x"}); m.State != StateDenied {
		t.Fatal("token enrolled an impostor")
	}
	// Persisted.
	s2, err := OpenKeyStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.List()) != 2 {
		t.Fatalf("reopen: %d records", len(s2.List()))
	}
	if ids, _ := s2.Reject("web1"); len(ids) != 1 {
		t.Fatal("reject")
	}
	if len(s2.Accepted()) != 0 {
		t.Fatal("rejected key still accepted")
	}
	if ids, _ := s2.Delete("*"); len(ids) != 1 {
		t.Fatalf("delete: %v", ids)
	}
	if len(s2.List()) != 0 {
		t.Fatal("records left after delete")
	}
	if _, err := s2.Present("../x", k1.Pub, nil, false); err == nil {
		t.Fatal("invalid id accepted")
	}
}

func TestTokensSingleUseExpiringScoped(t *testing.T) {
	ts, err := OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := ts.Create([]string{"app"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wins := make(chan []string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g, err := ts.Redeem(tok, time.Now()); err == nil {
				wins <- g
			}
		}()
	}
	wg.Wait()
	close(wins)
	n := 0
	for g := range wins {
		n++
		if len(g) != 1 || g[0] != "app" {
			t.Fatalf("groups %v", g)
		}
	}
	if n != 1 {
		t.Fatalf("token redeemed %d times", n)
	}
	old, _, _ := ts.Create(nil, time.Minute)
	if _, err := ts.Redeem(old, time.Now().Add(2*time.Minute)); err != ErrTokenExpired {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := ts.Redeem("brn1-forged", time.Now()); err != ErrTokenInvalid {
		t.Fatal("forged token")
	}
}
