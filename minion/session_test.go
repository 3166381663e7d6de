package minion

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

// A minion authenticates against a real master: it waits while its key is pending, gets a
// session once it is accepted (the master and the minion then hold the same session key), and
// refuses a master whose key is not the one it pinned, or not the one master_finger names.
func TestSessionAuthAgainstMaster(t *testing.T) {
	ms := master.TestMaster(t)
	mn := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "auth1", "")
	tb.WaitFor(t, 5*time.Second, "pending", func() bool { return strings.Contains(mn.Status(), wire.StatusPending) })
	if sk, _ := mn.keys.session(); sk != nil {
		t.Fatal("a pending minion holds a session key")
	}
	accept(t, ms, mn.Minion, []string{"web"})
	sk, gen := mn.keys.session()
	if id, ok := ms.SessionKeyID("auth1"); !ok || sk == nil || id != sk.ID {
		t.Fatalf("session key: master %x %v, minion %+v", id, ok, sk)
	}
	if gen != ms.KeyGeneration() {
		t.Fatalf("key generation %x, master's %x", gen, ms.KeyGeneration())
	}
	if mk := mn.keys.pinned(); mk == nil || !mk.Equal(ms.Key()) {
		t.Fatal("the master's key is not pinned")
	}
	if k, _ := ms.Keys().Get("auth1"); len(k.Groups) != 1 || k.Groups[0] != "web" {
		t.Fatalf("groups: %+v", k)
	}

	// Another master (another key) at the address of the pinned one.
	other := master.TestMaster(t)
	mn.stop()
	moved := runMinion(t, other.PublishAddr(), other.RequestAddr(), "auth1", mn.cfg.DataDir)
	tb.WaitFor(t, 5*time.Second, "the other master refused", func() bool { return moved.Status() == ErrMasterKeyChanged.Error() })
	if _, ok := other.Keys().Get("auth1"); ok {
		t.Fatal("the minion presented itself to a master it must refuse")
	}

	// master_finger names another key: refused before anything is pinned.
	wrong := mustKey(t).Pub.Fingerprint()
	fresh := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "auth2", "", func(c *Config) { c.MasterFinger = wrong })
	tb.WaitFor(t, 5*time.Second, "finger refusal", func() bool { return fresh.Status() == ErrMasterKeyChanged.Error() })
	if fresh.keys.pinned() != nil {
		t.Fatal("a refused master key was pinned")
	}
}

// A return the master did not acknowledge stays in the outbox and is delivered on the next
// session: the minion is stopped while a job runs (the return, written as it stops, cannot be
// sent), and the same minion, started again, sends it to the master at once, which records it
// for the job still waiting for it. The job does not run again.
func TestOutboxRedeliveryAfterReconnect(t *testing.T) {
	ms := master.TestMaster(t)
	dir := t.TempDir()
	mn := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "box1", dir)
	accept(t, ms, mn.Minion, nil)

	work := t.TempDir()
	started, runs := filepath.Join(work, "started"), filepath.Join(work, "runs")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		res *master.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := ms.Run(ctx, master.JobSpec{Kind: wire.JobRun, Target: "box1", Minions: []string{"box1"}, Timeout: time.Minute,
			Run: &wire.RunSpec{Command: "echo run >> " + runs + "; touch " + started + "; exec sleep 60"}}, nil)
		done <- result{res, err}
	}()
	tb.WaitFor(t, 10*time.Second, "the command started", func() bool { return fileExists(started) })
	mn.stop() // Run returns once the executor has kept the return
	kept := outboxFiles(t, dir)
	if len(kept) != 1 {
		t.Fatalf("outbox after stopping mid-job: %v", kept)
	}

	again := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "box1", dir)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	ret, ok := r.res.Returns["box1"]
	if !ok || kept[0] != r.res.JIDs[0] {
		t.Fatalf("returns %+v for jobs %v; kept %v", r.res.Returns, r.res.JIDs, kept)
	}
	if ret.Success || !strings.Contains(ret.Error, "killed") {
		t.Fatalf("the return of a job cut short by the stop: %+v", ret)
	}
	tb.WaitFor(t, 5*time.Second, "the outbox emptied", func() bool { return len(outboxFiles(t, dir)) == 0 })
	if data := readFile(t, runs); data != "run\n" {
		t.Fatalf("the job ran %q, want once", data)
	}
	if again.Applied() != 0 {
		t.Fatalf("the restarted minion ran %d jobs", again.Applied())
	}
}

// Run returns only when every goroutine the minion started has exited: the executor and each
// session's readers. The check reads every goroutine's stack, so it also sees one started
// without goTracked; before the minion stops it must find them, or it could not fail.
func TestRunWaitsForEveryGoroutine(t *testing.T) {
	ms := master.TestMaster(t)
	mn := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "gr1", "")
	accept(t, ms, mn.Minion, nil)
	live := strings.Join(minionGoroutines(), "\n\n")
	for _, f := range []string{"(*session).readDealer", "(*session).readSub", "(*session).pumpReplies", "(*executor).run", "(*Minion).Run"} {
		if !strings.Contains(live, f) {
			t.Errorf("no goroutine in %s while connected:\n%s", f, live)
		}
	}
	mn.stop()
	if left := minionGoroutines(); len(left) != 0 {
		t.Fatalf("%d goroutines of the minion left after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}

	// A session closed before it authenticates leaves nothing behind either.
	s, err := dial(context.Background(), mn.Minion, masterAddr{pub: ms.PublishAddr(), req: ms.RequestAddr()})
	if err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 5*time.Second, "the dialled session's reader", func() bool { return len(minionGoroutines()) > 0 })
	s.close()
	if left := minionGoroutines(); len(left) != 0 {
		t.Fatalf("goroutines left after close:\n%s", strings.Join(left, "\n\n"))
	}
	if _, err := s.request(wire.KindHeartbeat, nil); err == nil {
		t.Fatal("a request on a closed session succeeded")
	}
}

func mustKey(t *testing.T) *pki.KeyPair {
	t.Helper()
	k, err := pki.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A master that refuses the minion's facts (here: reported more often than it takes them) keeps
// the facts it had; the session goes on and serves jobs, rather than ending at once and starting
// again, refused again, for as long as the master refuses.
func TestRefusedFactsKeepTheSession(t *testing.T) {
	ms := master.TestMaster(t, master.FactsRate(0, 0.5))
	mn := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "nofacts", "")
	tb.WaitFor(t, 5*time.Second, "pending", func() bool {
		k, ok := ms.Keys().Get("nofacts")
		return ok && k.State == pki.StatePending
	})
	if _, err := ms.Keys().Accept("nofacts", nil, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := ms.Run(ctx, master.JobSpec{Kind: wire.JobPing, Target: "nofacts", Minions: []string{"nofacts"}, Timeout: 10 * time.Second}, nil)
	if err != nil || res.Failed() {
		t.Fatalf("ping of a minion whose facts the master refuses: %+v %v (status %q)", res, err, mn.Status())
	}
	if f := ms.Facts("nofacts"); f != nil {
		t.Fatalf("the master took facts it refused: %v", f)
	}
}

// Facts the master refused are sent again with the next heartbeat request, until it takes them.
// The master here takes a report every 4 s: the session's first report is taken; the minion is
// started again with other facts, and the new session's report, right after, is refused; a later
// heartbeat's is not.
func TestRefusedFactsSentAgain(t *testing.T) {
	ms := master.TestMaster(t, master.FactsRate(0.25, 1))
	var round atomic.Int32
	round.Store(1)
	facts := func(c *Config) {
		c.FactsFunc = func() map[string]any { return map[string]any{"round": fmt.Sprint(round.Load())} }
	}
	mn := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "latefacts", "", facts)
	accept(t, ms, mn.Minion, nil)
	mn.stop()
	round.Store(2)
	runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "latefacts", mn.cfg.DataDir, facts)
	tb.WaitFor(t, 20*time.Second, "the facts refused at the session's start taken at a later heartbeat", func() bool {
		return ms.Facts("latefacts")["round"] == "2"
	})
}
