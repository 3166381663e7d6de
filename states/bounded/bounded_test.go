package bounded_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/bounded"
	"github.com/brinecm/brine/states/resources/builtin"
)

func bundle(src string) *states.Bundle {
	return &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}, Root: "hostile"}
}

// Hostile bundles: each would take the whole machine in process; in the child each ends in an
// error that names the bound, and the caller goes on.
func TestHostileBundlesHitTheBound(t *testing.T) {
	lim := bounded.Limits{Memory: 256 << 20, CPU: 3 * time.Second}
	if raceEnabled {
		lim.Memory = 2 << 30 // the detector's shadow memory counts too; the doubling still hits it
	}
	for _, tc := range []struct{ name, src, want string }{
		// 10^9 iterations, little memory: the CPU bound.
		{"nested for", `locals {
  n = length([for a in range(1000) : length([for b in range(1000) : length([for c in range(1000) : c])])])
}
file "/tmp/x" { content = "${local.n}" }`, "CPU"},
		// A string that doubles 40 times: the memory bound.
		{"doubling", `locals {
  s0 = "0123456789abcdef"
  s1 = "${local.s0}${local.s0}"
  s2 = "${local.s1}${local.s1}"
  s3 = "${local.s2}${local.s2}"
  s4 = "${local.s3}${local.s3}"
  s5 = "${local.s4}${local.s4}"
  s6 = "${local.s5}${local.s5}"
  s7 = "${local.s6}${local.s6}"
  s8 = "${local.s7}${local.s7}"
  s9 = "${local.s8}${local.s8}"
  t0 = join("", [for i in range(1000) : local.s9])
  t1 = join("", [for i in range(1000) : local.t0])
  t2 = join("", [for i in range(1000) : local.t1])
}
file "/tmp/x" { content = local.t2 }`, "memory"},
		// go-cty's toset is quadratic: 40,000 strings keep a core busy for minutes.
		{"toset", `locals { s = toset(flatten([for a in range(1000) : [for b in range(40) : "${a}-${b}"]])) }
file "/tmp/x" { content = "${length(local.s)}" }`, "CPU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := bounded.Compile(context.Background(), bundle(tc.src).Marshal(), "hostile", []states.Options{{Minion: states.Minion{ID: "m1"}}}, false, lim)
			if raceEnabled && tc.want == "memory" {
				// The detector's own allocator fails first (ThreadSanitizer's shadow memory):
				// the child still dies and the caller goes on, which is what is asserted.
				if err == nil {
					t.Fatal("the doubling bundle compiled")
				}
				return
			}
			// On a busy machine the wall-clock deadline (twice the CPU bound) may come first.
			if !errors.Is(err, bounded.ErrBound) || !(strings.Contains(err.Error(), tc.want) || tc.want == "CPU" && strings.Contains(err.Error(), "took longer")) {
				t.Fatalf("got %v, want an error over the %s bound", err, tc.want)
			}
			t.Logf("%s: %v (%s)", tc.name, err, time.Since(start).Round(time.Millisecond))
		})
	}
}

// A bundle within the bounds compiles in the child as in process: the same diagnostics, with
// their file:line:col, and the number of resources.
func TestChildCompilesAsInProcess(t *testing.T) {
	good := bundle(`variable "n" { default = 3 }
file "f" {
  for_each = toset([for i in range(var.n) : "/tmp/f${i}"])
  path     = each.key
  content  = minion.facts.greeting
}`)
	opts := []states.Options{{Minion: states.Minion{ID: "m1", Facts: map[string]any{"greeting": "hi", "big": 12345678901234567}}}}
	res, err := bounded.Compile(context.Background(), good.Marshal(), good.Root, opts, false, bounded.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Diagnostics().HasErrors() || res[0].Resources != 3 {
		t.Fatalf("good bundle: %+v", res)
	}
	bad := bundle("file \"/tmp/x\" {\n  content = minion.facts.nope\n}\n")
	res, err = bounded.Compile(context.Background(), bad.Marshal(), bad.Root, append(opts, opts...), true, bounded.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	mod, d := states.Load(bad, builtin.Types())
	if d.HasErrors() {
		t.Fatal(d)
	}
	_, want := states.Compile(mod, opts[0])
	if len(res) != 2 {
		t.Fatalf("until the first success: %d results for 2 failing compiles", len(res))
	}
	got := res[0].Diagnostics()
	if len(got) != len(want) || got[0].Summary != want[0].Summary || got[0].Subject.String() != want[0].Subject.String() {
		t.Fatalf("child diagnostics %v, in process %v", got, want)
	}
	if !strings.HasPrefix(got[0].Subject.String(), "hostile/main.hcl:2,") {
		t.Fatalf("diagnostic names %s, want hostile/main.hcl:2", got[0].Subject)
	}
}

// The cost of the child per compile, against the same compile in process: `go test
// ./states/bounded/ -run '^$' -bench . -benchtime 50x` (BENCHMARKS.md, "Bounded compilation").
func BenchmarkCompile(b *testing.B) {
	var src strings.Builder
	src.WriteString("variable \"who\" { default = \"world\" }\npackage \"nginx\" { state = \"installed\" }\n")
	src.WriteString("service \"nginx\" {\n  state = \"running\"\n  enabled = true\n}\n")
	src.WriteString("file \"conf\" {\n  for_each = toset([for i in range(20) : \"/etc/app/f${i}.conf\"])\n  path = each.key\n  content = \"hello ${var.who} on ${minion.id}\\n\"\n  notify = [service.nginx]\n}\n")
	bn := bundle(src.String())
	mod, d := states.Load(bn, builtin.Types())
	if d.HasErrors() {
		b.Fatal(d)
	}
	opts := states.Options{Minion: states.Minion{ID: "m1", Facts: map[string]any{"os": "linux"}}}
	b.Run("in-process", func(b *testing.B) {
		for b.Loop() {
			if _, d := states.Compile(mod, opts); d.HasErrors() {
				b.Fatal(d)
			}
		}
	})
	b.Run("child", func(b *testing.B) {
		for b.Loop() {
			res, err := bounded.Compile(context.Background(), bn.Marshal(), bn.Root, []states.Options{opts}, false, bounded.Limits{})
			if err != nil || res[0].Diagnostics().HasErrors() || res[0].Resources != 22 {
				b.Fatal(err, res)
			}
		}
	})
	b.Run("checked", func(b *testing.B) {
		for b.Loop() {
			if _, d := bounded.CompileChecked(context.Background(), mod, opts, bounded.Limits{}); d.HasErrors() {
				b.Fatal(d)
			}
		}
	})
}
