package states_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

// errorBundle makes a bundle directory from one testdata/errors file (as main.hcl) plus a canary
// resource that would write a file if anything were applied.
func errorBundle(t *testing.T, name string) (dir, canary string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "errors", name))
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	canary = filepath.Join(t.TempDir(), "canary")
	must(t, os.WriteFile(filepath.Join(dir, "main.hcl"), src, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "canary.hcl"), []byte(fmt.Sprintf("file %q {\n  content = \"applied\"\n}\n", canary)), 0o644))
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "passwd-link")))
	return dir, canary
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantOf reads the "# want: LINE:COL Summary" header of an error case.
func wantOf(t *testing.T, name string) (pos, summary string) {
	src, err := os.ReadFile(filepath.Join("testdata", "errors", name))
	must(t, err)
	first, _, _ := strings.Cut(string(src), "\n")
	rest, ok := strings.CutPrefix(first, "# want: ")
	if !ok {
		t.Fatalf("%s: first line must be # want: LINE:COL Summary", name)
	}
	pos, summary, _ = strings.Cut(rest, " ")
	return pos, summary
}

// Every broken bundle in testdata/errors yields its diagnostic at the exact position, and no
// graph: nothing of it can be applied.
func TestBrokenBundles(t *testing.T) {
	cases, err := filepath.Glob(filepath.Join("testdata", "errors", "*.hcl"))
	must(t, err)
	if len(cases) < 10 {
		t.Fatalf("only %d error cases found", len(cases))
	}
	for _, c := range cases {
		name := filepath.Base(c)
		t.Run(strings.TrimSuffix(name, ".hcl"), func(t *testing.T) {
			pos, summary := wantOf(t, name)
			dir, canary := errorBundle(t, name)
			b, err := states.ReadBundle(dir)
			must(t, err)
			g, diags := restest.Compile(b, builtinTypes, states.Options{Minion: states.Minion{ID: "test"}})
			if !diags.HasErrors() {
				t.Fatalf("no error diagnostic; got %v", diags)
			}
			if g != nil {
				t.Fatal("Compile returned a graph despite errors")
			}
			var out bytes.Buffer
			states.WriteDiagnostics(&out, b, diags, false)
			want := fmt.Sprintf("main.hcl:%s", pos)
			found := false
			for _, d := range diags {
				if d.Subject != nil && d.Summary == summary && strings.HasSuffix(fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column), want) {
					found = true
				}
			}
			if !found {
				t.Fatalf("want %q at %s; got:\n%s", summary, want, out.String())
			}
			if !strings.Contains(out.String(), want) {
				t.Fatalf("rendered diagnostics do not name %s:\n%s", want, out.String())
			}
			if _, err := os.Stat(canary); !os.IsNotExist(err) {
				t.Fatal("the canary file exists: something was applied")
			}
		})
	}
}

// Check, which the CLI runs before sending a bundle anywhere, finds the errors that need no
// minion, at the same positions as Compile.
func TestCheckFindsStaticErrors(t *testing.T) {
	for _, name := range []string{"syntax.hcl", "unknown_type.hcl", "cycle.hcl", "unknown_ref.hcl", "missing_var.hcl"} {
		t.Run(strings.TrimSuffix(name, ".hcl"), func(t *testing.T) {
			pos, summary := wantOf(t, name)
			dir, _ := errorBundle(t, name)
			b, err := states.ReadBundle(dir)
			must(t, err)
			diags := restest.Check(b, builtinTypes, states.Options{})
			found := false
			for _, d := range diags {
				if d.Subject != nil && d.Summary == summary && fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column) == pos {
					found = true
				}
			}
			if !found {
				t.Fatalf("Check did not report %q at %s: %v", summary, pos, diags)
			}
		})
	}
	ok := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(`file "/tmp/x" { content = minion.facts.anything_at_all }`)}}
	if diags := restest.Check(ok, builtinTypes, states.Options{}); diags.HasErrors() {
		t.Fatalf("Check needs no facts, but failed: %v", diags)
	}
}
