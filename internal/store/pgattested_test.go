package store_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/store"
)

// Updates of one minion's attested record from two masters are atomic (none is lost), and an
// update of one minion does not wait for another minion's: facts reports of thousands of
// minions connecting at once waited for each other's commits, holding pooled connections.
func TestPostgresAttestedLocksPerMinion(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	var as []store.Attested
	for range 2 {
		s, err := store.OpenPostgres(context.Background(), url, masterKey.Pub, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		as = append(as, s.Attested())
	}
	incr := func(old []byte) ([]byte, error) {
		n, _ := strconv.Atoi(string(old))
		return []byte(strconv.Itoa(n + 1)), nil
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := as[i%2].Update("counted", incr); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if v, err := as[0].Get("counted"); err != nil || string(v) != "40" {
		t.Fatalf("40 concurrent updates left %q (%v)", v, err)
	}
	// m1 is in the middle of updating "slow" until "fast" has been updated on m2.
	fastDone := make(chan struct{})
	slowErr := make(chan error, 1)
	go func() {
		slowErr <- as[0].Update("slow", func(old []byte) ([]byte, error) {
			select {
			case <-fastDone:
			case <-time.After(5 * time.Second):
			}
			return []byte("1"), nil
		})
	}()
	time.Sleep(100 * time.Millisecond) // m1 holds its lock
	start := time.Now()
	if err := as[1].Update("fast", incr); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	close(fastDone)
	if err := <-slowErr; err != nil {
		t.Fatal(err)
	}
	if took > 2*time.Second {
		t.Fatalf("an update of one minion waited %s for another minion's", took)
	}
}
