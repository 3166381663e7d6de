package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort returns a loopback TCP port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// daemon starts a brine process that runs until the test ends; its output is printed on failure.
func daemon(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(brineBin, args...)
	var logb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logb, &logb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("brine %s:\n%s", strings.Join(args, " "), logb.String())
		}
	})
}

// masterProc starts a real master as a process on loopback, in a temporary directory that holds
// its master.hcl; it returns the control socket (in that directory) and the two ports.
func masterProc(t *testing.T) (sock string, pub, req int) {
	t.Helper()
	dir, err := os.MkdirTemp("", "brro") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pub, req = freePort(t), freePort(t)
	cfg := filepath.Join(dir, "master.hcl")
	sock = filepath.Join(dir, "m.sock")
	os.WriteFile(cfg, []byte(fmt.Sprintf("publish_addr = \"127.0.0.1:%d\"\nrequest_addr = \"127.0.0.1:%d\"\nheartbeat = \"200ms\"\ncontrol_socket = %q\n", pub, req, sock)), 0o600)
	daemon(t, "master", "-c", cfg, "--data-dir", filepath.Join(dir, "master"))
	return sock, pub, req
}

// cluster starts a real master and minions r1..rN as processes on loopback and accepts them;
// it returns the control socket.
func cluster(t *testing.T, n int) string {
	t.Helper()
	sock, pub, req := masterProc(t)
	dir := filepath.Dir(sock)
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("r%d", i)
		mcfg := filepath.Join(dir, id+".hcl")
		os.WriteFile(mcfg, []byte(fmt.Sprintf("master = \"127.0.0.1\"\npublish_port = %d\nrequest_port = %d\nid = %q\nheartbeat = \"200ms\"\nmax_backoff = \"300ms\"\n", pub, req, id)), 0o600)
		daemon(t, "minion", "-c", mcfg, "--data-dir", filepath.Join(dir, id))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		brine(t, "key", "accept", "--all", "--socket", sock)
		if _, _, code := brine(t, "ping", "r*", "--socket", sock, "--timeout", "2s"); code == 0 {
			out, _, _ := brine(t, "ping", "r*", "--socket", sock, "--timeout", "2s")
			if strings.Count(out, "pong") == n {
				return sock
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("minions did not all answer ping")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The operator's rollout through the real CLI, master and minions: --batch 1 --max-failures 0
// stops after the first failing minion and names who was not touched; a failing canary stops
// before any batch.
func TestApplyRolloutThroughRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master and minions")
	}
	sock := cluster(t, 4)
	target := t.TempDir()
	blocker := filepath.Join(target, "blocker")
	os.WriteFile(blocker, []byte("x"), 0o644)
	bundle := writeBundle(t, map[string]string{"main.hcl": `
file "mark" {
  path    = minion.id == "r2" ? "` + blocker + `/${minion.id}" : "` + target + `/${minion.id}"
  content = "applied\n"
}`})
	out, stderr, code := brine(t, "apply", "r*", bundle, "--socket", sock, "--batch", "1", "--max-failures", "0", "--timeout", "20s")
	if code != 2 {
		t.Fatalf("want exit 2, got %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"batch 1/4: r1", "batch 2/4: r2", "rollout stopped after batch 2/4", "not touched: r3, r4"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(out, "2 not touched") {
		t.Fatalf("summary lacks the untouched minions:\n%s", out)
	}
	for id, want := range map[string]bool{"r1": true, "r3": false, "r4": false} {
		if _, err := os.Stat(filepath.Join(target, id)); (err == nil) != want {
			t.Fatalf("%s applied = %v, want %v", id, err == nil, want)
		}
	}

	// The canary fails: nothing else is touched, whatever --max-failures says.
	os.Remove(filepath.Join(target, "r1"))
	_, stderr, code = brine(t, "apply", "r*", bundle, "--socket", sock, "--canary", "r2", "--batch", "50%", "--max-failures", "3", "--timeout", "20s")
	if code != 2 || !strings.Contains(stderr, "canary 1/3: r2") || !strings.Contains(stderr, "the canary failed") {
		t.Fatalf("canary: exit %d\n%s", code, stderr)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 1 {
		t.Fatalf("something was applied after the canary failed: %v", entries)
	}

	// A broken bundle is stopped by the CLI itself, before it reaches the master.
	broken := writeBundle(t, map[string]string{"main.hcl": "file \"x\" {\n  path = \"/tmp/x\"\n  colour = 1\n}\nfiel \"y\" {}\n"})
	_, stderr, code = brine(t, "apply", "r*", broken, "--socket", sock)
	if code != 1 || !strings.Contains(stderr, "main.hcl:5:1") || !strings.Contains(stderr, "nothing was sent") {
		t.Fatalf("broken bundle: exit %d\n%s", code, stderr)
	}
}
