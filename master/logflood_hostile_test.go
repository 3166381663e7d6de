package master_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

// The log lines a peer can cause at the rate of its requests are written once per kind (or per
// authenticated minion) and interval, with the count of those suppressed: a peer that repeats
// what the master refuses, be it a stranger or a compromised minion, cannot fill the disk or
// the journal, nor drown the lines the operator needs. Each test sends floodCount requests that
// cause one line each, waits an interval, sends one more, and counts the lines.
const (
	floodCount    = 200
	floodLogEvery = 3 * time.Second
)

// floodMaster is a master that logs JSON to the returned buffer, with rate-limited lines every
// floodLogEvery, and takes the messages of unauthenticated peers as fast as they come (a flood
// from many sources gets that rate in all).
func floodMaster(t *testing.T, opts ...func(*master.Config)) (*master.Master, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	opts = append([]func(*master.Config){
		master.LogTo(slog.New(slog.NewJSONHandler(logs, nil))),
		master.LogEvery(floodLogEvery),
		master.FactsRate(1e6, 1e6), // the facts floods here are about the log, not the facts limit
		func(c *master.Config) { c.PreAuthRate, c.PreAuthRatePerSource = 1<<20, 1<<20 },
	}, opts...)
	return master.TestMaster(t, opts...), logs
}

// logRecords returns the records of logs whose message is msg.
func logRecords(t *testing.T, logs *lockedBuffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split([]byte(logs.String()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// floodLog calls cause n times, then once more an interval after the last line those calls
// logged (so that the count of the suppressed lines is logged), and checks that msg was logged
// a few times, not once per call, and that the lines account for every call.
func floodLog(t *testing.T, logs *lockedBuffer, msg string, n int, cause func(i int)) {
	t.Helper()
	start := time.Now()
	for i := range n {
		cause(i)
	}
	afterFlood(time.Now())
	cause(n)
	checkFlood(t, logs, msg, n+1, time.Since(start))
}

// afterFlood sleeps an interval from last, when the last call of a flood returned (its line, if
// it logged one, was written by then). The next call is then logged, with the count of those
// suppressed since the last line. An interval after the first line is not enough: on a slow
// machine the flood outlasts an interval, one of its calls logs a line, and a call an interval
// after the first line falls within that one's interval; its count would be logged only when the
// key is forgotten, after the test has counted.
func afterFlood(last time.Time) { time.Sleep(time.Until(last.Add(floodLogEvery))) }

// checkFlood checks that the calls that logged msg were written in at most a line per
// interval, and one with the count of those suppressed before it is forgotten, over span; and
// that the lines count all calls (a line that says how many were suppressed when its key was
// forgotten names the key, and is not a call itself).
func checkFlood(t *testing.T, logs *lockedBuffer, msg string, calls int, span time.Duration) {
	t.Helper()
	var recs []map[string]any
	counted := func() int {
		recs = logRecords(t, logs, msg)
		n := 0
		for _, r := range recs {
			s, _ := r["suppressed"].(float64)
			n += int(s)
			if r["key"] == nil {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(10 * time.Second); counted() < calls && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := counted(); n != calls {
		t.Fatalf("the lines of %q count %d calls; want %d:\n%s", msg, n, calls, logs.String())
	}
	intervals := int(span/floodLogEvery) + 1
	if max := 2*intervals + 1; len(recs) > max {
		t.Fatalf("%d lines of %q for %d calls in %v; want at most %d", len(recs), msg, calls, span.Round(time.Millisecond), max)
	}
	suppressed := false
	for _, r := range recs {
		suppressed = suppressed || r["suppressed"] != nil
	}
	if !suppressed {
		t.Fatalf("no line of %q says how many were suppressed: %v", msg, recs)
	}
	t.Logf("%d calls, %d lines of %q in %v", calls, len(recs), msg, span.Round(time.Millisecond))
}

// A compromised minion reports facts the master refuses, again and again: one line a minute for
// that minion.
func TestLogFloodRefusedFacts(t *testing.T) {
	m, logs := floodMaster(t)
	evil := evilMinion(t, m, "evil", nil, nil)
	floodLog(t, logs, "refused facts; the minion keeps its previous ones", floodCount, func(int) {
		if r, _, ok := evil.request(wire.KindFacts, nested(20)); !ok || r.Error == "" {
			t.Fatalf("facts too deep: %+v %v", r, ok)
		}
	})
}

// A compromised minion reports a tinc key other than the one pinned for it, with every facts
// report: one line a minute for that minion, until the operator acts.
func TestLogFloodPendingTincKey(t *testing.T) {
	m, logs := floodMaster(t)
	evil := evilMinion(t, m, "evil", nil, nil)
	if r, _, ok := evil.request(wire.KindFacts, map[string]any{"tinc_pubkey": map[string]any{"mesh": tincKey(t)}}); !ok || !r.OK {
		t.Fatalf("first tinc key: %+v %v", r, ok)
	}
	other := map[string]any{"tinc_pubkey": map[string]any{"mesh": tincKey(t)}}
	floodLog(t, logs, "a minion reports a tinc key that differs from the pinned one; peers() keeps the pinned key until `brine key accept-tinc`", floodCount, func(int) {
		if r, _, ok := evil.request(wire.KindFacts, other); !ok || !r.OK {
			t.Fatalf("facts with another tinc key: %+v %v", r, ok)
		}
	})
	if a := m.Attestation("evil"); len(a.TincPending) != 1 {
		t.Fatalf("attestation: %+v", a)
	}
}

// A stranger sends auths signed by another key than the one it presents: one line a minute in
// all, whatever the ids it names.
func TestLogFloodBadAuthSignature(t *testing.T) {
	m, logs := floodMaster(t)
	stranger := newRaw(t, m, "stranger", nil)
	forger := mustKey(t)
	floodLog(t, logs, "auth with a bad signature", floodCount, func(i int) {
		stranger.id = fmt.Sprint("forged-", i)
		if ar := stranger.auth("", forger); ar.Status != wire.StatusRefused {
			t.Fatalf("auth signed by another key: %+v", ar)
		}
	})
}

// A stranger guesses enrolment tokens: one line a minute in all. The first is logged as
// "enrolment token refused" (cmd/brine's cloud test waits for it).
func TestLogFloodRefusedToken(t *testing.T) {
	m, logs := floodMaster(t)
	stranger := newRaw(t, m, "stranger", nil)
	floodLog(t, logs, "enrolment token refused", floodCount, func(i int) {
		if ar := stranger.auth(fmt.Sprint("guess-", i), stranger.key); ar.Status != wire.StatusPending {
			t.Fatalf("auth with a guessed token: %+v", ar)
		}
	})
}

// A minion whose key is pending retries as fast as it can: one line a minute in all (anyone can
// make a pending key).
func TestLogFloodPendingKey(t *testing.T) {
	m, logs := floodMaster(t)
	stranger := newRaw(t, m, "stranger", nil)
	floodLog(t, logs, "minion key not accepted", floodCount, func(int) {
		if ar := stranger.auth("", stranger.key); ar.Status != wire.StatusPending {
			t.Fatalf("auth of a pending key: %+v", ar)
		}
	})
}

// A stranger presents new ids from one source beyond its bound of pending keys: one line a
// minute in all.
func TestLogFloodEnrolLimit(t *testing.T) {
	m, logs := floodMaster(t, func(c *master.Config) { c.MaxPendingPerSource = 1 })
	stranger := newRaw(t, m, "stranger", nil)
	if ar := stranger.auth("", stranger.key); ar.Status != wire.StatusPending {
		t.Fatalf("auth of the first new id: %+v", ar)
	}
	floodLog(t, logs, "new minion key refused", floodCount, func(i int) {
		stranger.id = fmt.Sprint("new-", i)
		if ar := stranger.auth("", stranger.key); ar.Status != wire.StatusRefused {
			t.Fatalf("auth %d of a new id: %+v", i, ar)
		}
	})
}

// A compromised minion that never returns its jobs asks for all of them again, at every
// heartbeat: each is published again once a heartbeat, as designed, but logged once a minute for
// that minion, not once per job and heartbeat.
func TestLogFloodResend(t *testing.T) {
	m, logs := floodMaster(t)
	evil := evilMinion(t, m, "evil", nil, nil)
	const jobs = 20
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	published := make(chan string, jobs)
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = m.Run(ctx, master.JobSpec{Kind: wire.JobPing, Target: "evil", Minions: []string{"evil"}, Timeout: time.Minute},
				func(e master.Event) {
					if e.Event == "published" {
						published <- e.JID
					}
				})
		}()
	}
	var jids []string
	for range jobs {
		select {
		case jid := <-published:
			jids = append(jids, jid)
		case <-time.After(30 * time.Second):
			t.Fatal("the jobs were not published")
		}
	}
	// What is published from now on: the jobs published again (all on evil's own topic).
	pub := m.Published(t)
	resends := func() int {
		n := 0
		for {
			select {
			case msg := <-pub:
				if string(msg[0]) == wire.TopicMinion("evil") {
					n++
				}
			default:
				return n
			}
		}
	}
	ask := func(jids []string) {
		if r, _, ok := evil.request(wire.KindResend, wire.ResendBody{JIDs: jids}); !ok || !r.OK {
			t.Fatalf("resend: %+v %v", r, ok)
		}
	}
	// Asked for every 20 ms over two seconds: each job is published again about ten times
	// (once a heartbeat of TestMaster's 200 ms).
	start := time.Now()
	ask(jids)
	for time.Since(start) < 2*time.Second {
		time.Sleep(20 * time.Millisecond)
		ask(jids)
	}
	// An interval after the last ask (more than a heartbeat), one job more: its line is
	// logged, with the count of those suppressed.
	afterFlood(time.Now())
	ask(jids[:1])
	time.Sleep(100 * time.Millisecond) // the publisher's taps are written after the reply
	n := resends()
	if n < 2*jobs {
		t.Fatalf("%d jobs published again; want at least %d", n, 2*jobs)
	}
	checkFlood(t, logs, "publishing a job again for a minion that missed it", n, time.Since(start))
	if k, _ := m.Keys().Get("evil"); k.State != pki.StateAccepted {
		t.Fatal("evil is no longer accepted")
	}
}
