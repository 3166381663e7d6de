package minion

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// The executor parses a bundle once per signed digest and keeps only that parse: each job is
// compiled again with its own vars and facts, and a bundle of another digest is parsed (and
// applied) as itself, never the one kept.
func TestBundleParsedOncePerDigest(t *testing.T) {
	master := mustKey(t)
	jm := jobMaker{master: master, sk: pki.NewSessionKey()}
	m := testMinion(t, t.TempDir(), "web1", master, jm.sk)
	facts := map[string]any{"colour": "red"}
	m.exec.facts = func() map[string]any {
		f := map[string]any{}
		for k, v := range facts {
			f[k] = v
		}
		return f
	}
	out := t.TempDir()
	bundleA := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(fmt.Sprintf(`variable "v" {
  default = "none"
}
file "x" {
  path    = "%s/x"
  content = "${var.v} ${lookup(minion.facts, "colour", "none")}"
}
`, out))}}
	bundleB := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(fmt.Sprintf(`variable "v" {
  default = "none"
}
file "x" {
  path    = "%s/x"
  content = "B ${var.v}"
}
`, out))}}
	now := time.Now()
	n := 0
	apply := func(b *states.Bundle, v string) {
		t.Helper()
		n++
		packed := b.Marshal()
		meta := wire.JobMeta{JID: fmt.Sprintf("j%d", n), Kind: wire.JobApply, Minions: []string{"web1"}, IssuedAt: now,
			ExpiresAt: now.Add(time.Minute), BundleDigest: bundleDigest(packed), Vars: map[string]string{"v": v}}
		j, err := m.OpenJob(jm.frame(t, master, meta, packed), now)
		if err != nil {
			t.Fatal(err)
		}
		if ret, _ := m.exec.execute(context.Background(), j); !ret.Success {
			t.Fatalf("apply %d: %s %s %s", n, ret.Error, ret.Diagnostics, ret.Report)
		}
	}
	check := func(want string, loads int) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(out, "x"))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("after job %d: x holds %q, want %q", n, got, want)
		}
		if m.exec.loads != loads {
			t.Errorf("after job %d: %d bundles parsed, want %d", n, m.exec.loads, loads)
		}
	}
	apply(bundleA, "1")
	check("1 red", 1)
	facts["colour"] = "blue"
	apply(bundleA, "2") // the same digest: not parsed again, compiled with its vars and facts
	check("2 blue", 1)
	apply(bundleB, "3") // another digest: parsed, and applied as itself
	check("B 3", 2)
	apply(bundleA, "4") // only the last parse is kept
	check("4 blue", 3)
}

// A minion reports facts on connect, and after an apply only when they changed: an apply that
// changes nothing the facts show (or nothing at all) sends none; one that changes them sends
// them before its return, so the master has them when the return arrives.
func TestFactsReportedWhenChanged(t *testing.T) {
	ms := master.TestMaster(t)
	out := t.TempDir()
	factFile := filepath.Join(out, "fact")
	mn := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "facts1", "", func(c *Config) {
		c.FactsFunc = func() map[string]any {
			data, _ := os.ReadFile(factFile)
			return map[string]any{"os": "linux", "fact": string(data)}
		}
	})
	accept(t, ms, mn.Minion, nil)
	tb.WaitFor(t, 5*time.Second, "first facts", func() bool { return mn.factsReports.Load() > 0 })
	reports := mn.factsReports.Load()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	apply := func(path, content string) {
		t.Helper()
		dir := t.TempDir()
		src := fmt.Sprintf("file \"f\" {\n  path    = %q\n  content = %q\n}\n", path, content)
		if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := states.ReadBundle(dir)
		if err != nil {
			t.Fatal(err)
		}
		res, err := ms.Run(ctx, master.JobSpec{Kind: wire.JobApply, Target: "facts1", Minions: []string{"facts1"}, Bundle: b, Timeout: 30 * time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := res.Returns["facts1"]; !r.Success {
			t.Fatalf("apply: %+v", r)
		}
	}
	other := filepath.Join(out, "other")
	apply(other, "a") // a change the facts do not show
	apply(other, "a") // no change
	if got := mn.factsReports.Load(); got != reports {
		t.Fatalf("%d facts reports after two applies that left the facts as they were, want %d", got, reports)
	}
	apply(factFile, "new") // a change the facts show
	if got := mn.factsReports.Load(); got != reports+1 {
		t.Fatalf("%d facts reports after an apply that changed the facts, want %d", got, reports+1)
	}
	if f := ms.Facts("facts1"); f["fact"] != "new" {
		t.Fatalf("the master's facts when the return arrived: %v", f)
	}
}
