package states

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		seen++
		t.Run(name, func(t *testing.T) {
			b, err := ReadBundle(dir)
			must(t, err)
			opts := Options{Vars: vars[name], Secrets: secrets[name], Minion: Minion{ID: "web1", Groups: []string{"app", "cache", "db", "core"}, Facts: facts}}
			if diags := Check(b, opts); diags.HasErrors() {
				var sb strings.Builder
				WriteDiagnostics(&sb, b, diags, false)
				t.Fatalf("Check:\n%s", sb.String())
			}
			g, diags := Compile(b, opts)
			if diags.HasErrors() {
				var sb strings.Builder
				WriteDiagnostics(&sb, b, diags, false)
				t.Fatalf("Compile:\n%s", sb.String())
			}
			if name == "hello" { // plans on any machine: files and commands only
				if rep := Run(context.Background(), g, true); rep.Failed() {
					t.Fatalf("plan failed: %+v", rep.Results)
				}
			}
		})
	}
	if seen < 2 {
		t.Fatalf("found %d example bundles", seen)
	}
}
