package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
)

// runBin runs a binary and returns its stdout, stderr and exit code.
func runBin(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// The minion-only binary and the full one installed under its name (what the cloud bootstrap
// and `brine enroll` do without brine-minion at hand) behave as one command line: version,
// help, usage errors, a config file's diagnostics.
func TestMinionBinaryCommandLine(t *testing.T) {
	link := filepath.Join(t.TempDir(), "brine-minion")
	if err := os.Symlink(brineBin, link); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "minion.hcl")
	if err := os.WriteFile(bad, []byte("master = \"m1\"\nid = \"Web 1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{minionBin, link} {
		t.Run(filepath.Base(filepath.Dir(bin)), func(t *testing.T) {
			if out, _, code := runBin(t, bin, "--version"); code != 0 || !strings.HasPrefix(out, "brine-minion ") {
				t.Errorf("--version: exit %d %q", code, out)
			}
			if out, _, code := runBin(t, bin, "--help"); code != 0 || !strings.Contains(out, "Run a minion.") || !strings.Contains(out, "--data-dir") {
				t.Errorf("--help: exit %d %q", code, out)
			}
			if _, errOut, code := runBin(t, bin, "apply"); code != 2 || !strings.Contains(errOut, `unexpected argument "apply"`) {
				t.Errorf("an argument: exit %d %q", code, errOut)
			}
			if _, errOut, code := runBin(t, bin, "--nosuch"); code != 2 || !strings.Contains(errOut, "--nosuch") {
				t.Errorf("unknown flag: exit %d %q", code, errOut)
			}
			if _, errOut, code := runBin(t, bin, "--log-level", "loud", "--master", "127.0.0.1"); code != 1 || !strings.Contains(errOut, "--log-level") {
				t.Errorf("bad --log-level: exit %d %q", code, errOut)
			}
			if _, errOut, code := runBin(t, bin, "-c", bad); code != 1 || !strings.Contains(errOut, "minion.hcl:2") || !strings.Contains(errOut, `id = "Web 1"`) {
				t.Errorf("bad config: exit %d %q", code, errOut)
			}
		})
	}
}

// Both ways to run the minion-only command line connect, answer, apply and report their
// version against a real master.
func TestMinionBinaryAgainstMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master and minions")
	}
	sock, pub, req := masterProc(t)
	dir := filepath.Dir(sock)
	link := filepath.Join(dir, "brine-minion")
	if err := os.Symlink(brineBin, link); err != nil {
		t.Fatal(err)
	}
	for id, bin := range map[string]string{"small": minionBin, "full": link} {
		cfg := filepath.Join(dir, id+".hcl")
		os.WriteFile(cfg, []byte(fmt.Sprintf("master = \"127.0.0.1\"\npublish_port = %d\nrequest_port = %d\nid = %q\nheartbeat = \"200ms\"\nmax_backoff = \"300ms\"\n", pub, req, id)), 0o600)
		cmd := exec.Command(bin, "-c", cfg, "--data-dir", filepath.Join(dir, id))
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
				t.Logf("%s:\n%s", id, logb.String())
			}
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		brine(t, "key", "accept", "--all", "--socket", sock)
		if out, _, code := brine(t, "ping", "*", "--socket", sock, "--timeout", "2s"); code == 0 && strings.Count(out, "pong") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two minions did not both answer ping")
		}
		time.Sleep(100 * time.Millisecond)
	}
	out := t.TempDir()
	b := writeBundle(t, map[string]string{"main.hcl": "file \"mark\" {\n  path    = \"" + out + "/${minion.id}\"\n  content = \"x\"\n}\n"})
	if _, stderr, code := brine(t, "apply", "*", b, "--socket", sock, "--timeout", "20s"); code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
	for _, id := range []string{"small", "full"} {
		if got, err := os.ReadFile(filepath.Join(out, id)); err != nil || string(got) != "x" {
			t.Errorf("%s did not apply: %q %v", id, got, err)
		}
	}
	o, stderr, code := brine(t, "status", "*", "--json", "--socket", sock)
	var resp control.StatusResponse
	if code != 0 || json.Unmarshal([]byte(o), &resp) != nil || len(resp.Minions) != 2 {
		t.Fatalf("status: exit %d %s%s", code, o, stderr)
	}
	st := resp.Minions
	for _, s := range st {
		if s.Version == "" || s.Version != st[0].Version {
			t.Errorf("%s reports version %q", s.ID, s.Version)
		}
	}
}
