package minion

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"golang.org/x/sync/semaphore"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/internal/zmtp"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
)

// busySub returns a hand-made session whose SUB reads from pub (a zmq4 PUB standing for
// whoever is on the path to the publish port) with readSub running, and no serve: nobody
// handles the frames readSub passes on. It returns once a small frame has come through (the
// subscription is up) and s.pubs is empty, with nothing of its own still on the way. sent is
// closed by the test's sender; the cleanup waits for it.
func busySub(t *testing.T, sent <-chan struct{}) (*session, zmq4.Socket) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pub := zmq4.NewPub(ctx, quiet())
	if err := pub.Listen("tcp://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s := &session{m: &Minion{log: slog.New(slog.DiscardHandler)}, ctx: ctx, cancel: cancel, pubs: make(chan []byte, 16), pubMem: semaphore.NewWeighted(maxPubQueued), subDone: make(chan struct{})}
	s.sub = zmq4.NewSub(ctx, quiet(), zmq4.WithDialerMaxRetries(0))
	if err := s.sub.Dial(zmtp.Endpoint(pub.Addr().String(), wire.MaxJobFrame+1024)); err != nil {
		t.Fatal(err)
	}
	_ = s.sub.SetOption(zmq4.OptionSubscribe, "")
	s.spawn(s.readSub)
	t.Cleanup(func() {
		cancel()
		s.sub.Close()
		pub.Close()
		select { // zmq4's PUB may not give up a write to a peer that does not read
		case <-sent:
		case <-time.After(10 * time.Second):
		}
		s.wg.Wait()
	})
	// The subscription is up once a small frame comes through; what serve does with a frame.
	tb.WaitFor(t, 10*time.Second, "the subscription up", func() bool {
		_ = pub.Send(zmq4.NewMsgFrom([]byte("t"), []byte("ping")))
		select {
		case f := <-s.pubs:
			s.pubMem.Release(int64(len(f)))
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	// A ping that came after its 50 ms was taken by the next try, whose own ping may still be on
	// its way: a last frame, unlike the pings, goes out, and everything up to it is taken (the
	// PUB writes to the one connection in order), so that no ping is left to take a place the
	// test counts.
	fence := []byte("fence")
	_ = pub.Send(zmq4.NewMsgFrom([]byte("t"), fence))
	for deadline := time.After(30 * time.Second); ; {
		select {
		case f := <-s.pubs:
			s.pubMem.Release(int64(len(f)))
			if bytes.Equal(f, fence) {
				return s, pub
			}
		case <-deadline:
			t.Fatal("the fence frame did not come through")
		}
	}
}

// Whoever sits on the path to the master's publish port can send the minion frames of up to
// wire.MaxJobFrame (100 MiB). While the session does not take them (it waits for a reply, its
// job queue is full), 16 such frames waited in memory, 1.6 GB on a host that may have 1. Now
// the frames read and not yet handled take at most maxPubQueued bytes; the others are dropped.
func TestPublishedFramesBoundedWhileBusy(t *testing.T) {
	sent := make(chan struct{})
	s, pub := busySub(t, sent)

	// Nobody handles frames now. Eight of 40 MiB: two fit in the budget.
	big := bytes.Repeat([]byte{'x'}, 40<<20)
	go func() {
		defer close(sent)
		for range 8 {
			if pub.Send(zmq4.NewMsgFrom([]byte("t"), big)) != nil {
				return
			}
		}
	}()
	tb.WaitFor(t, 30*time.Second, "two large frames waiting", func() bool { return len(s.pubs) >= 2 })
	time.Sleep(2 * time.Second) // the others had their time to come through
	if n := len(s.pubs); n != 2 {
		t.Fatalf("%d frames of 40 MiB wait for the session, want 2 (%d bytes at most)", n, maxPubQueued)
	}
}

// The bound above is on the frames readSub has passed on; the heap must keep to it too. While
// readSub waited for room in the budget, zmq4's SUB went on reading the connection into its
// own queue (ten messages, and the one it was reading): with frames of 90 MiB, five of them
// (450 MiB) stayed in memory where the budget allows one. Now readSub drops what does not fit,
// in bytes or in the number of frames s.pubs holds, and zmq4 reads it into nothing.
func TestPublishedFramesHeapBoundedWhileBusy(t *testing.T) {
	const frame, frames = 90 << 20, 5
	for _, tc := range []struct {
		name  string
		small int   // small frames sent first
		held  int64 // bytes of the large frames that wait for the session
		drops int64 // frames dropped
	}{
		{"budget full", 0, frame, frames - 1},
		{"queue full", 16, 0, frames + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := make(chan struct{})
			s, pub := busySub(t, sent)
			big := bytes.Repeat([]byte{'x'}, frame)
			heap := func() int64 {
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				return int64(ms.HeapInuse)
			}
			before := heap()
			// The frames, then a small one: once it is taken or dropped, readSub has seen
			// every frame.
			go func() {
				defer close(sent)
				for range tc.small {
					_ = pub.Send(zmq4.NewMsgFrom([]byte("t"), []byte("small")))
				}
				for range frames {
					if pub.Send(zmq4.NewMsgFrom([]byte("t"), big)) != nil {
						return
					}
				}
				_ = pub.Send(zmq4.NewMsgFrom([]byte("t"), []byte("last")))
			}()
			deadline := time.Now().Add(20 * time.Second)
			for s.m.droppedPubs.Load() < tc.drops && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // the last frame taken, if it is to be
			held := heap() - before
			runtime.KeepAlive(big) // counted in before
			t.Logf("heap held by %d published frames of %d MiB: %d MiB; %d frames wait, %d dropped",
				frames, frame>>20, held>>20, len(s.pubs), s.m.droppedPubs.Load())
			if held > tc.held+8<<20 {
				t.Fatalf("%d MiB of published frames in the heap, want %d MiB", held>>20, tc.held>>20)
			}
			if n := s.m.droppedPubs.Load(); n != tc.drops {
				t.Fatalf("%d frames dropped, want %d", n, tc.drops)
			}
		})
	}
}

// A job whose frame the minion dropped, its queue of published frames being full, still runs,
// in the same session: the master lists it as pending in its reply to a heartbeat request once
// a heartbeat has passed since it published it, and publishes it again when the minion asks.
func TestDroppedJobRunsAfterwards(t *testing.T) {
	// The master's heartbeat sets its grace before it lists a job as pending (a heartbeat) and
	// how long the minion bears a silent publish port (three): the budget is held for less.
	ms := master.TestMaster(t, func(c *master.Config) { c.Heartbeat = "2s" })
	mn := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "drop1", "")
	accept(t, ms, mn.Minion, nil)
	mn.mu.Lock()
	s := mn.sess
	mn.mu.Unlock()

	// The budget full, as when a large frame waits for a busy session.
	actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer acancel()
	if err := s.pubMem.Acquire(actx, maxPubQueued); err != nil {
		t.Fatal(err)
	}
	held := true
	release := func() {
		if held {
			held = false
			s.pubMem.Release(maxPubQueued)
		}
	}
	defer release()

	dir, out := t.TempDir(), filepath.Join(t.TempDir(), "applied")
	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("file \"m\" {\n  path    = \""+out+"\"\n  content = \"x\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := states.ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	published := make(chan struct{})
	type result struct {
		res *master.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := ms.Run(ctx, master.JobSpec{Kind: wire.JobApply, Target: "drop1", Minions: []string{"drop1"}, Bundle: b, Timeout: 30 * time.Second},
			func(ev master.Event) {
				if ev.Event == "published" {
					close(published)
				}
			})
		done <- result{res, err}
	}()
	select {
	case <-published:
	case r := <-done:
		t.Fatalf("the job ended before it was published: %v", r.err)
	}
	tb.WaitFor(t, 5*time.Second, "a frame dropped", func() bool { return mn.droppedPubs.Load() > 0 })
	time.Sleep(time.Second) // the job's frame, on loopback, has come and gone
	if mn.Applied() != 0 || fileExists(out) {
		t.Fatal("the job ran while the minion's queue of published frames was full")
	}
	release()

	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if ret := r.res.Returns["drop1"]; !ret.Success {
		t.Fatalf("the job's return: %+v (missing %v)", ret, r.res.Missing)
	}
	if !fileExists(out) {
		t.Fatal("the job succeeded and its file is not there")
	}
	mn.mu.Lock()
	same := mn.sess == s
	mn.mu.Unlock()
	if !same {
		t.Fatal("the minion got the job on a new session, not on the one that dropped it")
	}
	t.Logf("%d published frames dropped", mn.droppedPubs.Load())
}
