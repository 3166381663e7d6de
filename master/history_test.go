package master_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
)

// The job history through the control socket, with real minions over TCP: kind, target, who
// started it (the socket peer's uid from the kernel), bundle name and digest, and the outcome.
func TestJobHistory(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "h1", nil)
	acceptedMinion(t, m, "h2", nil)
	cl := m.Client()
	// The file's parent is a regular file: both minions fail.
	blocker := filepath.Join(t.TempDir(), "blocker")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b := bundle(t, map[string]string{"main.hcl": fmt.Sprintf(`file %q { content = "x" }`, blocker+"/x")})
	err := cl.Apply(t.Context(), control.ApplyRequest{Target: "h*", Bundle: b.Marshal(), BundleName: "web\x1b[2J",
		Timeout: 30 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Ping(t.Context(), control.PingRequest{Target: "h1", Timeout: 30 * time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	r, err := cl.Jobs(t.Context(), control.JobsRequest{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Jobs) != 2 {
		t.Fatalf("%d jobs, want 2: %+v", len(r.Jobs), r.Jobs)
	}
	me := fmt.Sprintf("uid %d", os.Getuid())
	ping, apply := r.Jobs[0], r.Jobs[1]
	if ping.Kind != "ping" || ping.Target != "h1" || ping.StartedBy != me || ping.Succeeded != 1 || ping.Failed != 0 || ping.NoReturn != 0 {
		t.Errorf("ping: %+v", ping)
	}
	// Both minions failed, and the name lost its escape character.
	if apply.Kind != "apply" || apply.StartedBy != me || apply.Bundle != "web[2J" || apply.Digest != b.Digest() ||
		apply.Failed != 2 || apply.Succeeded != 0 || apply.NoReturn != 0 {
		t.Errorf("apply: %+v", apply)
	}
	d, err := cl.Job(t.Context(), control.JobRequest{JID: apply.JID})
	if err != nil || len(d.Returns) != 2 || d.Job.StartedBy != me {
		t.Fatalf("jobs show: %+v %v", d, err)
	}
}

// job_max and job_retention prune the history in the background.
func TestJobRetention(t *testing.T) {
	t.Run("job_max", func(t *testing.T) {
		m := master.TestMaster(t, func(c *master.Config) { c.JobMax = 3 })
		acceptedMinion(t, m, "p1", nil)
		var jids []string
		for range 6 {
			res, err := m.Run(t.Context(), master.JobSpec{Kind: "ping", Target: "p1", Minions: []string{"p1"}, Timeout: 30 * time.Second}, nil)
			if err != nil {
				t.Fatal(err)
			}
			jids = append(jids, res.JIDs...)
		}
		tb.WaitFor(t, 20*time.Second, "the history pruned to 3 jobs", func() bool {
			jobs, _ := m.Store().Jobs(0)
			return len(jobs) == 3 && jobs[2].JID == jids[3]
		})
		if rs, _ := m.Store().Returns(jids[0]); len(rs) != 0 {
			t.Fatalf("the returns of a pruned job are kept: %d", len(rs))
		}
	})
	t.Run("job_retention", func(t *testing.T) {
		m := master.TestMaster(t, func(c *master.Config) { c.JobRetention = "2s" })
		acceptedMinion(t, m, "p2", nil)
		if _, err := m.Run(t.Context(), master.JobSpec{Kind: "ping", Target: "p2", Minions: []string{"p2"}, Timeout: 30 * time.Second}, nil); err != nil {
			t.Fatal(err)
		}
		if jobs, _ := m.Store().Jobs(0); len(jobs) != 1 {
			t.Fatalf("%d jobs right after the ping", len(jobs))
		}
		tb.WaitFor(t, 30*time.Second, "the job older than job_retention pruned", func() bool {
			jobs, _ := m.Store().Jobs(0)
			return len(jobs) == 0
		})
	})
}
