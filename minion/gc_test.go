package minion

import (
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
)

// Config.ApplyGCPercent sets the process's GOGC at the minion's first apply, not before: a ping
// leaves it alone. (Once per process: the only test that sets ApplyGCPercent.)
func TestApplyGCPercentAtFirstApply(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set in the environment: ApplyGCPercent leaves it")
	}
	const want = 77
	gogc := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }
	before := gogc()
	t.Cleanup(func() { debug.SetGCPercent(before) })
	if before == want {
		t.Fatalf("GOGC is %d already", want)
	}
	ms := master.TestMaster(t)
	mn := runMinion(t, ms.PublishAddr(), ms.RequestAddr(), "gc1", "", func(c *Config) { c.ApplyGCPercent = want })
	accept(t, ms, mn.Minion, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := ms.Run(ctx, master.JobSpec{Kind: wire.JobPing, Target: "gc1", Minions: []string{"gc1"}, Timeout: 30 * time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	if got := gogc(); got != before {
		t.Fatalf("GOGC %d after a ping, want %d (unchanged)", got, before)
	}
	dir, out := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("file \"m\" {\n  path    = \""+out+"/m\"\n  content = \"x\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := states.ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ms.Run(ctx, master.JobSpec{Kind: wire.JobApply, Target: "gc1", Minions: []string{"gc1"}, Bundle: b, Timeout: 30 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Returns["gc1"]; !r.Success {
		t.Fatalf("apply: %+v", r)
	}
	if got := gogc(); got != want {
		t.Fatalf("GOGC %d after the first apply, want %d", got, want)
	}
}
