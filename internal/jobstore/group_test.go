package jobstore

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	bolt "go.etcd.io/bbolt"
)

// queued is the number of writes waiting for the committer.
func (g *groupCommit) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// holdCommitter starts a write that blocks the committer inside its transaction until the
// returned release is called; done is closed when that write has returned.
func holdCommitter(t *testing.T, s *Bolt) (release func(), done chan struct{}) {
	t.Helper()
	entered, gate, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_ = s.group.write(func(tx *bolt.Tx) error {
			select {
			case <-entered:
			default:
				close(entered)
			}
			<-gate
			return nil
		})
	}()
	<-entered
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return release, done
}

// Writes that arrive while a commit is in progress go together into the next transaction.
func TestGroupCommitGroupsConcurrentReturns(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "master.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutJob(Job{JID: "20260101000000000001", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	release, held := holdCommitter(t, s)
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.AddReturn(Return{JID: "20260101000000000001", Minion: fmt.Sprintf("m%02d", i), Data: []byte(`{"success":true}`)})
		}()
	}
	tb.WaitFor(t, 10*time.Second, "the returns queued behind the held commit", func() bool { return s.group.queued() == n })
	before := s.Commits()
	release()
	<-held
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("return %d: %v", i, err)
		}
	}
	if got := s.Commits() - before; got != 2 { // the held write's, then the 50 returns'
		t.Fatalf("%d commits after the release, want 2", got)
	}
	rs, _ := s.Returns("20260101000000000001")
	if o, ok, _ := s.Outcome("20260101000000000001"); len(rs) != n || !ok || o != (Outcome{Returned: n, Succeeded: n}) {
		t.Fatalf("%d returns, outcome %+v %v", len(rs), o, ok)
	}
}

// A write that fails (or panics) gets its error; the others of its group are committed, and
// the committer goes on.
func TestGroupCommitFailureStaysWithItsWrite(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "master.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	release, held := holdCommitter(t, s)
	boom := errors.New("boom")
	fns := []func(*bolt.Tx) error{
		func(tx *bolt.Tx) error { return tx.Bucket(bFacts).Put([]byte("a"), []byte("1")) },
		func(tx *bolt.Tx) error { return boom },
		func(tx *bolt.Tx) error { panic("bad write") },
		func(tx *bolt.Tx) error { return tx.Bucket(bFacts).Put([]byte("b"), []byte("2")) },
	}
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.group.write(fn) }()
	}
	tb.WaitFor(t, 10*time.Second, "four writes queued", func() bool { return s.group.queued() == len(fns) })
	release()
	<-held
	wg.Wait()
	if errs[0] != nil || !errors.Is(errs[1], boom) || errs[2] == nil || errs[3] != nil {
		t.Fatalf("errors %v, want nil, boom, a panic's, nil", errs)
	}
	f, _ := s.AllFacts()
	if string(f["a"]) != "1" || string(f["b"]) != "2" {
		t.Fatalf("the good writes of the group were lost: %q", f)
	}
	if err := s.PutFacts("c", []byte("3")); err != nil {
		t.Fatalf("the committer stopped after a failure: %v", err)
	}
}

// Close commits what is queued, then refuses writes; what it committed is there on reopen.
func TestGroupCommitClose(t *testing.T) {
	p := filepath.Join(t.TempDir(), "master.db")
	s, err := OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	release, held := holdCommitter(t, s)
	queued := make(chan error, 1)
	go func() { queued <- s.PutFacts("a", []byte("1")) }()
	tb.WaitFor(t, 10*time.Second, "a write queued", func() bool { return s.group.queued() == 1 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	tb.WaitFor(t, 10*time.Second, "Close to begin", func() bool {
		s.group.mu.Lock()
		defer s.group.mu.Unlock()
		return s.group.closed
	})
	if err := s.PutFacts("b", []byte("2")); !errors.Is(err, errClosed) {
		t.Fatalf("a write after Close: %v", err)
	}
	release()
	<-held
	if err := <-queued; err != nil {
		t.Fatalf("a write queued before Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	s, err = OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if f, _ := s.AllFacts(); string(f["a"]) != "1" || f["b"] != nil {
		t.Fatalf("facts after reopen: %q", f)
	}
}
