package pki

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	// A precomputed shared key makes and opens the same boxes as SealTo and OpenFrom.
	ab, ba := a.Shared(b.Pub.Box), b.Shared(a.Pub.Box)
	if got, ok := ba.Open(a.SealTo(b.Pub.Box, []byte("one"))); !ok || string(got) != "one" {
		t.Fatal("shared key cannot open a SealTo box")
	}
	if got, ok := b.OpenFrom(a.Pub.Box, ab.Seal([]byte("two"))); !ok || string(got) != "two" {
		t.Fatal("OpenFrom cannot open a shared-key box")
	}
	if _, ok := c.Shared(a.Pub.Box).Open(ab.Seal([]byte("three"))); ok {
		t.Fatal("third party opened a shared-key box")
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
	// Tags: a box sealed for one purpose does not open as another.
	req := sk.SealTagged("brine-request-v2", []byte("facts"))
	if got, ok := sk.OpenTagged("brine-request-v2", req); !ok || string(got) != "facts" {
		t.Fatal("tagged round trip")
	}
	if _, ok := sk.OpenTagged("brine-reply-v2", req); ok {
		t.Fatal("a request opened as a reply")
	}
	if _, ok := sk.OpenTagged("brine-request-v", req); ok {
		t.Fatal("a tag prefix matched")
	}
	// Job keys: wrapped for one session key, opened only with it.
	jk := NewJobKey()
	payload := jk.Seal([]byte("signed job"))
	nonce := RandomNonce()
	w := sk.Wrap(nonce, jk)
	if len(w) != WrapLen {
		t.Fatalf("wrap of %d bytes", len(w))
	}
	got, ok := sk.Unwrap(nonce, w)
	if !ok || *got != *jk {
		t.Fatal("unwrap")
	}
	if p, ok := got.Open(payload); !ok || string(p) != "signed job" {
		t.Fatal("job payload")
	}
	if _, ok := other.Unwrap(nonce, w); ok {
		t.Fatal("another session key unwrapped a job key")
	}
	if _, ok := sk.Unwrap(RandomNonce(), w); ok {
		t.Fatal("unwrapped under another nonce")
	}
	if _, ok := NewJobKey().Open(payload); ok {
		t.Fatal("another job key opened the payload")
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
	pres := func(id string, k *KeyPair, groups ...string) Presentation {
		return Presentation{ID: id, Key: k.Pub, Source: "192.0.2.1", Requested: groups}
	}
	m, err := s.Present(pres("web1", k1, "app"), false, nil)
	if err != nil || m.State != StatePending || m.Source != "192.0.2.1" {
		t.Fatalf("new key: %+v %v", m, err)
	}
	// A peer presenting again cannot move itself anywhere.
	if m, _ = s.Present(pres("web1", k1, "app", "db"), false, nil); m.State != StatePending {
		t.Fatalf("re-present: %v", m.State)
	}
	if ids, _ := s.Accept("web*", nil, false); len(ids) != 1 {
		t.Fatalf("accept: %v", ids)
	}
	// What the minion asked for is never granted: accept without groups grants none.
	if m, _ = s.Get("web1"); m.State != StateAccepted || len(m.Groups) != 0 || len(m.Requested) != 1 {
		t.Fatalf("after accept: %+v", m)
	}
	// Another key for the same id is denied and leaves the accepted record alone.
	if m, _ = s.Present(pres("web1", k2), true, nil); m.State != StateDenied {
		t.Fatalf("impostor: %v", m.State)
	}
	if m, _ = s.Get("web1"); m.State != StateAccepted || !m.Key.Equal(k1.Pub) {
		t.Fatal("impostor changed the accepted record")
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
	if _, err := s2.Present(pres("../x", k1), false, nil); err == nil {
		t.Fatal("invalid id accepted")
	}
	// auto_accept grants no groups either.
	if m, _ := s2.Present(pres("lab1", k1, "admin"), true, nil); m.State != StateAccepted || len(m.Groups) != 0 {
		t.Fatalf("auto-accepted: %+v", m)
	}
}

// Accepting by fingerprint accepts only the key the operator checked.
func TestAcceptByFinger(t *testing.T) {
	s, _ := OpenKeyStore(t.TempDir())
	k1, _ := GenerateKeyPair()
	k2, _ := GenerateKeyPair()
	s.Present(Presentation{ID: "web1", Key: k1.Pub}, false, nil)
	if recs, _ := s.AcceptKeys("web1", []string{"app"}, false, k2.Pub.Fingerprint()); len(recs) != 0 {
		t.Fatalf("accepted a key with another fingerprint: %+v", recs)
	}
	recs, err := s.AcceptKeys("web1", []string{"app"}, false, strings.ToUpper(strings.ReplaceAll(k1.Pub.Fingerprint(), ":", "")))
	if err != nil || len(recs) != 1 || recs[0].Finger() != k1.Pub.Fingerprint() || recs[0].Groups[0] != "app" {
		t.Fatalf("accept by finger: %+v %v", recs, err)
	}
}

// The pending store is bounded in total and per source, and every write passes the rate limit.
func TestPendingBounded(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenKeyStore(dir)
	s.SetLimits(PendingLimits{Max: 10, PerSource: 4})
	k, _ := GenerateKeyPair()
	var full, srcFull int
	for i := range 50 {
		_, err := s.Present(Presentation{ID: fmt.Sprintf("a%d", i), Key: k.Pub, Source: "198.51.100.1"}, false, nil)
		if errors.Is(err, ErrSourceFull) {
			srcFull++
		}
	}
	if total, from := s.Pending("198.51.100.1"); total != 4 || from != 4 || srcFull != 46 {
		t.Fatalf("one source: %d pending (%d from it), %d refused", total, from, srcFull)
	}
	for i := range 50 {
		_, err := s.Present(Presentation{ID: fmt.Sprintf("b%d", i), Key: k.Pub, Source: fmt.Sprintf("203.0.113.%d", i)}, false, nil)
		if errors.Is(err, ErrPendingFull) {
			full++
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "minions"))
	if total, _ := s.Pending(""); total != 10 || full != 44 || len(ents) != 10 {
		t.Fatalf("many sources: %d pending, %d files, %d refused", total, len(ents), full)
	}
	// Accepting frees room; the rate limit refuses without writing.
	s.Accept("a*", nil, false)
	if total, from := s.Pending("198.51.100.1"); total != 6 || from != 0 {
		t.Fatalf("after accept: %d pending, %d from the source", total, from)
	}
	if _, err := s.Present(Presentation{ID: "c1", Key: k.Pub, Source: "192.0.2.9"}, false, func() bool { return false }); !errors.Is(err, ErrEnrolLimited) {
		t.Fatalf("rate limited: %v", err)
	}
	if _, ok := s.Get("c1"); ok {
		t.Fatal("a rate-limited presentation was recorded")
	}
	// Counts survive a reopen; old pending keys make room when the store is full.
	s2, _ := OpenKeyStore(dir)
	s2.SetLimits(PendingLimits{Max: 6, PerSource: 4, TTL: time.Nanosecond})
	if total, _ := s2.Pending(""); total != 6 {
		t.Fatalf("reopened: %d pending", total)
	}
	if m, err := s2.Present(Presentation{ID: "late", Key: k.Pub, Source: "192.0.2.10"}, false, nil); err != nil || m.State != StatePending {
		t.Fatalf("full store with expired pending keys: %+v %v", m, err)
	}
	if total, _ := s2.Pending(""); total != 1 {
		t.Fatalf("after pruning: %d pending", total)
	}
}

func TestTokensSingleUseExpiringScoped(t *testing.T) {
	master, _ := GenerateKeyPair()
	ts, err := OpenTokenStore(t.TempDir(), master.Pub)
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := OpenKeyStore(t.TempDir())
	tok, _, err := ts.Create(TokenRequest{Groups: []string{"app"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if f, err := TokenMasterFinger(tok); err != nil || f != master.Pub.Fingerprint() {
		t.Fatalf("token %s carries finger %q (%v)", tok, f, err)
	}
	// Concurrent redemptions by different minions: exactly one wins.
	var wg sync.WaitGroup
	wins := make(chan MinionKey, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _ := GenerateKeyPair()
			if m, spent, err := ks.Redeem(ts, Presentation{ID: fmt.Sprintf("m%d", i), Key: k.Pub}, tok, time.Now()); err == nil && spent {
				wins <- m
			}
		}()
	}
	wg.Wait()
	close(wins)
	n := 0
	for m := range wins {
		n++
		if m.State != StateAccepted || len(m.Groups) != 1 || m.Groups[0] != "app" {
			t.Fatalf("winner %+v", m)
		}
	}
	if n != 1 || len(ks.Accepted()) != 1 {
		t.Fatalf("token redeemed %d times, %d accepted", n, len(ks.Accepted()))
	}
	k, _ := GenerateKeyPair()
	old, _, _ := ts.Create(TokenRequest{TTL: time.Minute})
	if _, _, err := ks.Redeem(ts, Presentation{ID: "x", Key: k.Pub}, old, time.Now().Add(2*time.Minute)); err != ErrTokenExpired {
		t.Fatalf("expired token: %v", err)
	}
	for _, forged := range []string{"brn1-forged", "brn2-forged", tok + "x", strings.Repeat("brn2-", 40)} {
		if _, _, err := ks.Redeem(ts, Presentation{ID: "x", Key: k.Pub}, forged, time.Now()); err != ErrTokenInvalid {
			t.Fatalf("forged token %q: %v", forged, err)
		}
	}
	if _, _, err := ts.Create(TokenRequest{ID: "../x", TTL: time.Minute}); err == nil {
		t.Fatal("token for an invalid id pattern")
	}
}

// A token is spent only by a successful enrolment, enrols only the ids it names, never
// overrides a rejected or an accepted key, and takes an id over from a pending squatter.
func TestRedeemDecisions(t *testing.T) {
	master, _ := GenerateKeyPair()
	ts, _ := OpenTokenStore(t.TempDir(), master.Pub)
	ks, _ := OpenKeyStore(t.TempDir())
	key := func() PublicKey { k, _ := GenerateKeyPair(); return k.Pub }
	now := time.Now()
	web, _, _ := ts.Create(TokenRequest{ID: "web*", Groups: []string{"web"}, TTL: time.Hour})

	// Wrong id: refused, not spent.
	if _, spent, err := ks.Redeem(ts, Presentation{ID: "db1", Key: key()}, web, now); err != ErrTokenID || spent {
		t.Fatalf("token for web* enrolled db1: %v", err)
	}
	// Rejected id: refused, not spent.
	rej := key()
	ks.Present(Presentation{ID: "web0", Key: rej}, false, nil)
	ks.Reject("web0")
	for _, k := range []PublicKey{rej, key()} {
		if _, spent, err := ks.Redeem(ts, Presentation{ID: "web0", Key: k}, web, now); err != ErrKeyRejected || spent {
			t.Fatalf("token overrode a rejected key: %v", err)
		}
	}
	// Accepted with another key: refused, not spent.
	held := key()
	ks.Present(Presentation{ID: "web9", Key: held}, false, nil)
	ks.Accept("web9", nil, false)
	if _, spent, err := ks.Redeem(ts, Presentation{ID: "web9", Key: key()}, web, now); err != ErrKeyHeld || spent {
		t.Fatalf("token replaced an accepted key: %v", err)
	}
	// Accepted with this key: nothing to do, not spent.
	if m, spent, err := ks.Redeem(ts, Presentation{ID: "web9", Key: held}, web, now); err != nil || spent || m.State != StateAccepted {
		t.Fatalf("already accepted: %+v %v %v", m, spent, err)
	}
	// A pending squatter: the token holder takes the id, the squatter is denied.
	squat := key()
	ks.Present(Presentation{ID: "web1", Key: squat, Requested: []string{"admin"}}, false, nil)
	owner := key()
	m, spent, err := ks.Redeem(ts, Presentation{ID: "web1", Key: owner}, web, now)
	if err != nil || !spent || !m.Key.Equal(owner) || m.State != StateAccepted || strings.Join(m.Groups, ",") != "web" {
		t.Fatalf("squatted id: %+v %v %v", m, spent, err)
	}
	if m, _ := ks.Present(Presentation{ID: "web1", Key: squat}, false, nil); m.State != StateDenied {
		t.Fatalf("squatter after takeover: %+v", m)
	}
	// Spent now.
	if _, _, err := ks.Redeem(ts, Presentation{ID: "web2", Key: key()}, web, now); err != ErrTokenInvalid {
		t.Fatalf("second use: %v", err)
	}
}

// A burst of new keys is one group commit, not an fsynced file each; every record is on disk
// when PresentAll returns, and a repeated id commits what came before it first.
func TestPresentAllGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenKeyStore(dir)
	s.SetLimits(PendingLimits{Max: 150, PerSource: 100})
	k, _ := GenerateKeyPair()
	var ps []Presentation
	for i := range 200 {
		ps = append(ps, Presentation{ID: fmt.Sprintf("n%d", i), Key: k.Pub, Source: fmt.Sprintf("198.51.100.%d", i%2)})
	}
	recs, errs := s.PresentAll(ps, false, nil)
	pending, refused := 0, 0
	for i := range ps {
		switch {
		case errs[i] == nil && recs[i].State == StatePending:
			pending++
		case errors.Is(errs[i], ErrPendingFull):
			refused++
		default:
			t.Fatalf("presentation %d: %+v %v", i, recs[i], errs[i])
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "minions"))
	if pending != 150 || refused != 50 || len(ents) != 150 || s.Commits() != 1 {
		t.Fatalf("%d pending, %d refused, %d files, %d commits; want 150, 50, 150, 1", pending, refused, len(ents), s.Commits())
	}
	if s2, _ := OpenKeyStore(dir); len(s2.List()) != 150 {
		t.Fatalf("reopened: %d records", len(s2.List()))
	}
	// The same id again in a batch: with the same key (a retry) the staged record answers it;
	// with another key it is decided on the first one's durable record, after a commit.
	k2, _ := GenerateKeyPair()
	recs, errs = s.PresentAll([]Presentation{{ID: "twice", Key: k.Pub}, {ID: "twice", Key: k.Pub}, {ID: "twice", Key: k2.Pub}}, true, nil)
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || recs[0].State != StateAccepted || !recs[1].Created.Equal(recs[0].Created) ||
		recs[2].State != StateDenied || s.Commits() != 3 {
		t.Fatalf("repeated id: %+v %v, %d commits", recs, errs, s.Commits())
	}
	// Nothing to write, nothing to commit.
	if _, errs = s.PresentAll(ps[:10], false, nil); errs[0] != nil || s.Commits() != 3 {
		t.Fatalf("known keys: %v, %d commits", errs[0], s.Commits())
	}
}

// Readers do not wait for a group commit's syncs, and see none of its records before they are
// durable; writers wait for it.
func TestReadersDoNotWaitForCommit(t *testing.T) {
	s, _ := OpenKeyStore(t.TempDir())
	k, _ := GenerateKeyPair()
	s.Present(Presentation{ID: "old", Key: k.Pub}, true, nil)
	syncing, release := make(chan struct{}), make(chan struct{})
	s.syncing = func() { close(syncing); <-release }
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.PresentAll([]Presentation{{ID: "new1", Key: k.Pub}, {ID: "new2", Key: k.Pub}}, true, nil)
	}()
	<-syncing
	read := make(chan string)
	go func() {
		_, old := s.Get("old")
		_, staged := s.Get("new1")
		read <- fmt.Sprintf("old %v, new1 %v, %d accepted, %d listed", old, staged, len(s.Accepted()), len(s.List()))
	}()
	select {
	case got := <-read:
		if got != "old true, new1 false, 1 accepted, 1 listed" {
			t.Fatalf("during the commit: %s", got)
		}
	case <-done:
		t.Fatal("the commit finished before its sync was released")
	case <-time.After(10 * time.Second):
		t.Fatal("a reader waited for the group commit's syncs")
	}
	// A writer started now acts on the committed records: rejecting new* finds both.
	rejected := make(chan []string)
	go func() { ids, _ := s.Reject("new*"); rejected <- ids }()
	close(release)
	<-done
	if ids := <-rejected; len(ids) != 2 {
		t.Fatalf("a writer did not wait for the group commit: rejected %v", ids)
	}
	if m, ok := s.Get("new1"); !ok || m.State != StateRejected || len(s.Accepted()) != 1 {
		t.Fatalf("after the commit: %+v %v, %d accepted", m, ok, len(s.Accepted()))
	}
}
