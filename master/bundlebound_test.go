package master_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
	"github.com/brinecm/brine/states/resources/restest"
)

// A bundle that expands to more resources than states.MaxResources is refused by the master's
// validation with a diagnostic, publishes nothing, and the master goes on serving a real minion.
// Before, 1,600 for_each instances kept the master's validation busy for minutes
// (every instance evaluated the whole for_each again).
func TestHostileBundleTooManyResources(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "b1", nil)
	huge := `file "bulk" {
  for_each = { for p in setproduct(range(200), range(60)) : "${p[0]}-${p[1]}" => p[0] }
  path     = "/tmp/brine-never/${each.key}"
  content  = "x"
}
`
	var events []master.Event
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err := m.Run(ctx, master.JobSpec{Target: "b1", Minions: []string{"b1"}, Timeout: 10 * time.Second,
		Bundle: bundle(t, map[string]string{"main.hcl": huge})}, func(e master.Event) { events = append(events, e) })
	if err == nil || len(events) != 1 || events[0].Event != "invalid" || !strings.Contains(events[0].Diagnostics, "Too many resources") {
		t.Fatalf("huge for_each: %v %+v", err, events)
	}
	if jobs, _ := m.Store().Jobs(0); len(jobs) != 0 {
		t.Fatal("a bundle over the resource bound was published")
	}
	res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "b1"})
	if len(res.Returns) != 1 {
		t.Fatalf("ping after the hostile bundle: %+v", res)
	}
}

// Many instances of one block compile in time linear in their number: 5,000 (half the bound)
// well within a generous deadline; before, each instance evaluated the whole for_each again.
func TestForEachInstancesCompileLinearly(t *testing.T) {
	src := `file "bulk" {
  for_each = { for p in setproduct(range(100), range(50)) : "${p[0]}-${p[1]}" => p[0] }
  path     = "/tmp/brine-never/${each.key}"
  content  = "x"
}
`
	b := bundle(t, map[string]string{"main.hcl": src})
	done := make(chan hclDiags, 1)
	go func() {
		_, d := restest.Compile(b, builtin.Types(), states.Options{Minion: states.Minion{ID: "x"}})
		done <- hclDiags{d.HasErrors(), d.Error()}
	}()
	select {
	case d := <-done:
		if d.err {
			t.Fatal(d.msg)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("5,000 for_each instances did not compile within 2 minutes")
	}
}

type hclDiags struct {
	err bool
	msg string
}
