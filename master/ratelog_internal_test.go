package master

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// records decodes the JSON lines of buf.
func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		out = append(out, r)
	}
	return out
}

// A rateLog holds at most rateLogMaxKeys keys (and the one they overflow into), however many
// keys it is given within an interval, and so writes at most that many lines; keys idle for an
// interval are forgotten, and a suppressed count they still had is logged then.
func TestRateLogBounded(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, nil))
	const every = 500 * time.Millisecond
	r := rateLog{every: every}
	start := time.Now()
	const keys = 10 * rateLogMaxKeys
	for i := range keys {
		r.warn(l, fmt.Sprint("minion-", i), "refused", "i", i)
	}
	r.warn(l, "minion-0", "refused", "i", 0) // suppressed: its key is held
	if time.Since(start) >= every {
		t.Skip("the machine is too slow for this interval")
	}
	if n := r.tracked(); n > rateLogMaxKeys+1 {
		t.Fatalf("%d keys tracked, more than %d", n, rateLogMaxKeys+1)
	}
	recs := records(t, &buf)
	if len(recs) != rateLogMaxKeys+1 {
		t.Fatalf("%d lines for %d keys; want %d (one per key held, one for all the others)", len(recs), keys, rateLogMaxKeys+1)
	}

	// An interval later every key is forgotten at the next line of any key: the overflow key
	// and minion-0 had lines suppressed, which are logged with their count.
	time.Sleep(every)
	buf.Reset()
	r.info(l, "fixed", "something else")
	if n := r.tracked(); n != 1 {
		t.Fatalf("%d keys tracked after an idle interval; want 1", n)
	}
	got := map[string]float64{}
	for _, rec := range records(t, &buf) {
		if k, ok := rec["key"].(string); ok {
			got[k], _ = rec["suppressed"].(float64)
		}
	}
	if want := (map[string]float64{"minion-0": 1, "others": keys - rateLogMaxKeys - 1}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("suppressed counts logged when forgotten: %v; want %v\n%s", got, want, buf.String())
	}
}
