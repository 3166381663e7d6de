package exec

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/daemon"
	"github.com/brinecm/brine/states/resources/restest"
)

func TestExecCreates(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "made")
	src := fmt.Sprintf(`exec "make" {
  command = "echo run >> %[1]s/log; touch %[2]s"
  creates = %[2]q
}`, dir, marker)
	rep := restest.RunHCL(t, testTypes, src, true)
	r := restest.WantStatus(t, rep, "exec.make", states.StatusChanged)
	if !strings.Contains(r.Diff, "made missing") || pathExists(marker) {
		t.Fatalf("plan: diff %q, marker exists %v", r.Diff, pathExists(marker))
	}
	restest.WantStatus(t, restest.RunHCL(t, testTypes, src, false), "exec.make", states.StatusChanged)
	restest.WantStatus(t, restest.RunHCL(t, testTypes, src, false), "exec.make", states.StatusOK)
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
	r := restest.WantStatus(t, restest.RunHCL(t, testTypes, src, false), "exec.liar", states.StatusFailed)
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
	rep := restest.RunHCL(t, testTypes, src, false)
	restest.WantStatus(t, rep, "exec.once", states.StatusChanged)
	restest.WantStatus(t, rep, "exec.gated", states.StatusOK)
	rep = restest.RunHCL(t, testTypes, src, false)
	restest.WantStatus(t, rep, "exec.once", states.StatusOK)
	if err := os.WriteFile(filepath.Join(dir, "flag"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rep = restest.RunHCL(t, testTypes, src, false)
	restest.WantStatus(t, rep, "exec.gated", states.StatusChanged)
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
	rep := restest.RunHCL(t, testTypes, src, false)
	restest.WantStatus(t, rep, "exec.envcwd", states.StatusChanged)
	out, _ := os.ReadFile(filepath.Join(dir, "out"))
	if want := "hello world " + dir + "\n"; string(out) != want {
		t.Fatalf("out %q, want %q", out, want)
	}
	r := restest.WantStatus(t, rep, "exec.fails", states.StatusFailed)
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
	r := restest.WantStatus(t, restest.RunHCL(t, testTypes, src, false), "exec.hang", states.StatusFailed)
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
	if !daemon.WaitGone(context.Background(), pid, 5*time.Second) {
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
	rep := restest.RunHCL(t, testTypes, src, false)
	restest.WantStatus(t, rep, "exec.trigger", states.StatusChanged)
	if r := restest.WantStatus(t, rep, "exec.handler", states.StatusChanged); !r.Notified {
		t.Fatalf("handler not notified: %+v", r)
	}
	restest.WantStatus(t, rep, "exec.ranalready", states.StatusChanged)
	for name, want := range map[string]string{"handler": "h\n", "ranalready": "r\n"} {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != want {
			t.Fatalf("%s ran %q, want %q (once)", name, b, want)
		}
	}
	// Without a notify a refresh_only exec does nothing.
	os.WriteFile(filepath.Join(dir, "quiet"), nil, 0o644)
	rep = restest.RunHCL(t, testTypes, src, false)
	for _, a := range []string{"exec.trigger", "exec.handler", "exec.ranalready"} {
		restest.WantStatus(t, rep, a, states.StatusOK)
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
		restest.WantCompileError(t, testTypes, tc.src, tc.want)
	}
}
