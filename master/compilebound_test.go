package master_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
)

// Bundles whose expressions would exhaust the machine (a string doubled past the memory bound,
// 10^9 iterations of nested for, go-cty's quadratic toset) are compiled by a real master process
// in a bounded child: the submitter gets an error naming the bundle and the bound, the master
// stays up and answers pings while the child runs, and nothing is published.
func TestHostileBundlesCompileBoundedRealMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rc := startRealCluster(t, ctx, "cb1")
	// Small bounds, so that the CPU bomb ends quickly.
	os.WriteFile(filepath.Join(rc.c.SharedDir(), "master.hcl"),
		[]byte("heartbeat = \"1s\"\ncompile_memory_mb = 256\ncompile_cpu = \"4s\"\n"), 0o644)
	if err := rc.master.Restart(); err != nil {
		t.Fatal(err)
	}
	rc.waitPing("cb1", 30*time.Second)

	mem := rc.writeBundle("hostile-mem", `locals {
  s0 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  s1 = join("", [for i in range(1000) : local.s0])
  s2 = join("", [for i in range(1000) : local.s1])
  s3 = join("", [for i in range(1000) : local.s2])
}
file "/var/tmp/never" { content = local.s3 }
`)
	out, code := rc.sh(rc.bin + " apply cb1 " + mem + " 2>&1")
	if code != 1 || !strings.Contains(out, `bundle "hostile-mem"`) || !strings.Contains(out, "memory") {
		t.Fatalf("memory bomb: exit %d:\n%s", code, out)
	}
	t.Logf("memory bomb refused:\n%s", out)

	cpu := rc.writeBundle("hostile-cpu", `locals {
  n = length([for a in range(1000) : length([for b in range(1000) : length([for c in range(1000) : c])])])
  s = toset(flatten([for a in range(1000) : [for b in range(40) : "${a}-${b}"]]))
}
file "/var/tmp/never" { content = "${local.n} ${length(local.s)}" }
`)
	done := rc.applyAsync("cb1", cpu, "60s", "cpu.json")
	tb.WaitFor(t, 30*time.Second, "the compile child on the master host", func() bool {
		_, code := rc.sh("pgrep -f '^brine-compile '")
		return code == 0
	})
	// The master answers while the child burns its CPU.
	if out, code := rc.sh(rc.bin + " ping cb1 --timeout 10s 2>&1"); code != 0 {
		t.Fatalf("ping during the hostile compile: exit %d: %s", code, out)
	}
	if code := waitExit(t, done, 60*time.Second, "apply of the CPU bomb"); code != 1 {
		t.Fatalf("CPU bomb: exit %d, events %+v", code, rc.events("cpu.json"))
	}
	var invalid string
	for _, ev := range rc.events("cpu.json") {
		if ev.Event == "invalid" {
			invalid = ev.Diagnostics
		}
		if ev.Event == "published" {
			t.Fatal("the CPU bomb was published")
		}
	}
	if !strings.Contains(invalid, `bundle "hostile-cpu"`) || !(strings.Contains(invalid, "CPU") || strings.Contains(invalid, "took longer")) {
		t.Fatalf("CPU bomb: diagnostics %q", invalid)
	}
	if !rc.master.Running() {
		t.Fatalf("the master died:\n%s", rc.master.Log())
	}
	if out, code := rc.sh(rc.bin + " ping cb1 --timeout 10s 2>&1"); code != 0 {
		t.Fatalf("ping after the hostile bundles: exit %d: %s", code, out)
	}
	if out, _ := rc.sh(rc.bin + " jobs list 2>&1"); strings.Contains(out, "hostile") {
		t.Fatalf("a hostile bundle is in the job history:\n%s", out)
	}
}
