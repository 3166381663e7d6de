package store_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/store"
)

// benchStores opens a files store and PostgreSQL stores (the default pool of 16 connections,
// and 64) on a durable cluster (fsync on, as bbolt fsyncs every commit), for write benchmarks.
func benchStores(b *testing.B) map[string]store.Store {
	b.Helper()
	out := map[string]store.Store{}
	f, err := store.OpenFiles(b.TempDir(), masterKey.Pub)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	out["files"] = f
	if err := pgtest.Available(); err != nil {
		b.Skip(err)
	}
	c, err := pgtest.StartWith(pgtest.Options{Durable: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	url := c.NewDatabase(b)
	for name, u := range map[string]string{"postgres": url, "postgres-64conns": url + "&pool_max_conns=64"} {
		p, err := store.OpenPostgres(context.Background(), u, masterKey.Pub, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		out[name] = p
	}
	return out
}

// BenchmarkStoreWrites measures job and return writes as the master makes them: returns from
// 64 request workers at once (the master's requestWorkers), jobs one at a time.
//
//	go test -run '^$' -bench BenchmarkStoreWrites -benchtime 5000x ./internal/store
func BenchmarkStoreWrites(b *testing.B) {
	stores := benchStores(b)
	for _, name := range []string{"files", "postgres", "postgres-64conns"} {
		s := stores[name]
		b.Run(name+"/job", func(b *testing.B) {
			for i := range b.N {
				j := jobstore.Job{JID: fmt.Sprintf("b%s-%09d", name, i), Kind: "ping", Target: "*", Minions: []string{"a", "b"}, Created: time.Now(), Expires: time.Now().Add(time.Minute)}
				if err := s.Jobs().PutJob(j); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/return-64-workers", func(b *testing.B) {
			var n atomic.Int64
			if err := s.Jobs().PutJob(jobstore.Job{JID: "bench", Kind: "ping", Created: time.Now()}); err != nil {
				b.Fatal(err)
			}
			data := []byte(`{"jid":"x","minion":"m","success":true,"report":{"resources":[]}}`)
			b.SetParallelism(64 / max(1, testingProcs()))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					r := jobstore.Return{JID: "bench", Minion: fmt.Sprintf("m%09d", i), Data: data, Sig: make([]byte, 64), Received: time.Now()}
					if _, err := s.Jobs().AddReturn(r); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkHistoryPrune measures what the master does every minute (and every 5 s while it
// publishes) to hold the job history to job_retention, job_max and job_history_mb: a prune that
// deletes nothing, and the history's byte count, on 100,000 jobs of 20 returns each (the job_max
// default) in both stores.
//
//	go test -run '^$' -bench BenchmarkHistoryPrune -benchtime 20x ./internal/store
func BenchmarkHistoryPrune(b *testing.B) {
	const jobs, returns = 100000, 20
	stores := benchStores(b)
	data := []byte(`{"jid":"x","minion":"m","success":true,"report":{"resources":[]}}`)
	minions := make([]string, returns)
	for i := range minions {
		minions[i] = fmt.Sprintf("web%03d", i)
	}
	start := time.Now().Add(-time.Hour)
	for _, name := range []string{"files", "postgres"} {
		js := stores[name].Jobs()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i := range jobs {
			created := start.Add(time.Duration(i) * time.Millisecond)
			jid := fmt.Sprintf("%s-%06x", created.UTC().Format("20060102150405.000000"), i)
			if err := js.PutJob(jobstore.Job{JID: jid, Kind: "ping", Target: "*", Minions: minions, Created: created, Expires: created.Add(time.Minute)}); err != nil {
				b.Fatal(err)
			}
			for _, m := range minions {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					if _, err := js.AddReturn(jobstore.Return{JID: jid, Minion: m, Data: data, Received: created}); err != nil {
						b.Error(err)
					}
				}()
			}
		}
		wg.Wait()
		b.Run(name+"/prune-nothing", func(b *testing.B) {
			for range b.N {
				if n, err := js.Prune(start.Add(-time.Hour), jobs, 8<<30); err != nil || n != 0 {
					b.Fatal(n, err)
				}
			}
		})
		b.Run(name+"/history-bytes", func(b *testing.B) {
			for range b.N {
				if _, err := js.HistoryBytes(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
