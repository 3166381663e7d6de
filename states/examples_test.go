package states_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

// Every bundle in examples/ validates and plans, so the documentation cannot rot.
func TestExamplesValidateAndPlan(t *testing.T) {
	dirs, err := filepath.Glob("../examples/*")
	must(t, err)
	vars := map[string]map[string]string{"hello": {"root": t.TempDir()}}
	secrets := map[string]map[string]string{"ghost-pro-real": {"db_password": "example"}}
	facts := map[string]any{"os": "debian", "arch": "amd64", "cpus": 2,
		"interfaces": map[string]any{"eth0": map[string]any{"ipv4": []string{"10.213.9.5"}}}}
	seen := 0
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue
		}
		name := filepath.Base(dir)
		if hcl, _ := filepath.Glob(filepath.Join(dir, "*.hcl")); len(hcl) == 0 {
			continue // not a bundle (examples/migrate is a runbook script)
		}
		seen++
		t.Run(name, func(t *testing.T) {
			b, err := states.ReadBundle(dir)
			must(t, err)
			opts := states.Options{Vars: vars[name], Secrets: secrets[name], Minion: states.Minion{ID: "web1", Groups: []string{"app", "cache", "db", "core"}, Facts: facts}}
			if diags := restest.Check(b, builtinTypes, opts); diags.HasErrors() {
				var sb strings.Builder
				states.WriteDiagnostics(&sb, b, diags, false)
				t.Fatalf("Check:\n%s", sb.String())
			}
			g, diags := restest.Compile(b, builtinTypes, opts)
			if diags.HasErrors() {
				var sb strings.Builder
				states.WriteDiagnostics(&sb, b, diags, false)
				t.Fatalf("Compile:\n%s", sb.String())
			}
			if name == "hello" { // plans on any machine: files and commands only
				if rep := states.Run(context.Background(), g, true); rep.Failed() {
					t.Fatalf("plan failed: %+v", rep.Results)
				}
			}
		})
	}
	if seen < 2 {
		t.Fatalf("found %d example bundles", seen)
	}
}

// TestDocsExamplesCompile compiles every hcl example of the package, exec and service sections of
// docs/states.md, so that the reference cannot drift from the schema.
func TestDocsExamplesCompile(t *testing.T) {
	doc, err := os.ReadFile("../docs/states.md")
	if err != nil {
		t.Fatalf("docs/states.md: %v", err)
	}
	n := 0
	for _, sec := range strings.Split(string(doc), "\n## ")[1:] {
		title, _, _ := strings.Cut(sec, "\n")
		if title != "package" && title != "exec" && title != "service" {
			continue
		}
		for _, blk := range strings.Split(sec, "```hcl\n")[1:] {
			src, _, _ := strings.Cut(blk, "```")
			_, diags := restest.Compile(&states.Bundle{Files: map[string][]byte{"doc.hcl": []byte(src)}}, builtinTypes, states.Options{})
			if diags.HasErrors() {
				t.Errorf("example in ## %s does not compile: %s\n%s", title, diags.Error(), src)
			}
			n++
		}
	}
	if n < 3 {
		t.Fatalf("found %d examples, want one per section at least", n)
	}
}
