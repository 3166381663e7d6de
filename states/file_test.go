package states

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runSrc(t *testing.T, files map[string]string, dryRun bool) *Report {
	t.Helper()
	b := &Bundle{Files: map[string][]byte{}}
	for k, v := range files {
		b.Files[k] = []byte(v)
	}
	g, diags := Compile(b, Options{Minion: Minion{ID: "m1", Groups: []string{"web"}}})
	if diags.HasErrors() {
		var sb strings.Builder
		WriteDiagnostics(&sb, b, diags, false)
		t.Fatalf("compile: %s", sb.String())
	}
	return Run(context.Background(), g, dryRun)
}

func TestFileContentModeAndIdempotence(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "etc", "motd")
	src := map[string]string{"main.hcl": `
file "` + p + `" {
  content = "hello ${minion.id} in ${join(",", minion.groups)}\n"
  mode    = "0640"
}`}
	plan := runSrc(t, src, true)
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("plan created the file")
	}
	if !strings.Contains(plan.Results[0].Diff, "+hello m1 in web") {
		t.Fatalf("plan diff %q", plan.Results[0].Diff)
	}
	rep := runSrc(t, src, false)
	if rep.Counts()[StatusChanged] != 1 {
		t.Fatalf("first apply %+v", rep.Results)
	}
	st, err := os.Stat(p)
	must(t, err)
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	again := runSrc(t, src, false)
	if again.Counts()[StatusChanged] != 0 || again.Counts()[StatusOK] != 1 {
		t.Fatalf("second apply not a no-op: %+v", again.Results)
	}
	// Drift: content and mode changed behind brine's back are put back, with a unified diff.
	must(t, os.WriteFile(p, []byte("tampered\n"), 0o600))
	must(t, os.Chmod(p, 0o600))
	fix := runSrc(t, src, false)
	d := fix.Results[0].Diff
	if !strings.Contains(d, "-tampered") || !strings.Contains(d, "+hello m1") || !strings.Contains(d, "0600 -> 0640") {
		t.Fatalf("drift diff %q", d)
	}
	data, _ := os.ReadFile(p)
	if string(data) != "hello m1 in web\n" {
		t.Fatalf("content %q", data)
	}
}

func TestFileSourceTemplateDirectoryAbsent(t *testing.T) {
	dir := t.TempDir()
	gone := filepath.Join(dir, "gone")
	must(t, os.WriteFile(gone, []byte("x"), 0o644))
	src := map[string]string{
		"main.hcl": `
file "` + dir + `/from-source" { source = "files/plain.txt" }
file "` + dir + `/from-template" {
  template = "files/conf.tmpl"
  vars     = { port = 8080, hosts = ["a", "b"] }
}
file "` + dir + `/tree" {
  state   = "directory"
  source  = "files/tree"
  recurse = true
}
file "` + gone + `" { state = "absent" }
`,
		"files/plain.txt":    "plain\n",
		"files/conf.tmpl":    "listen ${port}\n%{ for h in hosts }upstream ${h}\n%{ endfor }",
		"files/tree/a.conf":  "a\n",
		"files/tree/sub/b":   "b\n",
		"files/unrelated.md": "not copied\n",
	}
	rep := runSrc(t, src, false)
	if rep.Failed() {
		t.Fatalf("%+v", rep.Results)
	}
	for p, want := range map[string]string{
		"from-source": "plain\n", "from-template": "listen 8080\nupstream a\nupstream b\n",
		"tree/a.conf": "a\n", "tree/sub/b": "b\n",
	} {
		data, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(data) != want {
			t.Fatalf("%s: %q %v", p, data, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "from-source")); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("a new file without mode must be 0644: %v %v", st.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tree", "unrelated.md")); !os.IsNotExist(err) {
		t.Fatal("a file outside the source directory was copied")
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Fatal("absent file still there")
	}
	if again := runSrc(t, src, false); again.Counts()[StatusChanged] != 0 {
		t.Fatalf("second apply changed: %+v", again.Results)
	}
}

// A file that cannot be written fails only itself and its dependents, and leaves the previous
// content whole (atomic replace): a later apply converges.
func TestFileFailureIsContainedAndConverges(t *testing.T) {
	// A path under a regular file cannot be created, even by root.
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	must(t, os.WriteFile(blocker, []byte("i am a file"), 0o644))
	src := map[string]string{"main.hcl": `
file "` + blocker + `/inner" { content = "x" }
file "` + dir + `/after" {
  content    = "y"
  depends_on = [file["` + blocker + `/inner"]]
}
file "` + dir + `/independent" { content = "z" }
`}
	rep := runSrc(t, src, false)
	st := statuses(rep)
	if st[Address("file", blocker+"/inner", 1)] != StatusFailed || st[Address("file", dir+"/after", 1)] != StatusSkipped || st[Address("file", dir+"/independent", 1)] != StatusChanged {
		t.Fatalf("statuses %v", st)
	}
	must(t, os.Remove(blocker))
	if again := runSrc(t, src, false); again.Failed() || again.Counts()[StatusChanged] != 2 {
		t.Fatalf("did not converge: %+v", again.Results)
	}
}

func TestWriteFileAtomicLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for i := 0; i < 3; i++ {
		must(t, WriteFileAtomic(p, []byte(strings.Repeat("x", i*1000)), 0o644, -1, -1))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left over: %v", entries)
	}
}

func TestBundleRoundTripAndHostileArchives(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte("x"), "files/a": []byte("y")}}
	b2, err := UnmarshalBundle(b.Marshal())
	must(t, err)
	if b2.Digest() != b.Digest() || len(b2.Files) != 2 {
		t.Fatal("round trip changed the bundle")
	}
	for _, bad := range []string{"../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./a"} {
		if validBundlePath(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := UnmarshalBundle([]byte("not a tar at all, just garbage bytes......")); err == nil {
		t.Error("garbage accepted")
	}
}

func FuzzUnmarshalBundle(f *testing.F) {
	f.Add((&Bundle{Files: map[string][]byte{"main.hcl": []byte("file \"/x\" {}")}}).Marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := UnmarshalBundle(data)
		if err != nil {
			return
		}
		for name := range b.Files {
			if !validBundlePath(name) {
				t.Fatalf("accepted invalid path %q", name)
			}
		}
	})
}
