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
	for i, id := range ids {
		wg.Add(1)
		go send(ms[i%2], id, `{"n":1}`)
		if i%4 == 0 { // again, to the other master and to the same one
			wg.Add(2)
			go send(ms[(i+1)%2], id, `{"n":2}`)
			go send(ms[i%2], id, `{"n":3}`)
		}
	}
	// A return PostgreSQL refuses (a job id that is not UTF-8) fails alone.
	if _, err := ms[0].Jobs().AddReturn(jobstore.Return{JID: "j\xff", Minion: "r000", Data: []byte(`{}`)}); err == nil {
		t.Error("a return with an invalid job id recorded")
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
	t.Logf("%d returns (%d sent) in %d commits", n, n+n/2, commits)
	if commits == 0 || commits > n/4 {
		t.Fatalf("%d returns committed in %d transactions: not batched", n+n/2, commits)
	}
}
