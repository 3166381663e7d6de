package file

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

func runSrc(t *testing.T, files map[string]string, dryRun bool) *states.Report {
	t.Helper()
	b := &states.Bundle{Files: map[string][]byte{}}
	for k, v := range files {
		b.Files[k] = []byte(v)
	}
	g, diags := restest.Compile(b, testTypes, states.Options{Minion: states.Minion{ID: "m1", Groups: []string{"web"}}})
	if diags.HasErrors() {
		var sb strings.Builder
		states.WriteDiagnostics(&sb, b, diags, false)
		t.Fatalf("compile: %s", sb.String())
	}
	return states.Run(context.Background(), g, dryRun)
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
	if rep.Counts()[states.StatusChanged] != 1 {
		t.Fatalf("first apply %+v", rep.Results)
	}
	st, err := os.Stat(p)
	restest.Must(t, err)
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	again := runSrc(t, src, false)
	if again.Counts()[states.StatusChanged] != 0 || again.Counts()[states.StatusOK] != 1 {
		t.Fatalf("second apply not a no-op: %+v", again.Results)
	}
	// Drift: content and mode changed behind brine's back are put back, with a unified diff.
	restest.Must(t, os.WriteFile(p, []byte("tampered\n"), 0o600))
	restest.Must(t, os.Chmod(p, 0o600))
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
	restest.Must(t, os.WriteFile(gone, []byte("x"), 0o644))
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
	if again := runSrc(t, src, false); again.Counts()[states.StatusChanged] != 0 {
		t.Fatalf("second apply changed: %+v", again.Results)
	}
}

// A file that cannot be written fails only itself and its dependents, and leaves the previous
// content whole (atomic replace): a later apply converges.
func TestFileFailureIsContainedAndConverges(t *testing.T) {
	// A path under a regular file cannot be created, even by root.
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	restest.Must(t, os.WriteFile(blocker, []byte("i am a file"), 0o644))
	src := map[string]string{"main.hcl": `
file "` + blocker + `/inner" { content = "x" }
file "` + dir + `/after" {
  content    = "y"
  depends_on = [file["` + blocker + `/inner"]]
}
file "` + dir + `/independent" { content = "z" }
`}
	rep := runSrc(t, src, false)
	st := restest.Statuses(rep)
	if st[states.Address("file", blocker+"/inner", 1)] != states.StatusFailed || st[states.Address("file", dir+"/after", 1)] != states.StatusSkipped || st[states.Address("file", dir+"/independent", 1)] != states.StatusChanged {
		t.Fatalf("statuses %v", st)
	}
	restest.Must(t, os.Remove(blocker))
	if again := runSrc(t, src, false); again.Failed() || again.Counts()[states.StatusChanged] != 2 {
		t.Fatalf("did not converge: %+v", again.Results)
	}
}

// A report's texts are bounded (states/reportbound.go): 70 files of 20,000 lines each, all
// replaced, report a cut diff each (64 KiB at most, and 256 bytes once the run has reported
// 4 MiB), so that the whole report stays far under what the master takes back (16 MiB), where
// their whole diffs took 120 MB. The files themselves are written whole.
func TestLargeDiffsAreCutInTheReport(t *testing.T) {
	dir := t.TempDir()
	var line strings.Builder
	for i := range 20000 {
		line.WriteString("line ")
		line.WriteString(strings.Repeat("x", i%7))
		line.WriteString(" of a large configuration file\n")
	}
	old := line.String()
	var hcl strings.Builder
	for i := range 70 {
		p := filepath.Join(dir, "f"+strings.Repeat("0", 3-len(itoa(i)))+itoa(i))
		restest.Must(t, os.WriteFile(p, []byte(old), 0o644))
		hcl.WriteString("file \"" + p + "\" {\n  content = replace(file(\"big.txt\"), \"large\", \"huge\")\n}\n")
	}
	rep := runSrc(t, map[string]string{"main.hcl": hcl.String(), "big.txt": old}, false)
	if n := rep.Counts()[states.StatusChanged]; n != 70 {
		t.Fatalf("%d changed, want 70: %+v", n, rep.Results[0])
	}
	total := 0
	for i, r := range rep.Results {
		total += len(r.Diff)
		if len(r.Diff) > 64<<10+64 || !strings.Contains(r.Diff, "more bytes not shown") {
			t.Fatalf("result %d: a diff of %d bytes, not cut", i, len(r.Diff))
		}
	}
	if total > 5<<20 {
		t.Fatalf("the report's diffs take %d bytes", total)
	}
	if last := rep.Results[69].Diff; len(last) > 256+64 || !strings.HasPrefix(last, "--- ") {
		t.Fatalf("past 4 MiB, a diff of %d bytes: %.80q", len(last), last)
	}
	data, _ := os.ReadFile(rep.Results[69].Name)
	if want := strings.ReplaceAll(old, "large", "huge"); string(data) != want {
		t.Fatalf("the file holds %d bytes, want %d", len(data), len(want))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
