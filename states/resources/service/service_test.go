package service

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/daemon"
	"github.com/brinecm/brine/states/resources/restest"
)

// svcTestDirs points the pidfile mode at a temp dir (and away from any systemd) for one test.
func svcTestDirs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	saved := []*string{&serviceLogDir, &serviceEnableDir, &servicePidDir, &daemon.SystemdDir}
	old := make([]string, len(saved))
	for i, p := range saved {
		old[i] = *p
	}
	serviceLogDir = filepath.Join(dir, "log")
	serviceEnableDir = filepath.Join(dir, "etc")
	servicePidDir = filepath.Join(dir, "run")
	daemon.SystemdDir = filepath.Join(dir, "no-systemd")
	t.Cleanup(func() {
		for i, p := range saved {
			*p = old[i]
		}
	})
	return dir
}

// svcPid reads a pidfile; 0 when there is none.
func svcPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// svcKillOnCleanup kills whatever the pidfile names (and its group) when the test ends, so
// that a failing test leaves no daemon behind.
func svcKillOnCleanup(t *testing.T, pidfile string) {
	t.Cleanup(func() {
		if pid := svcPid(t, pidfile); pid > 1 {
			if pi, ok := daemon.ReadProc(pid); ok && pi.Pgid == pid {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// svcGroupMembers lists the live (not zombie) processes of process group pgid.
func svcGroupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pi, ok := daemon.ReadProc(pid); ok && pi.Pgid == pgid {
			out = append(out, pid)
		}
	}
	return out
}

func TestServicePidfileLifecycle(t *testing.T) {
	dir := svcTestDirs(t)
	pidfile := filepath.Join(servicePidDir, "tiny.pid")
	svcKillOnCleanup(t, pidfile)
	script := fmt.Sprintf(`trap 'echo hup >> %s/hups' HUP; while true; do sleep 0.1; done`, dir)
	bundle := func(state, reload string, enabled bool) string {
		return fmt.Sprintf(`exec "trigger" {
  command = "true"
  unless  = "test -f %[1]s/quiet"
  notify  = [service.tiny]
}
service "tiny" {
  state   = %[2]q
  enabled = %[3]t
  reload  = %[4]q
  command = %[5]q
}`, dir, state, enabled, reload, script)
	}
	starts := func() int {
		b, _ := os.ReadFile(filepath.Join(serviceLogDir, "tiny.log"))
		return strings.Count(string(b), "=== brine: start tiny")
	}

	// Start, enable, and a notify in the same run that must not restart it again.
	rep := restest.RunHCL(t, testTypes, bundle("running", "restart", true), false)
	r := restest.WantStatus(t, rep, "service.tiny", states.StatusChanged)
	if !strings.Contains(r.Diff, "state: stopped -> running") || !strings.Contains(r.Diff, "enabled: false -> true") || !r.Notified {
		t.Fatalf("first apply: %+v", r)
	}
	pid1 := svcPid(t, pidfile)
	if pi, ok := daemon.ReadProc(pid1); !ok || pi.Pgid != pid1 {
		t.Fatalf("pid %d from the pidfile: alive %v, pgid %d (want its own session)", pid1, ok, pi.Pgid)
	}
	if n := starts(); n != 1 {
		t.Fatalf("started %d times in the first run, want 1", n)
	}
	if fi, err := os.Stat(filepath.Join(serviceEnableDir, "tiny")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("boot script: %v %v", fi, err)
	}

	// Nothing changed, nothing notifies: no change.
	os.WriteFile(filepath.Join(dir, "quiet"), nil, 0o644)
	rep = restest.RunHCL(t, testTypes, bundle("running", "restart", true), false)
	restest.WantStatus(t, rep, "service.tiny", states.StatusOK)
	if svcPid(t, pidfile) != pid1 {
		t.Fatal("pid changed in a no-change run")
	}

	// A notify restarts it: new pid, old one gone.
	os.Remove(filepath.Join(dir, "quiet"))
	rep = restest.RunHCL(t, testTypes, bundle("running", "restart", true), false)
	if r := restest.WantStatus(t, rep, "service.tiny", states.StatusChanged); !r.Notified {
		t.Fatalf("not notified: %+v", r)
	}
	pid2 := svcPid(t, pidfile)
	if pid2 == pid1 || pid2 == 0 {
		t.Fatalf("restart on notify: pid %d -> %d", pid1, pid2)
	}
	if !daemon.WaitGone(context.Background(), pid1, 2*time.Second) {
		t.Fatalf("old daemon %d still alive after restart", pid1)
	}

	// reload = "reload": SIGHUP, same pid.
	rep = restest.RunHCL(t, testTypes, bundle("running", "reload", true), false)
	restest.WantStatus(t, rep, "service.tiny", states.StatusChanged)
	if svcPid(t, pidfile) != pid2 {
		t.Fatal("reload changed the pid")
	}
	deadline := time.Now().Add(5 * time.Second)
	for b, _ := os.ReadFile(filepath.Join(dir, "hups")); string(b) != "hup\n"; b, _ = os.ReadFile(filepath.Join(dir, "hups")) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon saw no SIGHUP: %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Stop and disable: the whole process group goes, the pidfile and boot script too.
	os.WriteFile(filepath.Join(dir, "quiet"), nil, 0o644)
	rep = restest.RunHCL(t, testTypes, bundle("stopped", "restart", false), false)
	r = restest.WantStatus(t, rep, "service.tiny", states.StatusChanged)
	if !strings.Contains(r.Diff, "state: running -> stopped") || !strings.Contains(r.Diff, "enabled: true -> false") {
		t.Fatalf("stop: %+v", r)
	}
	if !daemon.WaitGone(context.Background(), pid2, 2*time.Second) {
		t.Fatalf("daemon %d alive after stop", pid2)
	}
	if left := svcGroupMembers(pid2); len(left) != 0 {
		t.Fatalf("processes of the daemon's group left after stop: %v", left)
	}
	if restest.Exists(pidfile) || restest.Exists(filepath.Join(serviceEnableDir, "tiny")) {
		t.Fatal("pidfile or boot script left after stop and disable")
	}
	restest.WantStatus(t, restest.RunHCL(t, testTypes, bundle("stopped", "restart", false), false), "service.tiny", states.StatusOK)
}

func TestServiceRecycledPidIsNotRunning(t *testing.T) {
	svcTestDirs(t)
	pidfile := filepath.Join(servicePidDir, "web.pid")
	os.MkdirAll(servicePidDir, 0o755)
	// A live process that is not the service: this test binary.
	os.WriteFile(pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	rep := restest.RunHCL(t, testTypes, `service "web" {
  state   = "running"
  command = "sleep 1000"
}`, true)
	r := restest.WantStatus(t, rep, "service.web", states.StatusChanged)
	if r.Diff != "state: stopped -> running" {
		t.Fatalf("diff %q", r.Diff)
	}
}

func TestServiceForkingDaemonWritesPidfile(t *testing.T) {
	dir := svcTestDirs(t)
	pidfile := filepath.Join(dir, "forker.pid")
	svcKillOnCleanup(t, pidfile)
	script := filepath.Join(dir, "forker")
	os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/sh
if [ "$1" = run ]; then while :; do sleep 0.1; done; fi
"$0" run </dev/null >/dev/null 2>&1 &
echo $! > %s
`, pidfile)), 0o755)
	src := fmt.Sprintf(`service "forker" {
  state   = "running"
  command = %q
  pidfile = %q
}`, script, pidfile)
	restest.WantStatus(t, restest.RunHCL(t, testTypes, src, false), "service.forker", states.StatusChanged)
	pid := svcPid(t, pidfile)
	// The worker is a fork of the script's shell that then runs "forker run": until its exec
	// it still shows the parent's command line.
	var pi daemon.ProcInfo
	ok := false
	if !daemon.Await(context.Background(), 5*time.Second, func() bool {
		pi, ok = daemon.ReadProc(pid)
		return ok && strings.Contains(strings.Join(pi.Cmdline, " "), "forker run")
	}) {
		t.Fatalf("pidfile names %d (%v %v), want the forked worker", pid, pi.Cmdline, ok)
	}
	restest.WantStatus(t, restest.RunHCL(t, testTypes, src, false), "service.forker", states.StatusOK)
	restest.WantStatus(t, restest.RunHCL(t, testTypes, strings.Replace(src, `"running"`, `"stopped"`, 1), false), "service.forker", states.StatusChanged)
	if !daemon.WaitGone(context.Background(), pid, 2*time.Second) {
		t.Fatalf("worker %d alive after stop", pid)
	}
}

func TestServiceBootScriptStartsIt(t *testing.T) {
	svcTestDirs(t)
	pidfile := filepath.Join(servicePidDir, "booted.pid")
	svcKillOnCleanup(t, pidfile)
	src := func(state string) string {
		return fmt.Sprintf(`service "booted" {
  state   = %q
  enabled = true
  command = "sleep 1000"
}`, state)
	}
	restest.WantStatus(t, restest.RunHCL(t, testTypes, src("stopped"), false), "service.booted", states.StatusChanged)
	if restest.Exists(pidfile) {
		t.Fatal("a stopped service got a pidfile")
	}
	// What a boot hook does: run the scripts of the enable directory.
	out, err := exec.Command("/bin/sh", filepath.Join(serviceEnableDir, "booted")).CombinedOutput()
	if err != nil {
		t.Fatalf("boot script: %v: %s", err, out)
	}
	rep := restest.RunHCL(t, testTypes, src("running"), true)
	restest.WantStatus(t, rep, "service.booted", states.StatusOK)
	// Running it again while the daemon runs starts no second one.
	pid := svcPid(t, pidfile)
	exec.Command("/bin/sh", filepath.Join(serviceEnableDir, "booted")).Run()
	if svcPid(t, pidfile) != pid {
		t.Fatal("boot script started a second daemon")
	}
}

func TestServiceStartFailure(t *testing.T) {
	svcTestDirs(t)
	rep := restest.RunHCL(t, testTypes, `service "broken" {
  state   = "running"
  command = "echo bad config line 3 >&2; exit 1"
}
service "nocmd" {
  state = "running"
}`, false)
	r := restest.WantStatus(t, rep, "service.broken", states.StatusFailed)
	if !strings.Contains(r.Error, "exited at start") || !strings.Contains(r.Error, "bad config line 3") {
		t.Fatalf("error %q", r.Error)
	}
	r = restest.WantStatus(t, rep, "service.nocmd", states.StatusFailed)
	if !strings.Contains(r.Error, "no systemd") {
		t.Fatalf("error %q", r.Error)
	}
}

func TestServiceDiagnostics(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"service \"x\" {\n  state = \"runing\"\n}", `Did you mean "running"`},
		{"service \"x\" {\n  reload = \"hup\"\n}", "Invalid reload"},
		{"service \"../x\" {}", "Invalid service name"},
		{"service \"x\" {\n  command = \"d\"\n  pidfile = \"x.pid\"\n}", "absolute path"},
		{"service \"x\" {\n  enabled = \"yes\"\n}", "bool"},
	} {
		restest.WantCompileError(t, testTypes, tc.src, tc.want)
	}
}
