package states_test

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

// Hostile nesting ends in a diagnostic at file:line:col, never in a fatal stack overflow: in
// the bundle's files, its templates (templatefile and a file's template), var files and --var.
func TestDeepNestingIsADiagnostic(t *testing.T) {
	const n = 100000
	deep := func(open, close string) string { return strings.Repeat(open, n) + strings.Repeat(close, n) }
	resource := "file \"/tmp/never\" {\n  content = \"x\"\n}\n"
	cases := map[string]struct {
		files map[string]string
		opts  states.Options
		where string
	}{
		"brackets":      {files: map[string]string{"main.hcl": "locals {\n  x = " + deep("[", "]") + "\n}\n" + resource}, where: "main.hcl:2:"},
		"parentheses":   {files: map[string]string{"main.hcl": "locals {\n  x = " + deep("(", ")") + "\n}\n" + resource}, where: "main.hcl:2:"},
		"objects":       {files: map[string]string{"main.hcl": "locals {\n  x = " + deep("{a=", "}") + "\n}\n" + resource}, where: "main.hcl:2:"},
		"blocks":        {files: map[string]string{"main.hcl": resource + deep("b {\n", "}\n")}, where: "main.hcl:"},
		"interpolation": {files: map[string]string{"main.hcl": "locals {\n  x = " + deep(`"${`, `}"`) + "\n}\n" + resource}, where: "main.hcl:2:"},
		"unary":         {files: map[string]string{"main.hcl": "locals {\n  x = " + strings.Repeat("!", 10*n) + "true\n}\n" + resource}, where: "main.hcl:2:"},
		"conditional":   {files: map[string]string{"main.hcl": "locals {\n  x = " + strings.Repeat("true ? 1 : ", n) + "2\n}\n" + resource}, where: "main.hcl:2:"},
		"subtraction":   {files: map[string]string{"main.hcl": "locals {\n  x = 1" + strings.Repeat(" - 1", n) + "\n}\n" + resource}, where: "main.hcl:2:"},
		"index chain":   {files: map[string]string{"main.hcl": "locals {\n  x = [1]" + strings.Repeat("[0 * 1]", n) + "\n}\n" + resource}, where: "main.hcl:2:"},
		"templatefile": {files: map[string]string{"main.hcl": "file \"/tmp/never\" {\n  content = templatefile(\"t.tmpl\", {})\n}\n",
			"t.tmpl": deep("%{ if true }", "%{ endif }")}, where: "t.tmpl:1,"},
		"file template": {files: map[string]string{"main.hcl": "file \"/tmp/never\" {\n  template = \"t.tmpl\"\n}\n",
			"t.tmpl": deep("${", "}")}, where: "t.tmpl:1,"},
		"var file": {files: map[string]string{"main.hcl": "variable \"v\" {}\n" + resource},
			opts: states.Options{VarFiles: map[string][]byte{"deep.hcl": []byte("v = " + deep("[", "]"))}}, where: "deep.hcl:1:"},
		"--var": {files: map[string]string{"main.hcl": "variable \"v\" { type = list(any) }\n" + resource},
			opts: states.Options{Vars: map[string]string{"v": deep("[", "]")}}, where: "--var v:1,"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			b := &states.Bundle{Files: map[string][]byte{}}
			for k, v := range c.files {
				b.Files[k] = []byte(v)
			}
			_, diags := restest.Compile(b, builtinTypes, c.opts)
			var buf bytes.Buffer
			states.WriteDiagnostics(&buf, b, diags, false)
			out := buf.String()
			if !diags.HasErrors() || !strings.Contains(out, "Nesting too deep") && !strings.Contains(out, "nests more than") || !strings.Contains(out, c.where) {
				t.Fatalf("want a nesting diagnostic at %s, got:\n%.2000s", c.where, out)
			}
			if len(out) > 2000 {
				t.Fatalf("diagnostic of %d bytes", len(out))
			}
		})
	}
}

// Nesting well within the bound compiles as before.
func TestModerateNestingCompiles(t *testing.T) {
	dir := t.TempDir()
	src := "locals {\n  x = " + strings.Repeat("[", 100) + "1" + strings.Repeat("]", 100) + "\n  y = " +
		strings.Repeat("true ? 1 : ", 50) + "2\n}\n" + strings.Repeat("dynamic_free {\n", 0) +
		"file \"" + dir + "/f\" {\n  content = \"${local.y}${jsonencode(local.x)}\"\n}\n"
	g, diags := restest.Compile(&states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, builtinTypes, states.Options{})
	if diags.HasErrors() || g.Len() != 1 {
		t.Fatal(diags)
	}
}

// A hard link in the bundle directory whose other name is outside is refused like an escaping
// symlink: left out of the bundle, and named in a diagnostic when the bundle uses it (file(),
// templatefile(), source) or when it is an .hcl file. Hard links wholly inside the bundle stay.
func TestHardLinksRefused(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "shadow")
	must(t, os.WriteFile(secret, []byte("root:$6$hash-outside\n"), 0o600))
	dir := t.TempDir()
	must(t, os.Link(secret, filepath.Join(dir, "data.txt")))
	must(t, os.WriteFile(filepath.Join(dir, "inside-a"), []byte("twice\n"), 0o644))
	must(t, os.Link(filepath.Join(dir, "inside-a"), filepath.Join(dir, "inside-b")))
	// A symlink inside the root to the hard link does not make it look like a second name.
	must(t, os.Symlink("data.txt", filepath.Join(dir, "alias.txt")))
	target := filepath.Join(t.TempDir(), "out")
	must(t, os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(`
file "`+target+`" {
  content = file("data.txt")
}
file "`+target+`2" {
  content = file("inside-b")
}
`), 0o644))
	b, err := states.ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"data.txt", "alias.txt"} {
		if _, ok := b.Files[n]; ok {
			t.Fatalf("%s (a hard link to a file outside) was read into the bundle", n)
		}
	}
	if string(b.Files["inside-b"]) != "twice\n" || string(b.Files["inside-a"]) != "twice\n" {
		t.Fatalf("hard links wholly inside the bundle were dropped: %v", slices.Sorted(maps.Keys(b.Files)))
	}
	if bytes.Contains(b.Marshal(), []byte("hash-outside")) {
		t.Fatal("the outside file's content is in the packed bundle")
	}
	_, diags := restest.Compile(b, builtinTypes, states.Options{})
	var buf bytes.Buffer
	states.WriteDiagnostics(&buf, b, diags, false)
	if !diags.HasErrors() || !strings.Contains(buf.String(), `"data.txt" is a hard link`) || !strings.Contains(buf.String(), "main.hcl:3:") {
		t.Fatalf("diagnostics:\n%s", buf.String())
	}

	// An .hcl file that is a hard link is refused even though nothing refers to it.
	must(t, os.WriteFile(filepath.Join(outside, "evil.hcl"), []byte("file \"/etc/evil\" { content = \"x\" }\n"), 0o644))
	dir2 := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir2, "main.hcl"), []byte("file \""+target+"\" { content = \"ok\" }\n"), 0o644))
	must(t, os.Link(filepath.Join(outside, "evil.hcl"), filepath.Join(dir2, "evil.hcl")))
	b2, err := states.ReadBundle(dir2)
	if err != nil {
		t.Fatal(err)
	}
	diags = restest.Check(b2, builtinTypes, states.Options{})
	buf.Reset()
	states.WriteDiagnostics(&buf, b2, diags, false)
	if !diags.HasErrors() || !strings.Contains(buf.String(), "evil.hcl:1:1") || !strings.Contains(buf.String(), "is a hard link") {
		t.Fatalf("diagnostics:\n%s", buf.String())
	}
}
