package jobstore

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fill records n jobs of minions minions each, every minion with a return, created one second
// apart from start; it writes in large transactions (the benchmark's store is millions of returns).
func fill(t testing.TB, s *Bolt, start time.Time, first, n, minions int) []string {
	t.Helper()
	var jids []string
	sig := make([]byte, 64)
	const perTx = 2000
	for lo := 0; lo < n; lo += perTx {
		err := s.db.Update(func(tx *bolt.Tx) error {
			jb, rb := tx.Bucket(bJobs), tx.Bucket(bReturns)
			for i := lo; i < min(lo+perTx, n); i++ {
				created := start.Add(time.Duration(first+i) * time.Second)
				jid := fmt.Sprintf("%s%06d-%06x", created.UTC().Format("20060102150405"), 0, first+i)
				ids := make([]string, minions)
				for k := range ids {
					ids[k] = fmt.Sprintf("web-%03d", k)
				}
				data, _ := json.Marshal(Job{JID: jid, Kind: "apply", Target: "web*", Minions: ids, Digest: "sha256:0123456789abcdef",
					Created: created, Expires: created.Add(time.Minute), Bundle: "base", StartedBy: "uid 0"})
				if err := jb.Put([]byte(jid), data); err != nil {
					return err
				}
				ok, size := 0, 0
				for _, id := range ids {
					ret := fmt.Sprintf(`{"jid":%q,"minion":%q,"success":%v,"report":{"changed":0,"unchanged":12,"duration_ms":840}}`, jid, id, id != "web-007")
					r, _ := json.Marshal(Return{JID: jid, Minion: id, Data: []byte(ret), Sig: sig, Received: created})
					if err := rb.Put([]byte(jid+"\x00"+id), r); err != nil {
						return err
					}
					size += len(jid) + 1 + len(id) + len(r)
					if id != "web-007" {
						ok++
					}
				}
				// The counts AddReturn keeps (TestOutcomeCounts checks that it does).
				var v [outcomeLen]byte
				binary.BigEndian.PutUint32(v[:4], uint32(minions))
				binary.BigEndian.PutUint32(v[4:8], uint32(ok))
				binary.BigEndian.PutUint64(v[8:], uint64(size))
				if err := tx.Bucket(bOutcomes).Put([]byte(jid), v[:]); err != nil {
					return err
				}
				jids = append(jids, jid)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return jids
}

func countReturns(t *testing.T, s *Bolt) int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bReturns).Stats().KeyN; return nil })
	return n
}

func TestPrune(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "master.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	jids := fill(t, s, start, 0, 1200, 3)

	// By count: the newest 1000 stay (more than one prune transaction's worth go).
	n, err := s.Prune(time.Time{}, 1000, 0)
	if err != nil || n != 200 {
		t.Fatalf("prune to 1000: deleted %d, %v", n, err)
	}
	jobs, _ := s.Jobs(0)
	if len(jobs) != 1000 || jobs[len(jobs)-1].JID != jids[200] || jobs[0].JID != jids[1199] {
		t.Fatalf("after the count prune: %d jobs, oldest %s", len(jobs), jobs[len(jobs)-1].JID)
	}
	if got := countReturns(t, s); got != 3000 {
		t.Fatalf("%d returns left, want 3000 (the pruned jobs' returns go with them)", got)
	}
	if _, err := s.Job(jids[199]); err != ErrNotFound {
		t.Fatalf("a pruned job is still there: %v", err)
	}
	if rs, _ := s.Returns(jids[199]); len(rs) != 0 {
		t.Fatalf("a pruned job's returns are still there: %d", len(rs))
	}

	// By age: created before start+700s (jobs 200..699) go; a count limit above the rest does nothing.
	n, err = s.Prune(start.Add(700*time.Second), 5000, 0)
	if err != nil || n != 500 {
		t.Fatalf("prune by age: deleted %d, %v", n, err)
	}
	jobs, _ = s.Jobs(0)
	if len(jobs) != 500 || jobs[len(jobs)-1].JID != jids[700] {
		t.Fatalf("after the age prune: %d jobs, oldest %s", len(jobs), jobs[len(jobs)-1].JID)
	}
	if n, _ := s.Prune(time.Time{}, 0, 0); n != 0 {
		t.Fatalf("prune with no limits deleted %d", n)
	}
}

// TestPruneReusesPages: a store that keeps the newest jobs while new ones come does not grow
// without bound: bbolt reuses the pages freed by a prune.
func TestPruneReusesPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	const keep = 1000
	fill(t, s, start, 0, keep, 10)
	if _, err := s.Prune(time.Time{}, keep, 0); err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for round := 1; round <= 6; round++ {
		fill(t, s, start, round*keep, keep, 10)
		if _, err := s.Prune(time.Time{}, keep, 0); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, size())
	}
	t.Logf("file size after each round of %d new jobs and a prune to %d: %v", keep, keep, sizes)
	// The first rounds may still grow the file (the freelist settles); after that it holds.
	if last, settled := sizes[len(sizes)-1], sizes[2]; last > settled+settled/10 {
		t.Fatalf("the file keeps growing with a constant number of jobs: %v", sizes)
	}
}

// BenchmarkJobsList is `brine jobs list` against a store of 100,000 jobs of 50 minions (5
// million returns): the newest 50 jobs with their outcomes, as master.JobsList reads them.
func BenchmarkJobsList(b *testing.B) {
	jobs, minions := 100_000, 50
	if testing.Short() {
		jobs = 2000
	}
	s, err := OpenBolt(filepath.Join(b.TempDir(), "master.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	t0 := time.Now()
	fill(b, s, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 0, jobs, minions)
	b.Logf("filled %d jobs of %d minions in %s", jobs, minions, time.Since(t0).Round(time.Millisecond))
	b.Run("list50", func(b *testing.B) {
		for b.Loop() {
			list, err := s.Jobs(50)
			if err != nil || len(list) != 50 {
				b.Fatal(len(list), err)
			}
			failed := 0
			for _, j := range list {
				o, ok, err := s.Outcome(j.JID)
				if err != nil || !ok || o.Returned != minions {
					b.Fatal(o, ok, err)
				}
				failed += o.Returned - o.Succeeded
			}
			if failed != 50 {
				b.Fatalf("%d failed returns, want 50", failed)
			}
		}
	})
	// What job_history_mb costs each prune: one walk of the jobs and a lookup of each one's
	// outcome, when nothing is to be deleted (HistoryBytes is the same walk).
	b.Run("history-bytes", func(b *testing.B) {
		for b.Loop() {
			if n, err := s.HistoryBytes(); err != nil || n == 0 {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("prune-within-bytes", func(b *testing.B) {
		for b.Loop() {
			if n, err := s.Prune(time.Time{}, 0, 1<<50); err != nil || n != 0 {
				b.Fatal(n, err)
			}
		}
	})
}

// AddReturn counts each job's returns once per minion, and Prune forgets the counts.
func TestOutcomeCounts(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "master.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	jid := "20260101000000000001-aaaaaa"
	s.PutJob(Job{JID: jid, Minions: []string{"a", "b", "c"}, Created: time.Now()})
	if _, ok, _ := s.Outcome(jid); ok {
		t.Fatal("counts before any return")
	}
	for _, r := range []Return{
		{JID: jid, Minion: "a", Data: []byte(`{"success":true}`)},
		{JID: jid, Minion: "a", Data: []byte(`{"success":true}`)}, // a redelivery
		{JID: jid, Minion: "b", Data: []byte(`{"success":false}`)},
		{JID: jid, Minion: "c", Data: []byte(`not json`)},
	} {
		if _, err := s.AddReturn(r); err != nil {
			t.Fatal(err)
		}
	}
	if o, ok, err := s.Outcome(jid); !ok || err != nil || o != (Outcome{Returned: 3, Succeeded: 1}) {
		t.Fatalf("counts %+v %v %v, want 3 returned, 1 succeeded", o, ok, err)
	}
	if n, _ := s.Prune(time.Now().Add(time.Hour), 0, 0); n != 1 {
		t.Fatalf("pruned %d", n)
	}
	if _, ok, _ := s.Outcome(jid); ok {
		t.Fatal("counts of a pruned job kept")
	}
}

// A store of the release before the history's bytes were counted (8-byte outcomes, no form in
// bMeta): opening it counts them from the returns, as AddReturn would have, keeps the outcome
// counts, and deletes the returns whose job is gone (no prune would reach them).
func TestOpenCountsHistoryBytesOfOldStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	jids := fill(t, s, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 0, 30, 5)
	want, err := s.HistoryBytes()
	if err != nil || want == 0 {
		t.Fatalf("history bytes %d %v", want, err)
	}
	wantOutcome, _, _ := s.Outcome(jids[3])
	err = s.db.Update(func(tx *bolt.Tx) error {
		o := tx.Bucket(bOutcomes)
		var old [][2][]byte
		_ = o.ForEach(func(k, v []byte) error {
			old = append(old, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v[:8]...)})
			return nil
		})
		for _, kv := range old {
			if err := o.Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		if err := o.Delete([]byte(jids[4])); err != nil { // a job of before the counts
			return err
		}
		if err := tx.Bucket(bReturns).Put([]byte("20250101000000000000-gone\x00a"), []byte(`{}`)); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Delete(keyOutcomesForm)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.HistoryBytes(); n >= want {
		t.Fatalf("the old form counts %d bytes of returns", n)
	}
	s.Close()
	if s, err = OpenBolt(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.HistoryBytes(); err != nil || got != want {
		t.Fatalf("history bytes %d after the upgrade (%v), want %d", got, err, want)
	}
	for _, jid := range jids[3:5] {
		if o, ok, _ := s.Outcome(jid); !ok || o != wantOutcome {
			t.Fatalf("outcome of %s after the upgrade: %+v %v, want %+v", jid, o, ok, wantOutcome)
		}
	}
	if rs, _ := s.Returns("20250101000000000000-gone"); len(rs) != 0 {
		t.Fatal("a return of a job that is gone is kept")
	}
}
