package states_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

// Two bundles of a site merged into one graph: each member's file(), templatefile(), file
// sources and template paths stay relative to its own directory, a reference crosses bundles,
// and the merged bundle survives the trip through Marshal (a minion compiles it).
func TestMergedBundleKeepsPathsPerMember(t *testing.T) {
	out := t.TempDir()
	tree, _ := restest.WriteTree(t, map[string]string{
		"site.hcl":            `assign "*" { bundles = ["base", "app"] }`,
		"base/main.hcl":       `file "` + out + `/motd" { content = file("files/motd") }` + "\nlocals { greeting = file(\"files/motd\") }\n",
		"base/files/motd":     "base motd\n",
		"app/main.hcl":        "file \"" + out + "/app.conf\" {\n  content = templatefile(\"files/app.tmpl\", { g = local.greeting })\n  depends_on = [file[\"" + out + "/motd\"]]\n}\nfile \"" + out + "/src\" { source = \"files/motd\" }\nfile \"" + out + "/tpl\" {\n  template = \"files/app.tmpl\"\n  vars = { g = \"t\" }\n}\n",
		"app/files/app.tmpl":  "app says ${g}",
		"app/files/motd":      "app motd\n",
		"other/main.hcl":      `file "/nowhere" { content = "x" }`,
		"notabundle/file.txt": "x",
	})
	if got := strings.Join(states.SiteBundles(tree), ","); got != "app,base,other" {
		t.Fatalf("SiteBundles = %s", got)
	}
	m, err := states.MergeBundles(tree, []string{"base", "app", "base"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.Members(), ","); got != "app,base" {
		t.Fatalf("members = %s", got)
	}
	wire, err := states.UnmarshalBundle(m.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if diags := restest.Check(wire, builtinTypes, states.Options{}); diags.HasErrors() {
		t.Fatal(diags)
	}
	g, diags := restest.Compile(wire, builtinTypes, states.Options{Minion: states.Minion{ID: "m1"}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if g.Len() != 4 {
		t.Fatalf("graph: %v", g.Addresses())
	}
	rep := states.Run(context.Background(), g, false)
	if rep.Failed() {
		t.Fatalf("run failed: %+v", rep.Results)
	}
	for name, want := range map[string]string{"motd": "base motd\n", "app.conf": "app says base motd\n", "src": "app motd\n", "tpl": "app says t"} {
		got, _ := os.ReadFile(filepath.Join(out, name))
		if string(got) != want {
			t.Fatalf("%s = %q, want %q", name, got, want)
		}
	}
	// A path cannot reach a sibling bundle.
	bad, _ := restest.WriteTree(t, map[string]string{
		"a/main.hcl": `file "/x" { content = file("../b/secret") }`,
		"b/main.hcl": `file "/y" { content = "y" }`,
		"b/secret":   "s",
	})
	mb, _ := states.MergeBundles(bad, []string{"a", "b"})
	if _, diags := restest.Compile(mb, builtinTypes, states.Options{Minion: states.Minion{ID: "m1"}}); !diags.HasErrors() || !strings.Contains(diags.Error(), "escapes the bundle root") {
		t.Fatalf("a member read a sibling's file: %v", diags)
	}
	if _, err := states.MergeBundles(tree, []string{"nosuch"}); err == nil {
		t.Fatal("merged a bundle that does not exist")
	}
}

// The same address in two bundles is an error that names both files with line and column.
func TestMergedBundleDuplicateNamesBothFiles(t *testing.T) {
	tree, dir := restest.WriteTree(t, map[string]string{
		"base/main.hcl": "\npackage \"nginx\" {}\n",
		"web/main.hcl":  "package \"curl\" {}\npackage \"nginx\" {}\n",
	})
	tree.Root = dir
	m, _ := states.MergeBundles(tree, []string{"base", "web"})
	diags := restest.Check(m, builtinTypes, states.Options{})
	if !diags.HasErrors() {
		t.Fatal("a duplicate across bundles passed")
	}
	var buf bytes.Buffer
	states.WriteDiagnostics(&buf, m, diags, false)
	for _, want := range []string{"Duplicate resource", filepath.Join(dir, "web/main.hcl") + ":2:1", filepath.Join(dir, "base/main.hcl") + ":2,1-"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("diagnostics lack %q:\n%s", want, buf.String())
		}
	}
}

func TestParseSite(t *testing.T) {
	src := `group "app" { target = "web* or fact:role=app" }
group "app" { target = "x" }
assign "group:app" { bundles = ["base", "app"] }
assign "*" { bundles = ["bsae"] }
assign "db*" { bundles = "base" }
`
	spec, diags := states.ParseSite([]byte(src), "site.hcl", []string{"app", "base"})
	text := restest.AllDiags(diags)
	for _, want := range []string{"site.hcl:2,1-", "Duplicate group", `The site has no bundle "bsae"`, `Did you mean "base"?`, "bundles is a list"} {
		if !strings.Contains(text, want) {
			t.Fatalf("diagnostics lack %q: %s", want, text)
		}
	}
	if len(spec.Groups) != 1 || spec.Groups[0].Target != "web* or fact:role=app" || len(spec.Assigns) < 1 || strings.Join(spec.Assigns[0].Bundles, ",") != "base,app" {
		t.Fatalf("spec: %+v", spec)
	}
}
