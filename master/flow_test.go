package master_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

func startMinion(t *testing.T, m *master.Master, id string, opts ...func(*minion.Config)) *minion.Minion {
	t.Helper()
	return minion.TestMinion(t, m.PublishAddr(), m.RequestAddr(), id, opts...)
}

// acceptedMinion starts a minion and accepts its key with groups, waiting until it is connected.
func acceptedMinion(t *testing.T, m *master.Master, id string, groups []string, opts ...func(*minion.Config)) *minion.Minion {
	t.Helper()
	mn := startMinion(t, m, id, opts...)
	tb.WaitFor(t, 5*time.Second, id+" pending", func() bool {
		k, ok := m.Keys().Get(id)
		return ok && k.State == pki.StatePending
	})
	if _, err := m.Keys().Accept(id, groups, false); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 5*time.Second, id+" connected", func() bool { return mn.Status() == "connected" && m.Facts(id) != nil })
	return mn
}

func bundle(t *testing.T, files map[string]string) *states.Bundle {
	t.Helper()
	b := &states.Bundle{Files: map[string][]byte{}}
	for k, v := range files {
		b.Files[k] = []byte(v)
	}
	return b
}

func counts(t *testing.T, r wire.Return) map[states.Status]int {
	t.Helper()
	var rep states.Report
	if err := json.Unmarshal(r.Report, &rep); err != nil {
		t.Fatalf("%s: report: %v (error %q, diags %q)", r.Minion, err, r.Error, r.Diagnostics)
	}
	return rep.Counts()
}

func run(t *testing.T, m *master.Master, spec master.JobSpec) *master.Result {
	t.Helper()
	if spec.Minions == nil {
		ids, err := m.ResolveTarget(spec.Target)
		if err != nil {
			t.Fatal(err)
		}
		spec.Minions = ids
	}
	if spec.Timeout == 0 {
		spec.Timeout = 10 * time.Second
	}
	res, err := m.Run(context.Background(), spec, func(e master.Event) {
		if e.Diagnostics != "" {
			t.Log(e.Diagnostics)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestEnrolApplyTwiceAndJobHistory(t *testing.T) {
	m := master.TestMaster(t)
	out := t.TempDir()
	os.WriteFile(m.Config().SecretsFile, []byte(`
secret "motd_key" {
  value  = "s3cret"
  target = "group:app"
}
`), 0o600)
	acceptedMinion(t, m, "web1", []string{"app"})
	tok, _, err := m.Tokens().Create(pki.TokenRequest{Groups: []string{"app"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	web2 := startMinion(t, m, "web2", func(c *minion.Config) { c.Token = tok })
	tb.WaitFor(t, 5*time.Second, "web2 enrolled by token", func() bool { return web2.Status() == "connected" })
	if k, _ := m.Keys().Get("web2"); k.State != pki.StateAccepted || len(k.Groups) != 1 || k.Groups[0] != "app" {
		t.Fatalf("web2 after token: %+v", k)
	}
	tb.WaitFor(t, 5*time.Second, "web2 facts", func() bool { return m.Facts("web2") != nil })

	b := bundle(t, map[string]string{"main.hcl": `
file "out" {
  path    = "` + out + `/${minion.id}.txt"
  content = "hello ${minion.id} ${secret("motd_key")} ${length(peers("group:app"))}\n"
}
`})
	res := run(t, m, master.JobSpec{Target: "group:app", Bundle: b})
	if len(res.Missing) != 0 || len(res.Returns) != 2 {
		t.Fatalf("first apply: %+v", res)
	}
	for id, r := range res.Returns {
		if !r.Success || counts(t, r)[states.StatusChanged] != 1 {
			t.Fatalf("%s first apply: %+v", id, r)
		}
		got, _ := os.ReadFile(filepath.Join(out, id+".txt"))
		if string(got) != "hello "+id+" s3cret 2\n" {
			t.Fatalf("%s wrote %q", id, got)
		}
	}
	res2 := run(t, m, master.JobSpec{Target: "web*", Bundle: b})
	for id, r := range res2.Returns {
		if c := counts(t, r); c[states.StatusChanged] != 0 || !r.Success {
			t.Fatalf("%s second apply changed: %v", id, c)
		}
	}
	d, err := m.Job(res.JIDs[0])
	if err != nil || len(d.Returns) != 2 || len(d.Missing) != 0 {
		t.Fatalf("job history: %+v %v", d, err)
	}
	jobs, _ := m.Store().Jobs(0)
	if len(jobs) != 2 {
		t.Fatalf("%d jobs stored", len(jobs))
	}
}

func TestPingAndNoReturnAndZeroTarget(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "a1", nil)
	acceptedMinion(t, m, "a2", nil)
	res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "a*"})
	if len(res.Returns) != 2 {
		t.Fatalf("ping: %+v", res)
	}
	// A minion that is accepted but not running is reported as missing, not dropped. The job
	// waits for it to the end of its timeout, which must leave the two running minions time to
	// return, under the race detector on a loaded machine too (700 ms was too short for that).
	if _, err := m.Keys().Present(pki.Presentation{ID: "ghost", Key: mustKey(t).Pub}, true, nil); err != nil {
		t.Fatal(err)
	}
	res = run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "*", Timeout: 3 * time.Second})
	if len(res.Missing) != 1 || res.Missing[0] != "ghost" || !res.Failed() {
		t.Fatalf("missing: %+v", res)
	}
	// Zero minions: nothing published.
	before, _ := m.Store().Jobs(0)
	if _, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "nobody"}, nil); err != master.ErrNoMinions {
		t.Fatalf("zero target: %v", err)
	}
	after, _ := m.Store().Jobs(0)
	if len(after) != len(before) {
		t.Fatal("a job was recorded for an empty target")
	}
}

func mustKey(t *testing.T) *pki.KeyPair {
	k, err := pki.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestInvalidBundleSendsNothing(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "v1", nil)
	var events []master.Event
	_, err := m.Run(context.Background(), master.JobSpec{Target: "v1", Minions: []string{"v1"}, Timeout: time.Second,
		Bundle: bundle(t, map[string]string{"main.hcl": "file \"/tmp/x\" {\n  content = nope.nope\n}\n"})},
		func(e master.Event) { events = append(events, e) })
	if err == nil || len(events) != 1 || events[0].Event != "invalid" || !strings.Contains(events[0].Diagnostics, "main.hcl:2") {
		t.Fatalf("invalid bundle: %v %+v", err, events)
	}
	if jobs, _ := m.Store().Jobs(0); len(jobs) != 0 {
		t.Fatal("invalid bundle was published")
	}
}

// A bundle sees the groups the master knows when it signs the job: `brine key groups` reaches
// the next job, with no minion restart (a host once got the wrong role from its cached groups).
func TestKeyGroupsChangeReachesNextJob(t *testing.T) {
	m := master.TestMaster(t)
	out := t.TempDir()
	acceptedMinion(t, m, "db1", []string{"db"})
	b := bundle(t, map[string]string{"main.hcl": `
file "roles" {
  path    = "` + out + `/roles.txt"
  content = join(",", minion.groups)
}
`})
	read := func() string {
		got, err := os.ReadFile(filepath.Join(out, "roles.txt"))
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	if res := run(t, m, master.JobSpec{Target: "db1", Bundle: b}); res.Failed() {
		t.Fatalf("first apply: %+v", res)
	}
	if got := read(); got != "db" {
		t.Fatalf("groups before the change: %q", got)
	}
	if _, err := m.Client().KeyGroups(context.Background(), control.KeyGroupsRequest{Glob: "db1", Groups: []string{"db", "backup"}}); err != nil {
		t.Fatal(err)
	}
	res := run(t, m, master.JobSpec{Target: "group:backup", Bundle: b})
	if res.Failed() || len(res.Returns) != 1 {
		t.Fatalf("apply after the change: %+v", res)
	}
	if got := read(); got != "backup,db" && got != "db,backup" {
		t.Fatalf("groups after the change: %q, want db and backup", got)
	}
}
