package master_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
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

// floodLog calls cause n times, then once more an interval after the first call's line (so that
// the count of the suppressed lines is logged), and checks that msg was logged a few times, not
// once per call, and that the lines account for every call.
func floodLog(t *testing.T, logs *lockedBuffer, msg string, n int, cause func(i int)) {
	t.Helper()
	start := time.Now()
	cause(0)
	first := time.Now() // after the first line
	for i := 1; i < n; i++ {
		cause(i)
	}
	time.Sleep(time.Until(first.Add(floodLogEvery)))
	cause(n)
	checkFlood(t, logs, msg, n+1, time.Since(start))
}

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
