package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/pki"
)

// Returns that reach two masters of one database at once, some of them twice (a minion that
// failed over sends its return again), are each recorded once, the delivery of every one is
// marked returned with it, and concurrent returns commit in batches, not one transaction each.
// A return the database refuses fails alone.
func TestPostgresReturnsBatched(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	var ms []*store.Postgres
	for range 2 {
		s, err := store.OpenPostgres(context.Background(), url, masterKey.Pub, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		ms = append(ms, s)
	}
	const n = 400
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("r%03d", i)
	}
	for _, jid := range []string{"j1", "j2"} { // a return is recorded with its job only
		if err := ms[0].Jobs().PutJob(jobstore.Job{JID: jid, Minions: ids, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ms[0].Deliveries().Add("j1", ids, time.Now().Add(time.Minute), []byte("signed")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	added := map[string]int{}
	var wg sync.WaitGroup
	send := func(s *store.Postgres, id string, data string) {
		defer wg.Done()
		ok, err := s.Jobs().AddReturn(jobstore.Return{JID: "j1", Minion: id, Data: []byte(data), Received: time.Now()})
		if err != nil {
			t.Errorf("return of %s: %v", id, err)
			return
		}
		if ok {
			mu.Lock()
			added[id]++
			mu.Unlock()
		}
	}
	// The returns queue while both stores hold their commits, as they do while a commit is
	// in flight.
	var queued []func() int
	var releases []func()
	for _, s := range ms {
		release, q := store.HoldReturns(s)
		defer release() // on a failure too: the stores' Close waits for their committers
		releases = append(releases, release)
		queued = append(queued, q)
	}
	sent := 0
	for i, id := range ids {
		wg.Add(1)
		sent++
		go send(ms[i%2], id, `{"n":1}`)
		if i%4 == 0 { // again, to the other master and to the same one
			wg.Add(2)
			sent += 2
			go send(ms[(i+1)%2], id, `{"n":2}`)
			go send(ms[i%2], id, `{"n":3}`)
		}
	}
	tb.WaitFor(t, time.Minute, "every return queued", func() bool { return queued[0]()+queued[1]() == sent })
	for _, release := range releases {
		release()
	}
	wg.Wait()
	for _, id := range ids {
		if added[id] != 1 {
			t.Fatalf("return of %s recorded %d times", id, added[id])
		}
	}
	rs, err := ms[1].Jobs().Returns("j1")
	if err != nil || len(rs) != n {
		t.Fatalf("%d returns stored for %d minions: %v", len(rs), n, err)
	}
	// Recording the return marked the delivery: nothing is owed any more.
	for _, id := range ids {
		if p, err := ms[1].Deliveries().Pending(id, time.Now().Add(time.Hour), 0); err != nil || len(p) != 0 {
			t.Fatalf("%s still owed %v after its return (%v)", id, p, err)
		}
	}
	if signed, _, err := ms[0].Deliveries().Job("j1"); err != nil || signed != nil {
		t.Fatalf("job still delivered after every return: %q %v", signed, err)
	}
	commits := store.ReturnCommits(ms[0]) + store.ReturnCommits(ms[1])
	t.Logf("%d returns (%d sent) in %d commits", n, sent, commits)
	if commits == 0 || commits > 4 {
		t.Fatalf("%d returns committed in %d transactions: not batched", sent, commits)
	}
	// A return PostgreSQL refuses (a job id that is not UTF-8) fails alone: the others of its
	// batch are recorded.
	release, q := store.HoldReturns(ms[0])
	defer release()
	errs := make(chan error, 11)
	for i := range 11 {
		jid := "j2"
		if i == 5 {
			jid = "j\xff"
		}
		go func() {
			_, err := ms[0].Jobs().AddReturn(jobstore.Return{JID: jid, Minion: fmt.Sprintf("b%d", i), Data: []byte(`{}`)})
			if (err == nil) != (jid == "j2") {
				err = fmt.Errorf("return for job %q: %v", jid, err)
			} else {
				err = nil
			}
			errs <- err
		}()
	}
	tb.WaitFor(t, time.Minute, "the batch queued", func() bool { return q() >= 10 })
	release()
	for range 11 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if rs, err := ms[1].Jobs().Returns("j2"); err != nil || len(rs) != 10 {
		t.Fatalf("%d returns of the batch recorded, want 10 (%v)", len(rs), err)
	}
}

// The key lookups of concurrent callers (every request of a minion makes one) are answered by
// one query per batch, each with its own record, and a lookup sees a change committed before
// it was asked.
func TestPostgresKeyLookupsBatched(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	s, err := store.OpenPostgres(context.Background(), url, masterKey.Pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	keys := map[string]pki.PublicKey{}
	var ps []pki.Presentation
	for i := range 100 {
		k, _ := pki.GenerateKeyPair()
		id := fmt.Sprintf("k%03d", i)
		keys[id] = k.Pub
		ps = append(ps, pki.Presentation{ID: id, Key: k.Pub})
	}
	if _, errs := s.Keys().PresentAll(ps, true, nil); errs != nil {
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	l := s.Keys().(store.KeyLookup)
	before := store.KeyReadRuns(s)
	release, queued := store.HoldKeyReads(s)
	defer release() // on a failure too: the store's Close waits for its reader
	var wg sync.WaitGroup
	for round := range 5 {
		for i := range 120 { // 100 known, 20 not
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("k%03d", (i+round)%120)
				rec, ok, err := l.Lookup(id)
				want, known := keys[id]
				if err != nil || ok != known || (known && (rec.ID != id || !rec.Key.Equal(want) || rec.State != pki.StateAccepted)) {
					t.Errorf("lookup %s: %s %v %v %v", id, rec.ID, rec.State, ok, err)
				}
			}()
		}
	}
	tb.WaitFor(t, time.Minute, "every lookup queued", func() bool { return queued() == 600 })
	release()
	wg.Wait()
	runs := store.KeyReadRuns(s) - before
	t.Logf("600 concurrent lookups in %d queries", runs)
	if runs > 3 {
		t.Fatalf("600 concurrent lookups took %d queries: not batched", runs)
	}
	if _, err := s.Keys().Reject("k007"); err != nil {
		t.Fatal(err)
	}
	if rec, ok, err := l.Lookup("k007"); err != nil || !ok || rec.State != pki.StateRejected {
		t.Fatalf("lookup after reject: %v %v %v", rec.State, ok, err)
	}
}
