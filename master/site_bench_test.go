package master_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// BenchmarkConvergeVsApply compares a converge of a 3-bundle site on 50 in-process minions with
// an apply of the same 30 file resources as one bundle (issue 14: the site must cost under 10%
// more). Both are second runs: nothing changes, every resource is checked.
//
//	go test -run '^$' -bench ConvergeVsApply -benchtime 5x ./master/
func BenchmarkConvergeVsApply(b *testing.B) {
	const minions, perBundle = 50, 10
	m := master.TestMaster(b)
	out := b.TempDir()
	var ids []string
	for i := 0; i < minions; i++ {
		id := fmt.Sprintf("b%02d", i)
		ids = append(ids, id)
		minion.TestMinion(b, m.PublishAddr(), m.RequestAddr(), id)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		m.Keys().Accept("*", nil, true)
		if got, _ := m.ResolveTarget("*"); len(got) == minions && allHaveFacts(m, got) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("minions did not connect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	tree := &states.Bundle{Files: map[string][]byte{}, Root: "site"}
	var one strings.Builder
	for _, name := range []string{"base", "web", "app"} {
		var sb strings.Builder
		for j := 0; j < perBundle; j++ {
			fmt.Fprintf(&sb, "file %q {\n  path    = \"%s/${minion.id}-%s-%d\"\n  content = \"%s %d on ${minion.id}\\n\"\n}\n", fmt.Sprintf("%s%d", name, j), out, name, j, name, j)
		}
		tree.Files[name+"/main.hcl"] = []byte(sb.String())
		one.WriteString(sb.String())
	}
	tree.Files["site.hcl"] = []byte(`group "all" { target = "b*" }
assign "group:all" { bundles = ["base", "web", "app"] }
`)
	site, diags := master.LoadSite(tree, true)
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	single := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(one.String())}}
	// toPublish is the master's own cost: from the call to the job's publication, which the
	// minions' work (most of the wall time, and noisy on a shared machine) does not enter.
	var toPublish time.Duration
	timed := func(start time.Time) func(master.Event) {
		return func(ev master.Event) {
			if ev.Event == "published" {
				toPublish += time.Since(start)
			}
		}
	}
	apply := func() {
		res, err := m.Run(b.Context(), master.JobSpec{Target: "b*", Minions: ids, Bundle: single, Timeout: time.Minute}, timed(time.Now()))
		if err != nil || res.Failed() {
			b.Fatalf("apply: %v %+v", err, res)
		}
	}
	converge := func() {
		res, err := m.Converge(b.Context(), master.ConvergeSpec{Target: "*", Site: site, Timeout: time.Minute}, master.Rollout{}, timed(time.Now()))
		if err != nil || len(res.Failed) > 0 || len(res.Returns) != minions {
			b.Fatalf("converge: %v %+v", err, res)
		}
	}
	apply()
	converge()
	for _, c := range []struct {
		name string
		f    func()
	}{{"apply", apply}, {"converge", converge}} {
		b.Run(c.name, func(b *testing.B) {
			toPublish = 0
			for i := 0; i < b.N; i++ {
				c.f()
			}
			b.ReportMetric(float64(toPublish.Microseconds())/float64(b.N), "µs-to-publish/op")
		})
	}
}

func allHaveFacts(m *master.Master, ids []string) bool {
	for _, id := range ids {
		if k, ok := m.Keys().Get(id); !ok || k.State != pki.StateAccepted || m.Facts(id) == nil {
			return false
		}
	}
	return true
}
