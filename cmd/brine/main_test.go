package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/internal/pgtest"
)

// brineBin is the real binary, built once for the tests of this package; minionBin is the
// minion-only binary (cmd/brine-minion) beside it, as `make build` puts them.
var brineBin, minionBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "brine-cli-test-")
	if err != nil {
		panic(err)
	}
	brineBin = filepath.Join(dir, "brine")
	minionBin = filepath.Join(dir, "brine-minion")
	for bin, pkg := range map[string]string{brineBin: ".", minionBin: "../brine-minion"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			panic("build " + pkg + ": " + err.Error() + "\n" + string(out))
		}
	}
	code := m.Run()
	pgtest.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// brine runs the binary and returns stdout, stderr and the exit code.
func brine(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(brineBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	default:
		t.Fatalf("run brine: %v", err)
		return "", "", -1
	}
}

func writeBundle(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLocalApplyExitCodesAndOutput(t *testing.T) {
	target := t.TempDir()
	ok := writeBundle(t, map[string]string{"main.hcl": `
variable "who" { default = "world" }
file "greeting" {
  path    = "` + target + `/hello"
  content = "hello ${var.who}\n"
}`})
	out, _, code := brine(t, "local", "plan", ok)
	if code != 0 || !strings.Contains(out, "would change") || !strings.Contains(out, "+hello world") {
		t.Fatalf("plan: code %d\n%s", code, out)
	}
	if _, err := os.Stat(target + "/hello"); !os.IsNotExist(err) {
		t.Fatal("plan wrote the file")
	}
	out, _, code = brine(t, "local", "apply", ok, "--var", "who=brine")
	if code != 0 || !strings.Contains(out, "1 changed") {
		t.Fatalf("apply: code %d\n%s", code, out)
	}
	out, _, code = brine(t, "local", "apply", ok, "--var", "who=brine", "--json")
	var rep struct {
		Results []struct{ Address, Status string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || len(rep.Results) != 1 || rep.Results[0].Status != "ok" {
		t.Fatalf("second apply as JSON: code %d err %v\n%s", code, err, out)
	}
	if out, _, _ := brine(t, "local", "apply", ok, "--var", "who=brine"); strings.Contains(out, "file.greeting") {
		t.Fatalf("unchanged resources listed without -v:\n%s", out)
	}

	failing := writeBundle(t, map[string]string{"main.hcl": `
file "bad" {
  path    = "` + target + `/hello/under-a-file"
  content = "x"
}
file "good" {
  path    = "` + target + `/other"
  content = "y"
}`})
	out, _, code = brine(t, "local", "apply", failing)
	if code != 2 || !strings.Contains(out, "failed") {
		t.Fatalf("failing apply: want exit 2, got %d\n%s", code, out)
	}
	if _, err := os.Stat(target + "/other"); err != nil {
		t.Fatal("the independent resource was not applied")
	}
}

// A broken bundle exits 1, names file:line:col with the source line, and applies nothing.
func TestLocalApplyBrokenBundleAppliesNothing(t *testing.T) {
	target := t.TempDir()
	dir := writeBundle(t, map[string]string{
		"a.hcl": `file "fine" {
  path    = "` + target + `/fine"
  content = "x"
}`,
		"b.hcl": `file "broken" {
  path   = "` + target + `/broken"
  colour = "red"
}`})
	_, stderr, code := brine(t, "local", "apply", dir)
	if code != 1 {
		t.Fatalf("want exit 1, got %d\n%s", code, stderr)
	}
	for _, want := range []string{"b.hcl:3:3", `colour = "red"`, "^^^^^^", "nothing was applied"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("something was applied: %v", entries)
	}
	out, _, code := brine(t, "local", "apply", dir, "--json")
	if code != 1 || !strings.Contains(out, `"line":3`) || !strings.Contains(out, `"column":3`) {
		t.Fatalf("--json diagnostics: code %d\n%s", code, out)
	}
	if _, stderr, code := brine(t, "local", "apply", dir, "--var", "novalue"); code != 1 || !strings.Contains(stderr, "name=value") {
		t.Fatalf("usage error: code %d %s", code, stderr)
	}
}

func TestFactsAndHelp(t *testing.T) {
	out, _, code := brine(t, "facts")
	var facts map[string]any
	if err := json.Unmarshal([]byte(out), &facts); err != nil || code != 0 {
		t.Fatalf("facts: %v\n%s", err, out)
	}
	for _, k := range []string{"os", "os_version", "arch", "kernel", "hostname", "fqdn", "ipv4", "ipv6", "interfaces", "cpus", "memory_mb"} {
		if _, ok := facts[k]; !ok {
			t.Errorf("fact %q missing", k)
		}
	}
	out, _, _ = brine(t, "facts", "--fact", "role=web")
	if !strings.Contains(out, `"role": "web"`) {
		t.Errorf("user fact missing:\n%s", out)
	}
	for _, args := range [][]string{{"local", "apply", "--help"}, {"local", "plan", "--help"}, {"facts", "--help"}} {
		out, _, code := brine(t, args...)
		if code != 0 || !strings.Contains(out, "Examples:") {
			t.Errorf("%v: no example in help (exit %d)", args, code)
		}
	}
}

func TestVersion(t *testing.T) {
	long, _, code := brine(t, "--version")
	short, _, code2 := brine(t, "version")
	if code != 0 || code2 != 0 || !strings.HasPrefix(long, "brine ") || long != short {
		t.Fatalf("--version %q (%d), version %q (%d)", long, code, short, code2)
	}
}

func TestDaemonLogFlags(t *testing.T) {
	if _, errOut, code := brine(t, "master", "--log-format", "xml"); code != 1 || !strings.Contains(errOut, "--log-format") {
		t.Fatalf("bad --log-format: exit %d, %q", code, errOut)
	}
	if _, errOut, code := brine(t, "minion", "--log-level", "loud", "--master", "127.0.0.1"); code != 1 || !strings.Contains(errOut, "--log-level") {
		t.Fatalf("bad --log-level: exit %d, %q", code, errOut)
	}
	// A real master logging JSON: its first line is one JSON object.
	dir, err := os.MkdirTemp("", "brl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "master.hcl")
	os.WriteFile(cfg, []byte("data_dir = \""+dir+"\"\npublish_addr = \"127.0.0.1:0\"\nrequest_addr = \"127.0.0.1:0\"\n"), 0o600)
	cmd := exec.Command(brineBin, "master", "-c", cfg, "--log-format", "json", "--log-level", "debug")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("not a JSON log line: %q", sc.Text())
		}
		if rec["msg"] == "master started" {
			return
		}
	}
	t.Fatal("the master exited before it logged that it started")
}

// The shipped binary does not link the testing package: test helpers in linked packages take
// internal/tb.TB instead of testing.TB.
func TestBinaryDoesNotLinkTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Split(string(out), "\n") {
		if p == "testing" {
			t.Fatal("the brine binary links the testing package")
		}
	}
}
