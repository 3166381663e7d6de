package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/pki"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// backend opens stores on one backing: open returns a new handle each call (for PostgreSQL a new
// connection pool, as a second master would have; for files the same store, which one master
// owns).
type backend struct {
	name string
	open func(t *testing.T) (open func() store.Store)
}

var masterKey = func() *pki.KeyPair { k, _ := pki.GenerateKeyPair(); return k }()

func backends() []backend {
	return []backend{
		{"files", func(t *testing.T) func() store.Store {
			s, err := store.OpenFiles(t.TempDir(), masterKey.Pub)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return func() store.Store { return s }
		}},
		{"postgres", func(t *testing.T) func() store.Store {
			url := pgtest.Shared(t).NewDatabase(t)
			return func() store.Store {
				s, err := store.OpenPostgres(context.Background(), url, masterKey.Pub, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
		}},
	}
}

// TestContract runs one suite against every implementation.
func TestContract(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range []struct {
				name string
				f    func(t *testing.T, open func() store.Store)
			}{
				{"keys", testKeys},
				{"pending-limits", testPendingLimits},
				{"present-all", testPresentAll},
				{"tokens", testTokens},
				{"redeem-decisions", testRedeemDecisions},
				{"redeem-concurrent", testRedeemConcurrent},
				{"jobs", testJobs},
				{"prune", testPrune},
				{"history-bytes", testHistoryBytes},
				{"outcome", testOutcome},
				{"deliveries", testDeliveries},
				{"attested", testAttested},
				{"presence", testPresence},
				{"rounds", testRounds},
				{"drifts", testDrifts},
				{"drifts-concurrent", testDriftsConcurrent},
				{"keys-concurrent", testKeysConcurrent},
				{"identity", testIdentity},
			} {
				t.Run(c.name, func(t *testing.T) { c.f(t, b.open(t)) })
			}
		})
	}
}

func newKey(t *testing.T) pki.PublicKey {
	k, err := pki.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return k.Pub
}

func testKeys(t *testing.T, open func() store.Store) {
	ks := open().Keys()
	a, b := newKey(t), newKey(t)
	m, err := ks.Present(pki.Presentation{ID: "web1", Key: a, Source: "10.0.0.1", Requested: []string{"web", "admin"}}, false, nil)
	if err != nil || m.State != pki.StatePending || !reflect.DeepEqual(m.Requested, []string{"admin", "web"}) || m.Groups != nil {
		t.Fatalf("present: %+v %v", m, err)
	}
	if again, err := ks.Present(pki.Presentation{ID: "web1", Key: a}, false, nil); err != nil || again.State != pki.StatePending || !again.Created.Equal(m.Created) {
		t.Fatalf("present again: %+v %v", again, err)
	}
	// Another key for a known id is denied and does not replace the record.
	d, err := ks.Present(pki.Presentation{ID: "web1", Key: b, Source: "10.0.0.9"}, false, nil)
	if err != nil || d.State != pki.StateDenied {
		t.Fatalf("other key: %+v %v", d, err)
	}
	if g, ok := ks.Get("web1"); !ok || !g.Key.Equal(a) || g.State != pki.StatePending {
		t.Fatalf("get after denied: %+v %v", g, ok)
	}
	// A denied presentation already on record is not written again, even when allow says no.
	if d2, err := ks.Present(pki.Presentation{ID: "web1", Key: b}, false, func() bool { return false }); err != nil || d2.State != pki.StateDenied {
		t.Fatalf("denied again: %+v %v", d2, err)
	}
	if _, err := ks.Present(pki.Presentation{ID: "web2", Key: b}, false, func() bool { return false }); !errors.Is(err, pki.ErrEnrolLimited) {
		t.Fatalf("allow=false: %v", err)
	}
	if _, ok := ks.Get("web2"); ok {
		t.Fatal("a refused presentation wrote a record")
	}
	if _, err := ks.Present(pki.Presentation{ID: "Bad/ID", Key: b}, false, nil); err == nil {
		t.Fatal("invalid id accepted")
	}
	if m, err := ks.Present(pki.Presentation{ID: "db1", Key: b}, true, nil); err != nil || m.State != pki.StateAccepted || m.Groups != nil {
		t.Fatalf("auto accept: %+v %v", m, err)
	}
	list := ks.List()
	var got []string
	for _, m := range list {
		got = append(got, string(m.State)+":"+m.ID)
	}
	if want := []string{"accepted:db1", "denied:web1", "pending:web1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("list = %v, want %v", got, want)
	}
	// Accept by fingerprint: the wrong one accepts nothing.
	if recs, err := ks.AcceptKeys("web*", []string{"web"}, false, b.Fingerprint()); err != nil || len(recs) != 0 {
		t.Fatalf("accept wrong finger: %v %v", recs, err)
	}
	recs, err := ks.AcceptKeys("web*", []string{"web", "web", ""}, false, a.Fingerprint())
	if err != nil || len(recs) != 1 || recs[0].State != pki.StateAccepted || !reflect.DeepEqual(recs[0].Groups, []string{"web"}) {
		t.Fatalf("accept: %+v %v", recs, err)
	}
	if acc := ks.Accepted(); len(acc) != 2 || !reflect.DeepEqual(acc["web1"].Requested, []string{"admin", "web"}) {
		t.Fatalf("accepted: %+v", acc)
	}
	if ids, err := ks.SetGroups("*", []string{"b", "a"}); err != nil || !reflect.DeepEqual(ids, []string{"db1", "web1"}) {
		t.Fatalf("set groups: %v %v", ids, err)
	}
	if g, _ := ks.Get("db1"); !reflect.DeepEqual(g.Groups, []string{"a", "b"}) {
		t.Fatalf("groups: %v", g.Groups)
	}
	if ids, err := ks.Reject("db*"); err != nil || !reflect.DeepEqual(ids, []string{"db1"}) {
		t.Fatalf("reject: %v %v", ids, err)
	}
	if ids, _ := ks.Accept("db1", nil, false); len(ids) != 0 {
		t.Fatal("accept without includeRejected accepted a rejected key")
	}
	if ids, _ := ks.Accept("db1", nil, true); !reflect.DeepEqual(ids, []string{"db1"}) {
		t.Fatalf("accept rejected: %v", ids)
	}
	if g, _ := ks.Get("db1"); !reflect.DeepEqual(g.Groups, []string{"a", "b"}) {
		t.Fatalf("accept with nil groups changed them: %v", g.Groups)
	}
	if ids, err := ks.Delete("web*"); err != nil || !reflect.DeepEqual(ids, []string{"web1"}) {
		t.Fatalf("delete: %v %v", ids, err)
	}
	if len(ks.List()) != 1 {
		t.Fatalf("denied record not deleted: %+v", ks.List())
	}
	// A deleted minion that comes back is new and pending.
	if m, _ := ks.Present(pki.Presentation{ID: "web1", Key: b}, false, nil); m.State != pki.StatePending {
		t.Fatalf("came back: %+v", m)
	}
}

// PresentAll decides like Present called once per presentation, in order: the bounds count
// the batch's own new keys, a refusal is its presentation's alone, allow is asked only for
// writes, and a repeated id is decided on the record an earlier one made.
func testPresentAll(t *testing.T, open func() store.Store) {
	ks := open().Keys()
	ks.SetLimits(pki.PendingLimits{Max: 5, PerSource: 3, TTL: time.Hour})
	k, other := newKey(t), newKey(t)
	var ps []pki.Presentation
	for i := range 5 {
		ps = append(ps, pki.Presentation{ID: fmt.Sprintf("a%d", i), Key: newKey(t), Source: "s1"})
	}
	ps = append(ps,
		pki.Presentation{ID: "b0", Key: k, Source: "s2"},
		pki.Presentation{ID: "b0", Key: k, Source: "s2"},     // again: the same record, no write
		pki.Presentation{ID: "b0", Key: other, Source: "s3"}, // another key: denied
		pki.Presentation{ID: "limited", Key: k, Source: "s4"},
		pki.Presentation{ID: "c0", Key: newKey(t), Source: "s5"},
		pki.Presentation{ID: "c1", Key: newKey(t), Source: "s5"}, // the store is full by now
		pki.Presentation{ID: "Bad/ID", Key: k, Source: "s5"},
	)
	var asked []string
	recs, errs := ks.PresentAll(ps, false, func(p pki.Presentation) bool {
		asked = append(asked, p.ID)
		return p.ID != "limited"
	})
	if len(recs) != len(ps) || len(errs) != len(ps) {
		t.Fatalf("%d records and %d errors for %d presentations", len(recs), len(errs), len(ps))
	}
	want := []struct {
		state pki.KeyState
		err   error
	}{
		{pki.StatePending, nil}, {pki.StatePending, nil}, {pki.StatePending, nil},
		{"", pki.ErrSourceFull}, {"", pki.ErrSourceFull},
		{pki.StatePending, nil}, {pki.StatePending, nil}, {pki.StateDenied, nil},
		{"", pki.ErrEnrolLimited}, {pki.StatePending, nil}, {"", pki.ErrPendingFull}, {"", nil},
	}
	for i, w := range want {
		switch {
		case ps[i].ID == "Bad/ID":
			if errs[i] == nil {
				t.Fatalf("%s: an invalid id was accepted", ps[i].ID)
			}
		case w.err != nil && !errors.Is(errs[i], w.err), w.err == nil && errs[i] != nil, recs[i].State != w.state:
			t.Fatalf("presentation %d (%s): %q %v, want %q %v", i, ps[i].ID, recs[i].State, errs[i], w.state, w.err)
		}
	}
	if !recs[6].Created.Equal(recs[5].Created) {
		t.Fatal("a repeated presentation made a new record")
	}
	// Refused by a bound: allow was not asked (a refusal takes nothing from the rate limit).
	if got := strings.Join(asked, ","); got != "a0,a1,a2,b0,b0,limited,c0" {
		t.Fatalf("allow asked for %s", got)
	}
	if total, src := ks.Pending("s1"); total != 5 || src != 3 {
		t.Fatalf("pending = %d, %d from s1", total, src)
	}
	if g, ok := ks.Get("b0"); !ok || !g.Key.Equal(k) || g.State != pki.StatePending {
		t.Fatalf("b0 after the denied presentation: %+v %v", g, ok)
	}
	if n := len(ks.List()); n != 6 {
		t.Fatalf("%d records, want 6 (5 pending, 1 denied)", n)
	}
}

func testPendingLimits(t *testing.T, open func() store.Store) {
	ks := open().Keys()
	ks.SetLimits(pki.PendingLimits{Max: 3, PerSource: 2, TTL: time.Hour})
	for i := range 2 {
		if _, err := ks.Present(pki.Presentation{ID: fmt.Sprintf("a%d", i), Key: newKey(t), Source: "s1"}, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ks.Present(pki.Presentation{ID: "a9", Key: newKey(t), Source: "s1"}, false, nil); !errors.Is(err, pki.ErrSourceFull) {
		t.Fatalf("per source: %v", err)
	}
	if _, err := ks.Present(pki.Presentation{ID: "b0", Key: newKey(t), Source: "s2"}, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Present(pki.Presentation{ID: "c0", Key: newKey(t), Source: "s3"}, false, nil); !errors.Is(err, pki.ErrPendingFull) {
		t.Fatalf("total: %v", err)
	}
	if total, src := ks.Pending("s1"); total != 3 || src != 2 {
		t.Fatalf("pending = %d, %d", total, src)
	}
	// auto accept is not bounded by the pending limits.
	if _, err := ks.Present(pki.Presentation{ID: "c1", Key: newKey(t), Source: "s1"}, true, nil); err != nil {
		t.Fatal(err)
	}
	// Old pending keys make room when the store is full.
	ks.SetLimits(pki.PendingLimits{Max: 3, PerSource: 2, TTL: time.Nanosecond})
	if _, err := ks.Present(pki.Presentation{ID: "c2", Key: newKey(t), Source: "s3"}, false, nil); err != nil {
		t.Fatalf("after ttl: %v", err)
	}
	if total, _ := ks.Pending("s3"); total != 1 {
		t.Fatalf("pending after prune = %d", total)
	}
}

func testTokens(t *testing.T, open func() store.Store) {
	s := open()
	ts := s.Tokens()
	if _, _, err := ts.Create(pki.TokenRequest{TTL: 0}); err == nil {
		t.Fatal("zero ttl")
	}
	if _, _, err := ts.Create(pki.TokenRequest{ID: "BAD ID", TTL: time.Minute}); err == nil {
		t.Fatal("bad id pattern")
	}
	tok, rec, err := ts.Create(pki.TokenRequest{ID: "web*", Groups: []string{"web"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if f, err := pki.TokenMasterFinger(tok); err != nil || pki.NormalizeFingerprint(f) != pki.NormalizeFingerprint(masterKey.Pub.Fingerprint()) {
		t.Fatalf("token finger %q %v", f, err)
	}
	now := time.Now()
	if got, err := ts.Check(tok, "web3", now); err != nil || got.Hash != rec.Hash || !reflect.DeepEqual(got.Groups, []string{"web"}) {
		t.Fatalf("check: %+v %v", got, err)
	}
	if _, err := ts.Check(tok, "db1", now); !errors.Is(err, pki.ErrTokenID) {
		t.Fatalf("other id: %v", err)
	}
	if _, err := ts.Check(tok+"x", "web3", now); !errors.Is(err, pki.ErrTokenInvalid) {
		t.Fatalf("forged: %v", err)
	}
	if l, err := ts.List(); err != nil || len(l) != 1 || l[0].Hash != rec.Hash {
		t.Fatalf("list: %+v %v", l, err)
	}
	ks := s.Keys()
	k := newKey(t)
	m, spent, err := ks.Redeem(pki.Presentation{ID: "web3", Key: k, Source: "s"}, tok, now)
	if err != nil || !spent || m.State != pki.StateAccepted || !reflect.DeepEqual(m.Groups, []string{"web"}) {
		t.Fatalf("redeem: %+v %v %v", m, spent, err)
	}
	if g, _ := ks.Get("web3"); g.State != pki.StateAccepted {
		t.Fatalf("after redeem: %+v", g)
	}
	if _, _, err := ks.Redeem(pki.Presentation{ID: "web4", Key: newKey(t)}, tok, now); !errors.Is(err, pki.ErrTokenInvalid) {
		t.Fatalf("second use: %v", err)
	}
	// An expired token enrols nobody and is removed.
	old, _, _ := ts.Create(pki.TokenRequest{TTL: time.Minute})
	if _, _, err := ks.Redeem(pki.Presentation{ID: "x1", Key: newKey(t)}, old, now.Add(2*time.Minute)); !errors.Is(err, pki.ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
	if l, _ := ts.List(); len(l) != 0 {
		t.Fatalf("expired token kept: %+v", l)
	}
	if _, ok := ks.Get("x1"); ok {
		t.Fatal("an expired token enrolled")
	}
}

func testRedeemDecisions(t *testing.T, open func() store.Store) {
	s := open()
	ks, ts := s.Keys(), s.Tokens()
	now := time.Now()
	web, _, _ := ts.Create(pki.TokenRequest{ID: "web*", Groups: []string{"web"}, TTL: time.Hour})
	// A rejected id stays rejected.
	rk := newKey(t)
	ks.Present(pki.Presentation{ID: "web0", Key: rk}, false, nil)
	ks.Reject("web0")
	for _, k := range []pki.PublicKey{rk, newKey(t)} {
		if _, spent, err := ks.Redeem(pki.Presentation{ID: "web0", Key: k}, web, now); !errors.Is(err, pki.ErrKeyRejected) || spent {
			t.Fatalf("rejected: %v %v", spent, err)
		}
	}
	// An id accepted with another key stays so; with this key it is returned as it is.
	held := newKey(t)
	ks.Present(pki.Presentation{ID: "web9", Key: held}, true, nil)
	if _, spent, err := ks.Redeem(pki.Presentation{ID: "web9", Key: newKey(t)}, web, now); !errors.Is(err, pki.ErrKeyHeld) || spent {
		t.Fatalf("held: %v %v", spent, err)
	}
	if m, spent, err := ks.Redeem(pki.Presentation{ID: "web9", Key: held}, web, now); err != nil || spent || m.State != pki.StateAccepted {
		t.Fatalf("same key: %+v %v %v", m, spent, err)
	}
	// A squatter's pending key is taken over and kept as denied.
	squat, owner := newKey(t), newKey(t)
	ks.Present(pki.Presentation{ID: "web1", Key: squat, Source: "evil"}, false, nil)
	m, spent, err := ks.Redeem(pki.Presentation{ID: "web1", Key: owner, Source: "good"}, web, now)
	if err != nil || !spent || !m.Key.Equal(owner) || m.Source != "good" {
		t.Fatalf("takeover: %+v %v %v", m, spent, err)
	}
	var denied *pki.MinionKey
	for _, r := range ks.List() {
		if r.ID == "web1" && r.State == pki.StateDenied {
			denied = &r
		}
	}
	if denied == nil || !denied.Key.Equal(squat) || denied.Groups != nil {
		t.Fatalf("squatter not denied: %+v", ks.List())
	}
	if _, _, err := ks.Redeem(pki.Presentation{ID: "web2", Key: newKey(t)}, web, now); !errors.Is(err, pki.ErrTokenInvalid) {
		t.Fatalf("spent token: %v", err)
	}
}

// testRedeemConcurrent presents one token many times at once, through several handles on the
// store (several masters, for PostgreSQL): exactly one minion is enrolled.
func testRedeemConcurrent(t *testing.T, open func() store.Store) {
	handles := []store.Store{open(), open(), open()}
	tok, _, err := handles[0].Tokens().Create(pki.TokenRequest{Groups: []string{"g"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const n = 24
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []string
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			id := fmt.Sprintf("m%d", i)
			m, spent, err := handles[i%len(handles)].Keys().Redeem(pki.Presentation{ID: id, Key: newKey(t)}, tok, time.Now())
			if err == nil && spent && m.State == pki.StateAccepted {
				mu.Lock()
				won = append(won, id)
				mu.Unlock()
			} else if err != nil && !errors.Is(err, pki.ErrTokenInvalid) {
				t.Errorf("redeem %s: %v", id, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(won) != 1 {
		t.Fatalf("%d minions enrolled with one token: %v", len(won), won)
	}
	if acc := handles[1].Keys().Accepted(); len(acc) != 1 {
		t.Fatalf("accepted: %v", acc)
	}
}

func testJobs(t *testing.T, open func() store.Store) {
	js := open().Jobs()
	base := time.Now().UTC().Truncate(time.Millisecond)
	for i := range 5 {
		j := jobstore.Job{JID: fmt.Sprintf("2026%04d", i), Kind: "ping", Target: "*", Minions: []string{"a", "b"}, Created: base, Expires: base.Add(time.Minute)}
		if err := js.PutJob(j); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Job("nope"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
	j, err := js.Job("20260002")
	if err != nil || !reflect.DeepEqual(j.Minions, []string{"a", "b"}) || !j.Created.Equal(base) {
		t.Fatalf("job: %+v %v", j, err)
	}
	jobs, err := js.Jobs(2)
	if err != nil || len(jobs) != 2 || jobs[0].JID != "20260004" || jobs[1].JID != "20260003" {
		t.Fatalf("jobs: %+v %v", jobs, err)
	}
	if all, _ := js.Jobs(0); len(all) != 5 {
		t.Fatalf("all jobs: %d", len(all))
	}
	r := jobstore.Return{JID: "20260002", Minion: "a", Data: []byte(`{"ok":true}`), Sig: []byte{1, 2}, Received: base}
	for i, want := range []bool{true, false} {
		if added, err := js.AddReturn(r); err != nil || added != want {
			t.Fatalf("add return %d: %v %v", i, added, err)
		}
	}
	js.AddReturn(jobstore.Return{JID: "20260002", Minion: "b", Data: []byte(`{}`), Received: base})
	js.AddReturn(jobstore.Return{JID: "20260003", Minion: "a", Data: []byte(`{}`), Received: base})
	rs, err := js.Returns("20260002")
	if err != nil || len(rs) != 2 || string(rs[0].Data) != `{"ok":true}` || rs[0].Minion != "a" || string(rs[0].Sig) != "\x01\x02" {
		t.Fatalf("returns: %+v %v", rs, err)
	}
	// ReturnsOf reads the named minions' returns only: recorded ones, by id, each once.
	for _, c := range []struct {
		minions []string
		want    string
	}{{[]string{"b", "a", "b"}, "a b"}, {[]string{"b", "zz"}, "b"}, {[]string{"zz"}, ""}, {nil, ""}} {
		rs, err := js.ReturnsOf("20260002", c.minions)
		var got []string
		for _, r := range rs {
			got = append(got, r.Minion)
		}
		if err != nil || strings.Join(got, " ") != c.want {
			t.Fatalf("returns of %v: %v %v, want %q", c.minions, got, err, c.want)
		}
	}
	// Concurrent deliveries of one return record it once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := js.AddReturn(jobstore.Return{JID: "20260004", Minion: "c", Data: []byte(`{}`)}); err == nil && ok {
				mu.Lock()
				added++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if added != 1 {
		t.Fatalf("one return recorded %d times", added)
	}
	if err := js.PutFacts("a", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	js.PutFacts("b", []byte(`{}`))
	js.PutFacts("a", []byte(`{"x":2}`))
	if f, err := js.AllFacts(); err != nil || len(f) != 2 || string(f["a"]) != `{"x":2}` {
		t.Fatalf("facts: %v %v", f, err)
	}
	js.DeleteFacts("a")
	if f, _ := js.AllFacts(); len(f) != 1 {
		t.Fatalf("facts after delete: %v", f)
	}
}

func testDeliveries(t *testing.T, open func() store.Store) {
	d := open().Deliveries()
	now := time.Now()
	if err := d.Add("j1", []string{"a", "b"}, now.Add(time.Minute), []byte("signed1")); err != nil {
		t.Fatal(err)
	}
	if ad, known, err := d.Addressed("j1", "a"); err != nil || !ad || !known {
		t.Fatalf("addressed: %v %v %v", ad, known, err)
	}
	if ad, known, _ := d.Addressed("j1", "z"); ad || !known {
		t.Fatalf("not addressed: %v %v", ad, known)
	}
	if _, known, _ := d.Addressed("j9", "a"); known {
		t.Fatal("unknown job known")
	}
	later := time.Now().Add(time.Second)
	if p, _ := d.Pending("a", time.Now(), time.Hour); len(p) != 0 {
		t.Fatalf("pending within grace: %v", p)
	}
	if p, err := d.Pending("a", later, 0); err != nil || !reflect.DeepEqual(p, []string{"j1"}) {
		t.Fatalf("pending: %v %v", p, err)
	}
	if s, err := d.Resendable("j1", "a", later, time.Minute); err != nil || string(s) != "signed1" {
		t.Fatalf("resendable: %q %v", s, err)
	}
	if s, _ := d.Resendable("j1", "a", later.Add(time.Second), time.Minute); s != nil {
		t.Fatal("resent twice within the interval")
	}
	if s, _ := d.Resendable("j1", "b", now.Add(2*time.Minute), 0); s != nil {
		t.Fatal("resendable after expiry")
	}
	if s, _ := d.Resendable("j1", "z", later, time.Minute); s != nil {
		t.Fatal("resendable for a minion not addressed")
	}
	if signed, ids, err := d.Job("j1"); err != nil || string(signed) != "signed1" || len(ids) != 2 {
		t.Fatalf("job: %q %v %v", signed, ids, err)
	}
	d.MarkReturned("j1", "a")
	if p, _ := d.Pending("a", later, 0); len(p) != 0 {
		t.Fatalf("pending after return: %v", p)
	}
	if s, _ := d.Resendable("j1", "a", later.Add(time.Hour), 0); s != nil {
		t.Fatal("resendable after return")
	}
	if p, _ := d.Pending("b", now.Add(2*time.Minute), 0); len(p) != 0 {
		t.Fatalf("pending after expiry: %v", p)
	}
	d.MarkReturned("j1", "b")
	if signed, _, _ := d.Job("j1"); signed != nil {
		t.Fatal("job kept after everyone returned")
	}
	if _, known, _ := d.Addressed("j1", "a"); !known {
		t.Fatal("job forgotten right after its returns (late returns are checked against it)")
	}
}

func testAttested(t *testing.T, open func() store.Store) {
	a := open().Attested()
	if v, err := a.Get("m1"); err != nil || v != nil {
		t.Fatalf("empty: %q %v", v, err)
	}
	if err := a.Update("m1", func(old []byte) ([]byte, error) { return []byte(`{"a":1}`), nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.Update("m1", func(old []byte) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := a.Update("m1", func(old []byte) ([]byte, error) { return []byte("x"), boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if v, _ := a.Get("m1"); string(v) != `{"a":1}` {
		t.Fatalf("get: %q", v)
	}
	if err := a.Update("../x", func([]byte) ([]byte, error) { return []byte("{}"), nil }); err == nil {
		t.Fatal("invalid id written")
	}
	a.Delete("m1")
	if v, _ := a.Get("m1"); v != nil {
		t.Fatalf("after delete: %q", v)
	}
}

func testPresence(t *testing.T, open func() store.Store) {
	p := open().Presence()
	now := time.Now()
	p.SetPresence("a", "m1", now.Add(time.Minute))
	p.SetPresence("b", "m1", now.Add(-time.Second))
	p.SetPresence("a", "m2", now.Add(time.Minute))
	got, err := p.Presence(now)
	if err != nil || len(got) != 1 || got["a"].Master != "m2" {
		t.Fatalf("presence: %+v %v", got, err)
	}
	// Back on m1 at once (within the second in which a write of the same lease is skipped).
	p.SetPresence("a", "m1", now.Add(time.Minute))
	if got, _ := p.Presence(now); got["a"].Master != "m1" {
		t.Fatalf("a minion back on its first master: %+v", got)
	}
	p.SetPresence("a", "m2", now.Add(time.Minute))
	// A master's renewal extends its own leases, takes the expired and the missing ones, and
	// leaves a lease another master holds: a ("m2") and c (m3) stay, b and d come to m1.
	p.SetPresence("c", "m3", now.Add(time.Minute))
	p.SetPresence("e", "m1", now.Add(time.Second))
	if err := p.RenewPresence("m1", []string{"a", "b", "c", "d", "e"}, now.Add(2*time.Minute), now); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.Presence(now); got["a"].Master != "m2" || got["c"].Master != "m3" {
		t.Fatalf("a renewal took another master's leases: %+v", got)
	}
	got, err = p.Presence(now.Add(90 * time.Second))
	want := map[string]string{"b": "m1", "d": "m1", "e": "m1"}
	if err != nil || len(got) != len(want) {
		t.Fatalf("after a renewal: %+v %v", got, err)
	}
	for id, m := range want {
		if got[id].Master != m {
			t.Fatalf("after a renewal, %s: %+v", id, got[id])
		}
	}
}

// Schedule rounds: of many claimants on two handles (two masters' pools) at once, exactly one
// gets each round; the next is claimable only when the last is over and its period has passed,
// or when its master stopped finishing it (stale).
func testRounds(t *testing.T, open func() store.Store) {
	hs := []store.Rounds{open().Rounds(), open().Rounds()}
	claimAll := func(name string, every, stale time.Duration) (won []store.Round, lost []time.Duration) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r, ok, wait, err := hs[i%2].ClaimRound(name, fmt.Sprintf("m%d", i), every, stale)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if ok {
					won = append(won, r)
				} else {
					lost = append(lost, wait)
				}
			}()
		}
		close(start)
		wg.Wait()
		return won, lost
	}
	if r, err := hs[0].LastRound("keep"); err != nil || r != (store.Round{}) {
		t.Fatalf("no round yet: %+v %v", r, err)
	}
	won, lost := claimAll("keep", 0, time.Hour)
	if len(won) != 1 || won[0].N != 1 || len(lost) != 15 {
		t.Fatalf("first round: %d claimed (%+v)", len(won), won)
	}
	// Round 1 is not over: nobody gets round 2, however short the period.
	if won2, _ := claimAll("keep", 0, time.Hour); len(won2) != 0 {
		t.Fatalf("a round claimed while the last one runs: %+v", won2)
	}
	if r, err := hs[1].LastRound("keep"); err != nil || r.N != 1 || r.Master != won[0].Master || r.Done {
		t.Fatalf("last round: %+v %v", r, err)
	}
	if err := hs[1].FinishRound("keep", 1, 0); err != nil {
		t.Fatal(err)
	}
	won, _ = claimAll("keep", 0, time.Hour)
	if len(won) != 1 || won[0].N != 2 {
		t.Fatalf("second round: %+v", won)
	}
	// Finishing an older round changes nothing.
	hs[0].FinishRound("keep", 1, 0)
	if r, _ := hs[0].LastRound("keep"); r.N != 2 || r.Done {
		t.Fatalf("after finishing round 1 again: %+v", r)
	}
	// Over, but its period (an hour from its end) has not passed: nobody, and they are told how long.
	hs[0].FinishRound("keep", 2, time.Hour)
	won, lost = claimAll("keep", time.Hour, time.Hour)
	if len(won) != 0 || len(lost) != 16 || lost[0] < 59*time.Minute || lost[0] > time.Hour {
		t.Fatalf("within the period: %+v, waits %v", won, lost)
	}
	// A round whose master never finishes it is taken over once stale.
	if _, ok, _, err := hs[0].ClaimRound("other", "m1", 0, 0); !ok || err != nil {
		t.Fatalf("other: %v %v", ok, err)
	}
	if r, ok, _, err := hs[1].ClaimRound("other", "m2", 0, 0); !ok || err != nil || r.N != 2 || r.Master != "m2" {
		t.Fatalf("stale round not taken over: %+v %v %v", r, ok, err)
	}
}

// Drift checks: the last check of each minion, read through another handle (another master's
// pool); an older check does not replace a newer one; invalid input records nothing; a round
// larger than one statement is recorded whole.
func testDrifts(t *testing.T, open func() store.Store) {
	a, b := open().Drifts(), open().Drifts()
	if got, err := b.Drifts([]string{"d1"}); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	rec := func(id string, n int) []byte { return []byte(fmt.Sprintf(`{"minion":%q,"n":%d}`, id, n)) }
	if err := a.PutDrifts(map[string]store.DriftCheck{
		"d1": {Checked: t0.Add(time.Minute), Record: rec("d1", 1)},
		"d2": {Checked: t0.Add(time.Minute), Record: rec("d2", 1)},
	}); err != nil {
		t.Fatal(err)
	}
	want := func(h store.Drifts, id string, n int, at time.Time) {
		t.Helper()
		got, err := h.Drifts([]string{id, "nobody"})
		if err != nil || len(got) != 1 || string(got[id].Record) != string(rec(id, n)) || !got[id].Checked.Equal(at) {
			t.Fatalf("%s: %+v %v, want check %d at %v", id, got, err, n, at)
		}
	}
	want(b, "d1", 1, t0.Add(time.Minute))
	// A round that finished late (an older check) leaves the newer one; a newer one replaces it.
	if err := b.PutDrifts(map[string]store.DriftCheck{"d1": {Checked: t0, Record: rec("d1", 0)}}); err != nil {
		t.Fatal(err)
	}
	want(a, "d1", 1, t0.Add(time.Minute))
	if err := b.PutDrifts(map[string]store.DriftCheck{"d1": {Checked: t0.Add(2 * time.Minute), Record: rec("d1", 2)}}); err != nil {
		t.Fatal(err)
	}
	want(a, "d1", 2, t0.Add(2*time.Minute))
	// An invalid id or a record that is not JSON fails the call, and nothing of it is recorded.
	for _, bad := range []map[string]store.DriftCheck{
		{"d3": {Checked: t0, Record: rec("d3", 1)}, "../x": {Checked: t0, Record: rec("x", 1)}},
		{"d3": {Checked: t0, Record: []byte("{nope")}},
		{"d3": {Checked: t0}},
	} {
		if err := a.PutDrifts(bad); err == nil {
			t.Fatalf("recorded %v", bad)
		}
	}
	if got, _ := b.Drifts([]string{"d3", "../x"}); len(got) != 0 {
		t.Fatalf("a refused round left %v", got)
	}
	if got, err := b.Drifts(nil); err != nil || len(got) != 0 {
		t.Fatalf("no minions: %v %v", got, err)
	}
	if err := b.DeleteDrift("d1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Drifts([]string{"d1", "d2"}); len(got) != 1 || got["d2"].Record == nil {
		t.Fatalf("after deleting d1: %v", got)
	}
	// One round of 1,200 minions (several statements on PostgreSQL).
	round := map[string]store.DriftCheck{}
	var ids []string
	for i := range 1200 {
		id := fmt.Sprintf("r%04d", i)
		ids = append(ids, id)
		round[id] = store.DriftCheck{Checked: t0, Record: rec(id, i)}
	}
	if err := a.PutDrifts(round); err != nil {
		t.Fatal(err)
	}
	got, err := b.Drifts(ids)
	if err != nil || len(got) != len(ids) {
		t.Fatalf("a round of %d: %d recorded, %v", len(ids), len(got), err)
	}
	for i, id := range ids {
		if string(got[id].Record) != string(rec(id, i)) {
			t.Fatalf("%s: %s", id, got[id].Record)
		}
	}
}

// Masters record checks of one minion at the same moment, in any order: the newest stays.
func testDriftsConcurrent(t *testing.T, open func() store.Store) {
	hs := []store.Drifts{open().Drifts(), open().Drifts()}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	const n = 24
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Every writer writes both minions, the newest check of c1 first and of c2 last.
			c := map[string]store.DriftCheck{
				"c1": {Checked: t0.Add(time.Duration(n-i) * time.Second), Record: []byte(fmt.Sprint(n - i))},
				"c2": {Checked: t0.Add(time.Duration(i) * time.Second), Record: []byte(fmt.Sprint(i))},
			}
			if err := hs[i%2].PutDrifts(c); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	got, err := hs[0].Drifts([]string{"c1", "c2"})
	if err != nil || string(got["c1"].Record) != fmt.Sprint(n) || string(got["c2"].Record) != fmt.Sprint(n-1) {
		t.Fatalf("after concurrent rounds: c1 %s, c2 %s, %v (want %d and %d)", got["c1"].Record, got["c2"].Record, err, n, n-1)
	}
}

// Operators on two masters accept and reject the same pending keys at the same moment: every
// key ends in one state that one of them set, each transition is reported by exactly the
// operator whose write it was, and the record is whole (not half of each).
func testKeysConcurrent(t *testing.T, open func() store.Store) {
	a, b := open().Keys(), open().Keys()
	const n = 40
	for i := range n {
		if _, err := a.Present(pki.Presentation{ID: fmt.Sprintf("k%02d", i), Key: newKey(t), Source: "10.0.0.1"}, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	var accepted, rejected []string
	var grouped [][]string
	var mu sync.Mutex
	for i := range n {
		id := fmt.Sprintf("k%02d", i)
		wg.Add(3)
		go func() {
			defer wg.Done()
			<-start
			ids, err := a.Accept(id, []string{"web"}, false)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			accepted = append(accepted, ids...)
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			<-start
			ids, err := b.Reject(id)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			rejected = append(rejected, ids...)
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			<-start
			ids, err := b.SetGroups(id, []string{"db"})
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			grouped = append(grouped, ids)
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	isIn := func(xs []string, x string) bool { return slices.Contains(xs, x) }
	for i := range n {
		id := fmt.Sprintf("k%02d", i)
		ra, _ := a.Get(id)
		rb, _ := b.Get(id)
		if ra.State != rb.State || !reflect.DeepEqual(ra.Groups, rb.Groups) || !ra.Updated.Equal(rb.Updated) {
			t.Fatalf("%s: the masters disagree: %+v / %+v", id, ra, rb)
		}
		switch ra.State {
		case pki.StateRejected:
			if !isIn(rejected, id) {
				t.Fatalf("%s rejected, but no reject reported it", id)
			}
		default:
			// Accept takes a pending key only and reject takes any: in whichever order they
			// ran, the key ends rejected. Another state is an update lost to a concurrent one
			// (a stale read written back).
			t.Fatalf("%s ended %s (accept reported it: %v, reject: %v)", id, ra.State, isIn(accepted, id), isIn(rejected, id))
		}
		if !reflect.DeepEqual(ra.Groups, []string{"web"}) && !reflect.DeepEqual(ra.Groups, []string{"db"}) && ra.Groups != nil {
			t.Fatalf("%s: groups %v are neither operator's", id, ra.Groups)
		}
	}
}

func testIdentity(t *testing.T, open func() store.Store) {
	s := open()
	if err := s.ClaimIdentity(masterKey.Pub.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if err := open().ClaimIdentity(masterKey.Pub.Fingerprint()); err != nil {
		t.Fatalf("same key again: %v", err)
	}
	err := open().ClaimIdentity(newKey(t).Fingerprint())
	if _, shared := s.(store.Notifier); !shared {
		// One master's files: its key is beside them; replacing it is the operator's call.
		if err != nil {
			t.Fatalf("files store refused a new key: %v", err)
		}
		return
	}
	if !errors.Is(err, store.ErrOtherIdentity) {
		t.Fatalf("other key: %v", err)
	}
}

// TestPostgresMigrations: a second start applies nothing; a schema newer than the binary is
// refused.
func TestPostgresMigrations(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx := context.Background()
	// Masters starting at once apply each migration once.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := store.OpenPostgres(ctx, url, masterKey.Pub, nil)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n, v int
	if err := conn.QueryRow(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &v); err != nil || n != store.SchemaVersion() || v != store.SchemaVersion() {
		t.Fatalf("schema_migrations: %d rows, version %d, %v", n, v, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, store.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if s, err := store.OpenPostgres(ctx, url, masterKey.Pub, nil); err == nil {
		s.Close()
		t.Fatal("a newer schema was not refused")
	}
}

// TestPostgresNotify: a job added and a return recorded through one handle are told to a
// listener of another, and not to the handle's own listener.
func TestPostgresNotify(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func() *store.Postgres {
		s, err := store.OpenPostgres(ctx, url, masterKey.Pub, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	evs := make(chan store.Event, 16)
	own := make(chan store.Event, 16)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.Listen(ctx, func(e store.Event) { evs <- e }) }()
	go func() { defer wg.Done(); a.Listen(ctx, func(e store.Event) { own <- e }) }()
	defer wg.Wait()
	defer cancel()
	// LISTEN takes effect asynchronously: publish until the first event arrives.
	deadline := time.After(30 * time.Second)
	jid := 0
	var got store.Event
wait:
	for {
		jid++
		if err := a.Deliveries().Add(fmt.Sprintf("j%d", jid), []string{"m"}, time.Now().Add(time.Minute), []byte("s")); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-evs:
			break wait
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("no job event")
		}
	}
	if got.Kind != store.EventJob {
		t.Fatalf("event %+v", got)
	}
	if err := a.Jobs().PutJob(jobstore.Job{JID: "j1", Minions: []string{"m"}, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Jobs().AddReturn(jobstore.Return{JID: "j1", Minion: "m", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	a.Jobs().AddReturn(jobstore.Return{JID: "j1", Minion: "m", Data: []byte("{}")}) // a duplicate tells nobody
	for {
		select {
		case e := <-evs:
			if e.Kind == store.EventJob {
				continue
			}
			if e.Kind != store.EventReturn || e.JID != "j1" || len(e.Minions) != 1 || e.Minions[0] != "m" {
				t.Fatalf("event %+v", e)
			}
			select {
			case e := <-evs:
				if e.Kind == store.EventReturn {
					t.Fatalf("duplicate return told: %+v", e)
				}
			case <-time.After(300 * time.Millisecond):
			}
			select {
			case e := <-own:
				t.Fatalf("a handle was told its own event: %+v", e)
			default:
			}
			return
		case <-deadline:
			t.Fatal("no return event")
		}
	}
}

// testPrune: job_max and job_retention delete the oldest jobs with their returns, in batches.
func testPrune(t *testing.T, open func() store.Store) {
	js := open().Jobs()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var jids []string
	for i := range 1200 {
		created := start.Add(time.Duration(i) * time.Second)
		jid := fmt.Sprintf("%s000000-%06x", created.Format("20060102150405"), i)
		jids = append(jids, jid)
		if err := js.PutJob(jobstore.Job{JID: jid, Kind: "ping", Minions: []string{"a"}, Created: created, Expires: created.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			js.AddReturn(jobstore.Return{JID: jid, Minion: "a", Data: []byte(`{"success":true}`), Received: created})
		}
	}
	if n, err := js.Prune(time.Time{}, 1000, 0); err != nil || n != 200 {
		t.Fatalf("prune to 1000: %d %v", n, err)
	}
	all, _ := js.Jobs(0)
	if len(all) != 1000 || all[len(all)-1].JID != jids[200] {
		t.Fatalf("after the count prune: %d jobs, oldest %s", len(all), all[len(all)-1].JID)
	}
	if rs, _ := js.Returns(jids[100]); len(rs) != 0 {
		t.Fatal("a pruned job's returns are kept")
	}
	if rs, _ := js.Returns(jids[200]); len(rs) != 1 {
		t.Fatal("a kept job's return is gone")
	}
	if n, err := js.Prune(start.Add(700*time.Second), 5000, 0); err != nil || n != 500 {
		t.Fatalf("prune by age: %d %v", n, err)
	}
	all, _ = js.Jobs(0)
	if len(all) != 500 || all[len(all)-1].JID != jids[700] {
		t.Fatalf("after the age prune: %d jobs", len(all))
	}
	if n, _ := js.Prune(time.Time{}, 0, 0); n != 0 {
		t.Fatalf("prune without limits deleted %d", n)
	}
}

// testHistoryBytes: the store counts the bytes of the history as it is written (a job's record
// and its returns', not a duplicate, not a return of an unknown job), and Prune's byte bound
// deletes the oldest jobs until the rest fit.
func testHistoryBytes(t *testing.T, open func() store.Store) {
	js := open().Jobs()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	data := []byte(`{"success":true,"error":"` + strings.Repeat("x", 10<<10) + `"}`)
	var jids []string
	var after []int64 // the history's bytes after each job and its returns
	last := int64(0)
	for i := range 10 {
		created := start.Add(time.Duration(i) * time.Second)
		jid := fmt.Sprintf("%s000000-%06x", created.Format("20060102150405"), i)
		jids = append(jids, jid)
		if err := js.PutJob(jobstore.Job{JID: jid, Kind: "apply", Minions: []string{"a", "b", "c"}, Created: created, Expires: created.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"a", "b", "c", "a"} { // the second "a" is a redelivery
			if _, err := js.AddReturn(jobstore.Return{JID: jid, Minion: m, Data: data, Received: created}); err != nil {
				t.Fatal(err)
			}
		}
		n, err := js.HistoryBytes()
		if err != nil {
			t.Fatal(err)
		}
		// Three returns of data counted (base64 in the stored record: 4/3 of it), the redelivery
		// not: a job is its three returns and a record far smaller than one of them.
		if grew := n - last; grew < 4*int64(len(data)) || grew > 9*int64(len(data))/2 {
			t.Fatalf("job %d: the history grew by %d bytes with three returns of %d", i, grew, len(data))
		}
		after = append(after, n)
		last = n
	}
	// A return of a job that is not recorded is not stored, nor counted.
	if added, err := js.AddReturn(jobstore.Return{JID: "20250101000000000000-ffffff", Minion: "a", Data: data}); added || !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("return of an unknown job: %v %v, want %v", added, err, jobstore.ErrNotFound)
	}
	if rs, _ := js.Returns("20250101000000000000-ffffff"); len(rs) != 0 {
		t.Fatal("a return of an unknown job is stored")
	}
	if n, _ := js.HistoryBytes(); n != last {
		t.Fatalf("the history is %d bytes after a refused return, was %d", n, last)
	}
	if n, err := js.Prune(time.Time{}, 0, 0); err != nil || n != 0 {
		t.Fatalf("prune without a byte bound: %d %v", n, err)
	}
	// A bound of exactly the newest four jobs' bytes keeps them and deletes the six before.
	budget := last - after[5]
	if n, err := js.Prune(time.Time{}, 0, budget); err != nil || n != 6 {
		t.Fatalf("prune to %d bytes: deleted %d %v, want 6", budget, n, err)
	}
	if n, _ := js.HistoryBytes(); n != budget {
		t.Fatalf("the history is %d bytes after the prune, want %d", n, budget)
	}
	all, _ := js.Jobs(0)
	if len(all) != 4 || all[len(all)-1].JID != jids[6] {
		t.Fatalf("after the byte prune: %d jobs", len(all))
	}
	if rs, _ := js.Returns(jids[5]); len(rs) != 0 {
		t.Fatal("a pruned job's returns are kept")
	}
	if rs, _ := js.Returns(jids[6]); len(rs) != 3 {
		t.Fatal("a kept job's returns are gone")
	}
	// One large return to the newest job pushes the oldest ones out, down to the bound.
	big := []byte(`{"error":"` + strings.Repeat("y", 25<<10) + `"}`)
	if _, err := js.AddReturn(jobstore.Return{JID: jids[9], Minion: "d", Data: big}); err != nil {
		t.Fatal(err)
	}
	if n, err := js.Prune(time.Time{}, 0, budget); err != nil || n != 1 {
		t.Fatalf("prune after a large return: deleted %d %v, want 1", n, err)
	}
	if n, _ := js.HistoryBytes(); n > budget {
		t.Fatalf("the history is %d bytes, over its bound %d", n, budget)
	}
	if all, _ := js.Jobs(0); len(all) != 3 || all[len(all)-1].JID != jids[7] {
		t.Fatalf("after the large return's prune: %d jobs", len(all))
	}
}

// testOutcome: a job's returns counted by the store for `brine jobs list`.
func testOutcome(t *testing.T, open func() store.Store) {
	js := open().Jobs()
	oc, ok := js.(jobstore.OutcomeCounter)
	if !ok {
		t.Fatal("the job store does not count outcomes")
	}
	jid := "20260101000000000001-aaaaaa"
	js.PutJob(jobstore.Job{JID: jid, Minions: []string{"a", "b", "c", "d"}, Created: time.Now()})
	if _, ok, err := oc.Outcome(jid); ok || err != nil {
		t.Fatalf("counts before any return: %v %v", ok, err)
	}
	for _, r := range []jobstore.Return{
		{JID: jid, Minion: "a", Data: []byte(`{"minion":"a","success":true}`)},
		{JID: jid, Minion: "a", Data: []byte(`{"minion":"a","success":true}`)}, // a redelivery
		{JID: jid, Minion: "b", Data: []byte(`{"success":false}`)},
		{JID: jid, Minion: "c", Data: []byte(`{"success":"true"}`)}, // not a boolean
	} {
		if _, err := js.AddReturn(r); err != nil {
			t.Fatal(err)
		}
	}
	if o, ok, err := oc.Outcome(jid); !ok || err != nil || o != (jobstore.Outcome{Returned: 3, Succeeded: 1}) {
		t.Fatalf("counts %+v %v %v, want 3 returned, 1 succeeded", o, ok, err)
	}
	// Data a minion signed that is valid JSON for Go but not for PostgreSQL's jsonb (invalid
	// UTF-8, \u0000): no error; counted right, or left to the caller (ok false).
	hostile := "20260101000000000002-bbbbbb"
	js.PutJob(jobstore.Job{JID: hostile, Minions: []string{"a", "b"}, Created: time.Now()})
	js.AddReturn(jobstore.Return{JID: hostile, Minion: "a", Data: []byte("{\"success\":true,\"error\":\"\xff\xfe\"}")})
	js.AddReturn(jobstore.Return{JID: hostile, Minion: "b", Data: []byte(`{"success":false,"error":"\u0000"}`)})
	if o, ok, err := oc.Outcome(hostile); err != nil || (ok && o != (jobstore.Outcome{Returned: 2, Succeeded: 1})) {
		t.Fatalf("hostile data: %+v %v %v", o, ok, err)
	}
	if rs, err := js.Returns(hostile); err != nil || len(rs) != 2 {
		t.Fatalf("the returns of the hostile job: %d %v", len(rs), err)
	}
}
