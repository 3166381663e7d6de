package states

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// writeTree writes files (slash paths) under a new directory and reads it as a bundle.
func writeTree(t *testing.T, files map[string]string) (*Bundle, string) {
	t.Helper()
	dir := t.TempDir()
	for n, c := range files {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b, dir
}

// Two bundles of a site merged into one graph: each member's file(), templatefile(), file
// sources and template paths stay relative to its own directory, a reference crosses bundles,
// and the merged bundle survives the trip through Marshal (a minion compiles it).
func TestMergedBundleKeepsPathsPerMember(t *testing.T) {
	out := t.TempDir()
	tree, _ := writeTree(t, map[string]string{
		"site.hcl":            `assign "*" { bundles = ["base", "app"] }`,
		"base/main.hcl":       `file "` + out + `/motd" { content = file("files/motd") }` + "\nlocals { greeting = file(\"files/motd\") }\n",
		"base/files/motd":     "base motd\n",
		"app/main.hcl":        "file \"" + out + "/app.conf\" {\n  content = templatefile(\"files/app.tmpl\", { g = local.greeting })\n  depends_on = [file[\"" + out + "/motd\"]]\n}\nfile \"" + out + "/src\" { source = \"files/motd\" }\nfile \"" + out + "/tpl\" {\n  template = \"files/app.tmpl\"\n  vars = { g = \"t\" }\n}\n",
		"app/files/app.tmpl":  "app says ${g}",
		"app/files/motd":      "app motd\n",
		"other/main.hcl":      `file "/nowhere" { content = "x" }`,
		"notabundle/file.txt": "x",
	})
	if got := strings.Join(SiteBundles(tree), ","); got != "app,base,other" {
		t.Fatalf("SiteBundles = %s", got)
	}
	m, err := MergeBundles(tree, []string{"base", "app", "base"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.Members(), ","); got != "app,base" {
		t.Fatalf("members = %s", got)
	}
	wire, err := UnmarshalBundle(m.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if diags := Check(wire, Options{}); diags.HasErrors() {
		t.Fatal(diags)
	}
	g, diags := Compile(wire, Options{Minion: Minion{ID: "m1"}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if g.Len() != 4 {
		t.Fatalf("graph: %v", g.Addresses())
	}
	rep := Run(context.Background(), g, false)
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
	bad, _ := writeTree(t, map[string]string{
		"a/main.hcl": `file "/x" { content = file("../b/secret") }`,
		"b/main.hcl": `file "/y" { content = "y" }`,
		"b/secret":   "s",
	})
	mb, _ := MergeBundles(bad, []string{"a", "b"})
	if _, diags := Compile(mb, Options{Minion: Minion{ID: "m1"}}); !diags.HasErrors() || !strings.Contains(diags.Error(), "escapes the bundle root") {
		t.Fatalf("a member read a sibling's file: %v", diags)
	}
	if _, err := MergeBundles(tree, []string{"nosuch"}); err == nil {
		t.Fatal("merged a bundle that does not exist")
	}
}

// The same address in two bundles is an error that names both files with line and column.
func TestMergedBundleDuplicateNamesBothFiles(t *testing.T) {
	tree, dir := writeTree(t, map[string]string{
		"base/main.hcl": "\npackage \"nginx\" {}\n",
		"web/main.hcl":  "package \"curl\" {}\npackage \"nginx\" {}\n",
	})
	tree.Root = dir
	m, _ := MergeBundles(tree, []string{"base", "web"})
	diags := Check(m, Options{})
	if !diags.HasErrors() {
		t.Fatal("a duplicate across bundles passed")
	}
	var buf bytes.Buffer
	WriteDiagnostics(&buf, m, diags, false)
	for _, want := range []string{"Duplicate resource", filepath.Join(dir, "web/main.hcl") + ":2:1", filepath.Join(dir, "base/main.hcl") + ":2,1-"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("diagnostics lack %q:\n%s", want, buf.String())
		}
	}
}

// ufw blocks of several bundles merge into one firewall; a conflicting setting or a different
// rule under the same name is an error naming both blocks.
func TestUfwBlocksMerge(t *testing.T) {
	tree, _ := writeTree(t, map[string]string{
		"base/fw.hcl": `ufw {
  default_incoming = "deny"
  allow "ssh" {
    port  = "22"
    proto = "tcp"
  }
}`,
		"web/fw.hcl": `ufw {
  allow "http" {
    port  = "80"
    proto = "tcp"
  }
  allow "ssh-again" {
    port  = "22"
    proto = "tcp"
  }
}`,
		"db/fw.hcl": `ufw {
  default_incoming = "allow"
  allow "ssh" {
    port  = "2222"
    proto = "tcp"
  }
}`,
	})
	m, _ := MergeBundles(tree, []string{"base", "web"})
	g, diags := Compile(m, Options{Minion: Minion{ID: "m1"}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if g.Len() != 1 {
		t.Fatalf("want one ufw resource, got %v", g.Addresses())
	}
	u := g.nodes[0].res.(*ufwRes)
	var names []string
	for _, r := range u.rules {
		names = append(names, r.name)
	}
	if strings.Join(names, ",") != "ssh,http" || u.defaults["incoming"] != "deny" {
		t.Fatalf("merged ufw: rules %v, defaults %v", names, u.defaults)
	}
	m, _ = MergeBundles(tree, []string{"base", "db"})
	_, diags = Compile(m, Options{Minion: Minion{ID: "m1"}})
	text := allDiags(diags)
	for _, want := range []string{"default_incoming is allow here and deny at", "A different rule named \"ssh\""} {
		if !strings.Contains(text, want) {
			t.Fatalf("diagnostics lack %q: %s", want, text)
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
	spec, diags := ParseSite([]byte(src), "site.hcl", []string{"app", "base"})
	text := allDiags(diags)
	for _, want := range []string{"site.hcl:2,1-", "Duplicate group", `The site has no bundle "bsae"`, `Did you mean "base"?`, "bundles is a list"} {
		if !strings.Contains(text, want) {
			t.Fatalf("diagnostics lack %q: %s", want, text)
		}
	}
	if len(spec.Groups) != 1 || spec.Groups[0].Target != "web* or fact:role=app" || len(spec.Assigns) < 1 || strings.Join(spec.Assigns[0].Bundles, ",") != "base,app" {
		t.Fatalf("spec: %+v", spec)
	}
}

func allDiags(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		b.WriteString(d.Error() + "\n")
	}
	return b.String()
}
