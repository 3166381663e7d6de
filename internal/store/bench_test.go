package store_test

import (
	"context"
	"fmt"
	"runtime"
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
