package master_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

// A run job on real in-process minions: exit status, stdout and stderr bounded with the dropped
// bytes counted, control characters kept as data (escaped only when printed), a timeout that
// kills the whole process group, and the returns in the job history.
func TestRunJob(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "r1", nil)
	acceptedMinion(t, m, "r2", nil)
	dir := t.TempDir()
	cmd := `printf 'out\033[2J\n'; echo err >&2; head -c 100000 /dev/zero; [ -e ` + dir + `/ok ] || exit 7`
	os.WriteFile(filepath.Join(dir, "ok"), nil, 0o644)
	res, err := m.Run(t.Context(), master.JobSpec{Kind: wire.JobRun, Target: "r*", Minions: []string{"r1", "r2"},
		Timeout: 30 * time.Second, Run: &wire.RunSpec{Command: cmd, Timeout: 20 * time.Second}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed() || len(res.Returns) != 2 {
		t.Fatalf("run: %+v", res)
	}
	for id, r := range res.Returns {
		var rep wire.RunReport
		if err := json.Unmarshal(r.Report, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.ExitCode != 0 || !strings.HasPrefix(rep.Stdout, "out\033[2J\n") || rep.Stderr != "err\n" ||
			len(rep.Stdout) != wire.MaxRunOutput || rep.StdoutTruncated != int64(len("out\033[2J\n")+100000-wire.MaxRunOutput) {
			t.Fatalf("%s: exit %d, %d bytes kept, %d dropped, stderr %q", id, rep.ExitCode, len(rep.Stdout), rep.StdoutTruncated, rep.Stderr)
		}
	}
	os.Remove(filepath.Join(dir, "ok"))
	res, _ = m.Run(t.Context(), master.JobSpec{Kind: wire.JobRun, Target: "r1", Minions: []string{"r1"},
		Timeout: 30 * time.Second, Run: &wire.RunSpec{Command: cmd, Timeout: 20 * time.Second}}, nil)
	if r := res.Returns["r1"]; r.Success || r.Error != "exit status 7" {
		t.Fatalf("failing command: %+v", r)
	}

	// The timeout kills the shell and what it started; the return says so.
	pidFile := filepath.Join(dir, "pid")
	start := time.Now()
	res, _ = m.Run(t.Context(), master.JobSpec{Kind: wire.JobRun, Target: "r1", Minions: []string{"r1"},
		Timeout: 60 * time.Second, Run: &wire.RunSpec{Command: "sleep 300 & echo $! > " + pidFile + "; wait", Timeout: time.Second}}, nil)
	r := res.Returns["r1"]
	var rep wire.RunReport
	json.Unmarshal(r.Report, &rep)
	if r.Success || !rep.TimedOut || time.Since(start) > 50*time.Second {
		t.Fatalf("timed-out command: %+v %+v", r, rep)
	}
	raw, _ := os.ReadFile(pidFile)
	if pid := strings.TrimSpace(string(raw)); pid == "" {
		t.Fatal("no pid")
	} else {
		tb.WaitFor(t, 10*time.Second, "the command's child killed", func() bool {
			st, err := os.ReadFile("/proc/" + pid + "/stat")
			return err != nil || strings.Contains(string(st), ") Z ")
		})
	}
	d, err := m.Job(res.JIDs[0])
	if err != nil || d.Job.Kind != wire.JobRun || len(d.Returns) != 1 {
		t.Fatalf("history: %+v %v", d, err)
	}
}

// Only the master's key makes a run job: an accepted minion that holds a job key (a job addressed
// to it and another minion) forges one for the other minion, which refuses it; and nothing a minion sends over the request
// port makes the master publish a job.
func TestRunJobCannotBeForged(t *testing.T) {
	m := master.TestMaster(t)
	jobs := capture(t, m)
	mn := acceptedMinion(t, m, "victim", nil)
	evil := newRaw(t, m, "evil", nil)
	evil.auth("", evil.key)
	m.Keys().Accept("evil", nil, false)
	if ar := evil.auth("", evil.key); ar.Status != wire.StatusAccepted {
		t.Fatalf("evil: %+v", ar)
	}
	marker := filepath.Join(t.TempDir(), "pwned")
	// A real ping to both gives evil the job key of a copy the victim also opens: it re-seals
	// content it signed itself under that key, beside the victim's own wrap.
	if _, err := m.Run(t.Context(), master.JobSpec{Kind: wire.JobPing, Target: "victim,evil", Minions: []string{"evil", "victim"}, Timeout: time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	victimKey, _ := m.SessionKeyID("victim")
	var victimFrame wire.JobBody
	var meta wire.JobMeta
	var jk *pki.JobKey
	for victimFrame.Payload == nil || jk == nil {
		fb := nextJob(t, jobs)
		if jb, _ := wire.SplitJob(fb); jb.Payload != nil {
			if _, ok := jb.WrapFor(victimKey); ok {
				victimFrame = jb
			}
		}
		if mt, k, ok := evil.openJob(fb); ok {
			meta, jk = mt, k
		}
	}
	meta.JID, meta.Kind = "forged-run", wire.JobRun
	meta.Minions = []string{"victim"}
	meta.Run = &wire.RunSpec{Command: "touch " + marker, Timeout: time.Minute}
	metaRaw, _ := json.Marshal(meta)
	vw, _ := victimFrame.WrapFor(victimKey)
	forged := wire.JobFrame(&victimFrame.Nonce, []wire.Wrap{{KeyID: victimKey, Key: vw}}, jk.Seal(evil.key.SignAttached(wire.PackJob(metaRaw, nil))))
	if _, err := mn.OpenJob(forged[wire.HeaderLen:], time.Now()); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("forged run job: %v", err)
	}
	before, _ := m.Store().Jobs(0)
	for _, kind := range []string{wire.JobRun, "job", "publish"} {
		if r, _, ok := evil.request(kind, map[string]any{"command": "touch " + marker, "target": "*"}); ok && r.OK {
			t.Fatalf("the master accepted a %q request from a minion: %+v", kind, r)
		}
	}
	if after, _ := m.Store().Jobs(0); len(after) != len(before) {
		t.Fatalf("a minion's request made a job: %d -> %d", len(before), len(after))
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a forged command ran")
	}
}
