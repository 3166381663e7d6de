package master_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
)

func TestPlanRollout(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e"}
	for _, tc := range []struct {
		batch  string
		canary []string
		want   string
		err    string
	}{
		{batch: "", want: "a b c d e"},
		{batch: "2", want: "a b|c d|e"},
		{batch: "1", want: "a|b|c|d|e"},
		{batch: "40%", want: "a b|c d|e"},
		{batch: "1%", want: "a|b|c|d|e"},
		{batch: "100%", want: "a b c d e"},
		{batch: "2", canary: []string{"c"}, want: "c|a b|d e"},
		{batch: "", canary: []string{"e", "a"}, want: "e a|b c d"},
		{batch: "0", err: "at least 1"},
		{batch: "150%", err: "percentage"},
		{batch: "x", err: "number"},
		{batch: "1", canary: []string{"z"}, err: "not in the target"},
	} {
		got, err := master.PlanRollout(ids, tc.canary, tc.batch)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("batch %q canary %v: want error %q, got %v", tc.batch, tc.canary, tc.err, err)
			}
			continue
		}
		var parts []string
		for _, b := range got {
			parts = append(parts, strings.Join(b, " "))
		}
		if s := strings.Join(parts, "|"); err != nil || s != tc.want {
			t.Errorf("batch %q canary %v: got %q (%v), want %q", tc.batch, tc.canary, s, err, tc.want)
		}
	}
}

// rolloutBundle writes a file per minion under dir, and fails on the minions in bad (their
// path lies under a regular file).
func rolloutBundle(t *testing.T, dir string, bad ...string) map[string]string {
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(bad))
	for i, b := range bad {
		quoted[i] = `"` + b + `"`
	}
	return map[string]string{"main.hcl": `
file "mark" {
  path    = contains([` + strings.Join(quoted, ",") + `], minion.id) ? "` + blocker + `/${minion.id}" : "` + dir + `/${minion.id}"
  content = "applied\n"
}`}
}

func rollout(t *testing.T, m *master.Master, files map[string]string, ro master.Rollout) (*master.RolloutResult, []master.Event) {
	t.Helper()
	ids, err := m.ResolveTarget("r*")
	if err != nil {
		t.Fatal(err)
	}
	var events []master.Event
	res, err := m.RunRollout(context.Background(), master.JobSpec{Target: "r*", Minions: ids, Bundle: bundle(t, files), Timeout: 10 * time.Second}, ro,
		func(e master.Event) { events = append(events, e) })
	if err != nil {
		t.Fatal(err)
	}
	return res, events
}

func applied(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if e.Name() != "blocker" {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestRolloutStopsAfterFirstFailingBatch(t *testing.T) {
	m := master.TestMaster(t)
	for _, id := range []string{"r1", "r2", "r3", "r4"} {
		acceptedMinion(t, m, id, nil)
	}
	dir := t.TempDir()
	res, events := rollout(t, m, rolloutBundle(t, dir, "r2"), master.Rollout{Batch: "1", MaxFailures: 0})
	if got := strings.Join(applied(dir), " "); got != "r1" {
		t.Fatalf("applied on %q, want only r1 (r2 failed, r3 and r4 untouched)", got)
	}
	if !slices.Equal(res.Failed, []string{"r2"}) || !slices.Equal(res.Untouched, []string{"r3", "r4"}) || res.Stopped == "" {
		t.Fatalf("result: failed %v untouched %v stopped %q", res.Failed, res.Untouched, res.Stopped)
	}
	var kinds []string
	for _, e := range events {
		if e.Event == "batch" || e.Event == "batch_done" || e.Event == "stopped" || e.Event == "done" {
			kinds = append(kinds, e.Event)
		}
	}
	if got := strings.Join(kinds, " "); got != "batch batch_done batch batch_done stopped done" {
		t.Fatalf("events %q", got)
	}

	// With room for one failure the same rollout goes on to the end.
	dir2 := t.TempDir()
	res, _ = rollout(t, m, rolloutBundle(t, dir2, "r2"), master.Rollout{Batch: "1", MaxFailures: 1})
	if got := strings.Join(applied(dir2), " "); got != "r1 r3 r4" || res.Stopped != "" || len(res.Untouched) != 0 {
		t.Fatalf("max-failures 1: applied %q, stopped %q, untouched %v", got, res.Stopped, res.Untouched)
	}
}

func TestFailingCanaryStopsBeforeAnyBatch(t *testing.T) {
	m := master.TestMaster(t)
	for _, id := range []string{"r1", "r2", "r3"} {
		acceptedMinion(t, m, id, nil)
	}
	dir := t.TempDir()
	res, _ := rollout(t, m, rolloutBundle(t, dir, "r3"), master.Rollout{Batch: "50%", Canary: "r3", MaxFailures: 5})
	if got := applied(dir); len(got) != 0 {
		t.Fatalf("applied on %v after the canary failed", got)
	}
	if !strings.Contains(res.Stopped, "canary") || !slices.Equal(res.Untouched, []string{"r1", "r2"}) {
		t.Fatalf("stopped %q untouched %v", res.Stopped, res.Untouched)
	}
	// A healthy canary lets the batches follow.
	dir2 := t.TempDir()
	res, _ = rollout(t, m, rolloutBundle(t, dir2), master.Rollout{Batch: "50%", Canary: "r3"})
	if got := strings.Join(applied(dir2), " "); got != "r1 r2 r3" || res.Stopped != "" {
		t.Fatalf("applied %q stopped %q", got, res.Stopped)
	}
}

// A minion that does not return counts as a failure.
func TestRolloutCountsNoReturnAsFailure(t *testing.T) {
	m := master.TestMaster(t)
	for _, id := range []string{"r1", "r2", "r3"} {
		acceptedMinion(t, m, id, nil)
	}
	stop := stoppableMinion(t, m, "r0", t.TempDir())
	tb.WaitFor(t, 5*time.Second, "r0 pending", func() bool { _, ok := m.Keys().Get("r0"); return ok })
	if _, err := m.Keys().Accept("r0", nil, false); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 5*time.Second, "r0 connected", func() bool { return m.Facts("r0") != nil })
	ids, _ := m.ResolveTarget("r*")
	stop() // r0 is gone after the target was resolved: the rollout expects its return in vain
	dir := t.TempDir()
	var events []master.Event
	res, err := m.RunRollout(context.Background(), master.JobSpec{Target: "r*", Minions: ids, Bundle: bundle(t, rolloutBundle(t, dir)), Timeout: 2 * time.Second},
		master.Rollout{Batch: "1"}, func(e master.Event) { events = append(events, e) })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Failed, []string{"r0"}) || len(applied(dir)) != 0 || len(res.Untouched) != 3 {
		t.Fatalf("failed %v applied %v untouched %v", res.Failed, applied(dir), res.Untouched)
	}
}
