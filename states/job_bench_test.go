package states_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
)

// BenchmarkJobBundle is the bundle work the master does for a job (BENCHMARKS.md, "Parse
// once"): load the bundle, compile it for one minion (the validation), pack it. The bundle is
// the swarm benchmark's: 20 files.
func BenchmarkJobBundle(b *testing.B) {
	var src strings.Builder
	src.WriteString("variable \"root\" {\n  default = \"/tmp/brine-bench-files\"\n}\n")
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&src, "\nfile \"f%02d\" {\n  path    = \"${lookup(minion.facts, \"root\", \"${var.root}/${minion.id}\")}/f%02d.conf\"\n  content = \"# file %d of 20\\nminion = ${minion.id}\\n\"\n  mode    = \"0644\"\n}\n", i, i, i)
	}
	bun := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src.String())}}
	opts := states.Options{Minion: states.Minion{ID: "m1", Facts: map[string]any{"root": "/tmp/x"}}}
	b.ReportAllocs()
	for b.Loop() {
		m, d := states.Load(bun, builtinTypes)
		if d.HasErrors() {
			b.Fatal(d)
		}
		if _, d := states.Compile(m, opts); d.HasErrors() {
			b.Fatal(d)
		}
		_ = bun.Pack()
	}
}
