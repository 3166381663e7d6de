package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A drift schedule, `brine drift`, `brine jobs list` and the minion's job log through the real
// CLI, master and minion processes. The host's file holds terminal escapes: the diff shows them
// escaped.
func TestDriftThroughRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master and a minion")
	}
	dir, err := os.MkdirTemp("", "brdr") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "d1"), []byte("edited \x1b[2J by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(dir, "site")
	os.MkdirAll(filepath.Join(site, "motd"), 0o755)
	os.WriteFile(filepath.Join(site, "site.hcl"), []byte("assign \"*\" { bundles = [\"motd\"] }\n"), 0o644)
	os.WriteFile(filepath.Join(site, "motd", "main.hcl"), []byte("file \"motd\" {\n  path    = \""+out+"/${minion.id}\"\n  content = \"managed\\n\"\n}\n"), 0o644)
	pub, req := freePort(t), freePort(t)
	sock := filepath.Join(dir, "m.sock")
	cfg := filepath.Join(dir, "master.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`publish_addr = "127.0.0.1:%d"
request_addr = "127.0.0.1:%d"
heartbeat = "200ms"
control_socket = %q
site = %q
job_timeout = "10s"
schedule "watch" {
  every = "1s"
  mode  = "drift"
}
`, pub, req, sock, site)), 0o600)
	daemon(t, "master", "-c", cfg, "--data-dir", filepath.Join(dir, "master"))
	mcfg := filepath.Join(dir, "d1.hcl")
	os.WriteFile(mcfg, []byte(fmt.Sprintf("master = \"127.0.0.1\"\npublish_port = %d\nrequest_port = %d\nid = \"d1\"\nheartbeat = \"200ms\"\nmax_backoff = \"300ms\"\n", pub, req)), 0o600)
	mn := exec.Command(brineBin, "minion", "-c", mcfg, "--data-dir", filepath.Join(dir, "d1"))
	var mlog syncBuffer
	mn.Stdout, mn.Stderr = &mlog, &mlog
	mn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := mn.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-mn.Process.Pid, syscall.SIGKILL)
		_ = mn.Wait()
		if t.Failed() {
			t.Logf("minion log:\n%s", mlog.String())
		}
	})
	var drift string
	deadline := time.Now().Add(60 * time.Second)
	for {
		brine(t, "key", "accept", "d1", "--socket", sock)
		var code int
		drift, _, code = brine(t, "drift", "--socket", sock)
		if code == 0 && strings.Contains(drift, "d1: in drift") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drift reported for d1:\n%s", drift)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, want := range []string{"by schedule watch", "file.motd", `\x1b[2J`, "managed"} {
		if !strings.Contains(drift, want) {
			t.Errorf("brine drift lacks %q:\n%s", want, drift)
		}
	}
	if strings.Contains(drift, "\x1b") {
		t.Errorf("brine drift printed a raw escape:\n%q", drift)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "d1")); string(b) != "edited \x1b[2J by hand\n" {
		t.Fatalf("a drift check changed the file: %q", b)
	}
	if st, _, code := brine(t, "status", "d1", "--socket", sock); code != 0 || !strings.Contains(st, "in drift (1 resource(s))") {
		t.Errorf("status lacks the drift:\n%s", st)
	}
	jobs, _, code := brine(t, "jobs", "list", "--socket", sock, "--limit", "3")
	if code != 0 || !strings.Contains(jobs, "converge (dry run)") || !strings.Contains(jobs, "schedule watch") ||
		!strings.Contains(jobs, "motd@") || !strings.Contains(jobs, "1 ok") {
		t.Fatalf("jobs list:\n%s", jobs)
	}
	if _, _, code := brine(t, "ping", "d1", "--socket", sock, "--timeout", "10s"); code != 0 {
		t.Fatal("ping failed")
	}
	// The schedule goes on; the ping is among the newest jobs.
	jobs, _, _ = brine(t, "jobs", "list", "--socket", sock, "--limit", "20")
	found := false
	for _, l := range strings.Split(jobs, "\n") {
		f := strings.Fields(l)
		found = found || (len(f) >= 6 && f[1] == "ping" && f[2] == "d1" && f[3]+" "+f[4] == fmt.Sprintf("uid %d", os.Getuid()) && strings.Join(f[5:], " ") == "- 1 ok")
	}
	if !found {
		t.Fatalf("jobs list lacks the ping by uid %d:\n%s", os.Getuid(), jobs)
	}
	if l := mlog.String(); !strings.Contains(l, `msg="ran a job"`) || !strings.Contains(l, "kind=apply") || !strings.Contains(l, "dry_run=true") ||
		!strings.Contains(l, "bundle_digest=") || !strings.Contains(l, "outcome=succeeded") || !strings.Contains(l, "kind=ping") {
		t.Fatalf("the minion did not log its jobs:\n%s", l)
	}
}
