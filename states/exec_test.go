package states

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runHCL compiles one bundle file and applies (or plans) it in process.
func runHCL(t *testing.T, src string, dryRun bool) *Report {
	t.Helper()
	g, diags := Compile(&Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, Options{})
	if diags.HasErrors() {
		t.Fatalf("compile: %s", diags.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return Run(ctx, g, dryRun)
}

func resultOf(t *testing.T, rep *Report, addr string) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", addr, rep.Results)
	return Result{}
}

func wantStatus(t *testing.T, rep *Report, addr string, want Status) Result {
	t.Helper()
	r := resultOf(t, rep, addr)
	if r.Status != want {
		t.Fatalf("%s: status %s, want %s (diff %q, error %q)", addr, r.Status, want, r.Diff, r.Error)
	}
	return r
}

func TestExecCreates(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "made")
	src := fmt.Sprintf(`exec "make" {
  command = "echo run >> %[1]s/log; touch %[2]s"
  creates = %[2]q
}`, dir, marker)
	rep := runHCL(t, src, true)
	r := wantStatus(t, rep, "exec.make", StatusChanged)
	if !strings.Contains(r.Diff, "made missing") || pathExists(marker) {
		t.Fatalf("plan: diff %q, marker exists %v", r.Diff, pathExists(marker))
	}
	wantStatus(t, runHCL(t, src, false), "exec.make", StatusChanged)
	wantStatus(t, runHCL(t, src, false), "exec.make", StatusOK)
	if log, _ := os.ReadFile(filepath.Join(dir, "log")); string(log) != "run\n" {
		t.Fatalf("command ran %q, want once", log)
	}
}

func TestExecCreatesNotMade(t *testing.T) {
	dir := t.TempDir()
	src := fmt.Sprintf(`exec "liar" {
  command = "true"
  creates = "%s/never"
}`, dir)
	r := wantStatus(t, runHCL(t, src, false), "exec.liar", StatusFailed)
	if !strings.Contains(r.Error, "does not exist") {
		t.Fatalf("error %q", r.Error)
	}
}

func TestExecUnlessAndOnlyIf(t *testing.T) {
	dir := t.TempDir()
	src := fmt.Sprintf(`exec "once" {
  command = "echo x >> log"
  unless  = "grep -q x log"
  cwd     = %[1]q
}
exec "gated" {
  command = "echo y >> gated"
  only_if = "test -f %[1]s/flag"
  cwd     = %[1]q
}`, dir)
	rep := runHCL(t, src, false)
	wantStatus(t, rep, "exec.once", StatusChanged)
	wantStatus(t, rep, "exec.gated", StatusOK)
	rep = runHCL(t, src, false)
	wantStatus(t, rep, "exec.once", StatusOK)
	if err := os.WriteFile(filepath.Join(dir, "flag"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rep = runHCL(t, src, false)
	wantStatus(t, rep, "exec.gated", StatusChanged)
	if b, _ := os.ReadFile(filepath.Join(dir, "log")); string(b) != "x\n" {
		t.Fatalf("log %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "gated")); string(b) != "y\n" {
		t.Fatalf("gated %q", b)
	}
}

func TestExecEnvCwdAndFailure(t *testing.T) {
	dir := t.TempDir()
	src := fmt.Sprintf(`exec "envcwd" {
  command = "printf '%%s %%s\n' \"$GREETING\" \"$(pwd)\" > out"
  env     = { GREETING = "hello world" }
  cwd     = %[1]q
  creates = "%[1]s/out"
}
exec "fails" {
  command = "echo something broke >&2; exit 3"
}`, dir)
	rep := runHCL(t, src, false)
	wantStatus(t, rep, "exec.envcwd", StatusChanged)
	out, _ := os.ReadFile(filepath.Join(dir, "out"))
	if want := "hello world " + dir + "\n"; string(out) != want {
		t.Fatalf("out %q, want %q", out, want)
	}
	r := wantStatus(t, rep, "exec.fails", StatusFailed)
	if !strings.Contains(r.Error, "status 3") || !strings.Contains(r.Error, "something broke") {
		t.Fatalf("error %q lacks the status or the output", r.Error)
	}
}

func TestExecTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	src := fmt.Sprintf(`exec "hang" {
  command = "sleep 1000 & echo $! > %s/child; sleep 1000"
  timeout = "300ms"
}`, dir)
	start := time.Now()
	r := wantStatus(t, runHCL(t, src, false), "exec.hang", StatusFailed)
	if !strings.Contains(r.Error, "timed out") || time.Since(start) > 10*time.Second {
		t.Fatalf("error %q after %s", r.Error, time.Since(start))
	}
	b, err := os.ReadFile(filepath.Join(dir, "child"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if !waitGone(context.Background(), pid, 5*time.Second) {
		t.Fatalf("background child %d of the timed-out command is still alive", pid)
	}
}

func TestExecNotify(t *testing.T) {
	dir := t.TempDir()
	src := fmt.Sprintf(`exec "trigger" {
  command = "true"
  unless  = "test -f %[1]s/quiet"
  notify  = [exec.handler, exec.ranalready]
}
exec "handler" {
  command      = "echo h >> %[1]s/handler"
  refresh_only = true
}
exec "ranalready" {
  command = "echo r >> %[1]s/ranalready"
  unless  = "test -f %[1]s/quiet"
}`, dir)
	rep := runHCL(t, src, false)
	wantStatus(t, rep, "exec.trigger", StatusChanged)
	if r := wantStatus(t, rep, "exec.handler", StatusChanged); !r.Notified {
		t.Fatalf("handler not notified: %+v", r)
	}
	wantStatus(t, rep, "exec.ranalready", StatusChanged)
	for name, want := range map[string]string{"handler": "h\n", "ranalready": "r\n"} {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != want {
			t.Fatalf("%s ran %q, want %q (once)", name, b, want)
		}
	}
	// Without a notify a refresh_only exec does nothing.
	os.WriteFile(filepath.Join(dir, "quiet"), nil, 0o644)
	rep = runHCL(t, src, false)
	for _, a := range []string{"exec.trigger", "exec.handler", "exec.ranalready"} {
		wantStatus(t, rep, a, StatusOK)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "handler")); string(b) != "h\n" {
		t.Fatalf("handler ran without a notify: %q", b)
	}
}

func TestExecDiagnostics(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"exec \"a\" {\n  command = \"x\"\n  timeout = \"soon\"\n}", "main.hcl:3,13"},
		{"exec \"a\" {\n  command = \"x\"\n  creates = \"rel/path\"\n}", "absolute path"},
		{"exec \"a\" {\n  comand = \"x\"\n}", "Did you mean \"command\""},
		{"exec \"a\" {\n  command = \"x\"\n  cwd = \"tmp\"\n}", "Invalid cwd"},
	} {
		wantCompileError(t, tc.src, tc.want)
	}
}
