package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/testbed"
)

// brine status through the real CLI, master and minions: connected minions with the version they
// report, their groups (a key-groups change shows), their last job and its outcome; a minion that
// died shows when it was last seen.
func TestStatusThroughRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master and minions")
	}
	sock := cluster(t, 2)
	dir := filepath.Dir(sock)
	mcfg, _ := os.ReadFile(filepath.Join(dir, "master.hcl"))
	ports := regexp.MustCompile(`:(\d+)"`).FindAllStringSubmatch(string(mcfg), 2)
	cfg := filepath.Join(dir, "r9.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf("master = \"127.0.0.1\"\npublish_port = %s\nrequest_port = %s\nid = \"r9\"\nheartbeat = \"200ms\"\n", ports[0][1], ports[1][1])), 0o600)
	r9 := exec.Command(brineBin, "minion", "-c", cfg, "--data-dir", filepath.Join(dir, "r9"))
	var logb bytes.Buffer
	r9.Stdout, r9.Stderr = &logb, &logb
	r9.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r9.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-r9.Process.Pid, syscall.SIGKILL)
		_ = r9.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		brine(t, "key", "accept", "r9", "--socket", sock)
		if _, _, code := brine(t, "ping", "r9", "--socket", sock, "--timeout", "2s"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r9 did not answer:\n%s", logb.String())
		}
	}
	out := t.TempDir()
	b := writeBundle(t, map[string]string{"main.hcl": "file \"mark\" {\n  path    = \"" + out + "/${minion.id}\"\n  content = \"x\"\n}\n"})
	if _, stderr, code := brine(t, "apply", "r1", b, "--socket", sock, "--timeout", "20s"); code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
	brine(t, "key", "groups", "r1", "--groups", "app", "--socket", sock)
	status := func(target string) []master.MinionStatus {
		t.Helper()
		o, stderr, code := brine(t, "status", target, "--json", "--socket", sock)
		var st control.StatusResponse
		if code != 0 || json.Unmarshal([]byte(o), &st) != nil {
			t.Fatalf("status %s: exit %d %s%s", target, code, o, stderr)
		}
		// The store line: one master's files, always up.
		if st.Master == "" || st.Store == nil || st.Store.Kind != "files" || !st.Store.Up || st.Store.Error != "" {
			t.Fatalf("status %s --json: master %q, store %+v", target, st.Master, st.Store)
		}
		return st.Minions
	}
	st := status("*")
	if len(st) != 3 {
		t.Fatalf("status: %+v", st)
	}
	r1 := st[0]
	if r1.ID != "r1" || !r1.Connected || r1.Version == "" || strings.Join(r1.Groups, ",") != "app" ||
		r1.LastJob == nil || r1.LastJob.Kind != "apply" || r1.LastJob.Outcome != "succeeded" {
		t.Fatalf("r1: %+v %+v", r1, r1.LastJob)
	}
	if r9 := st[2]; r9.ID != "r9" || !r9.Connected || r9.LastJob == nil || r9.LastJob.Kind != "ping" {
		t.Fatalf("r9: %+v", r9)
	}
	if st := status("group:app"); len(st) != 1 || st[0].ID != "r1" {
		t.Fatalf("status group:app: %+v", st)
	}
	o, _, code := brine(t, "status", "--socket", sock)
	if code != 0 || !strings.Contains(o, "r1 ") || !strings.Contains(o, "connected") || !strings.Contains(o, "succeeded") {
		t.Fatalf("status: exit %d\n%s", code, o)
	}
	// The first line is the master's store (one master: files, always up).
	if first, _, _ := strings.Cut(o, "\n"); !strings.HasPrefix(first, "master ") || !strings.HasSuffix(first, ": store files: up") {
		t.Fatalf("status: first line %q", first)
	}
	if _, _, code := brine(t, "status", "nosuch", "--socket", sock); code != 1 {
		t.Fatalf("status of no minion: exit %d", code)
	}

	// A minion that died: not connected, last seen a moment ago.
	_ = syscall.Kill(-r9.Process.Pid, syscall.SIGKILL)
	deadline = time.Now().Add(90 * time.Second)
	for {
		st := status("r9")
		if !st[0].Connected && !st[0].LastSeen.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r9 still connected: %+v", st[0])
		}
		time.Sleep(time.Second)
	}
	if o, _, _ := brine(t, "status", "r9", "--socket", sock); !strings.Contains(o, "seen ") {
		t.Fatalf("status r9:\n%s", o)
	}
}

// brine status says whether the master's store answers, as text and in --json: PostgreSQL up;
// then, with the database gone, lost (since when, and why), no minion, exit 1; then up again.
func TestStatusSaysWhetherTheStoreAnswers(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	pg, err := pgtest.StartWith(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	m := master.TestMaster(t, func(c *master.Config) { c.Store, c.AutoAccept = pg.URL("postgres"), true })
	sock := m.Client().Path
	mn := minion.TestMinion(t, m.PublishAddr(), m.RequestAddr(), "st1")
	tb.WaitFor(t, 15*time.Second, "st1 connected", func() bool { return mn.Status() == "connected" })
	status := func() (st control.StatusResponse, raw, stderr string, code int) {
		t.Helper()
		raw, stderr, code = brine(t, "status", "--json", "--socket", sock)
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			t.Fatalf("status --json: exit %d, not JSON (%v): %s%s", code, err, raw, stderr)
		}
		return st, raw, stderr, code
	}
	st, _, stderr, code := status()
	if code != 0 || st.Master != m.Name() || st.Store == nil || st.Store.Kind != "postgres" || !st.Store.Up ||
		st.Store.Error != "" || len(st.Minions) != 1 || st.Minions[0].ID != "st1" {
		t.Fatalf("status --json: exit %d, %+v %s", code, st, stderr)
	}

	pg.Down()
	up := sync.OnceValue(pg.Up)
	t.Cleanup(func() { up() })
	tb.WaitFor(t, 30*time.Second, "the master sees its database lost", func() bool { return !m.StoreHealth().Up })
	st, raw, stderr, code := status()
	if code != 1 || st.Master != m.Name() || st.Store == nil || st.Store.Kind != "postgres" || st.Store.Up ||
		st.Store.Error == "" || st.Store.Since.IsZero() || !strings.Contains(raw, `"minions":[]`) ||
		!strings.Contains(stderr, "lost its database") {
		t.Fatalf("status --json without the database: exit %d: %s%s", code, raw, stderr)
	}
	out, stderr, code := brine(t, "status", "--socket", sock)
	if code != 1 || strings.Count(out, "\n") != 1 ||
		!strings.HasPrefix(out, "master "+m.Name()+": store postgres: LOST ") || !strings.Contains(out, "publishing no new jobs (") {
		t.Fatalf("status without the database: exit %d:\n%s%s", code, out, stderr)
	}

	if err := up(); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 30*time.Second, "the master sees its database back", func() bool { return m.StoreHealth().Up })
	if st, raw, stderr, code := status(); code != 0 || !st.Store.Up || st.Store.Error != "" || len(st.Minions) != 1 {
		t.Fatalf("status --json with the database back: exit %d: %s%s", code, raw, stderr)
	}
}
