package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud/dosim"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
)

// These tests run the real `brine cloud` commands against dosim with its realistic behaviours
// and faults on.

// player plays the simulator's droplets: every droplet that appears gets an in-process minion
// started with the enrolment token of its user_data, as the bootstrap script would; a droplet
// that goes has its minion stopped.
type player struct {
	t   *testing.T
	m   *master.Master
	env *cloudEnv

	mu      sync.Mutex
	playing map[int]func() // droplet id -> stop its minion
}

func newPlayer(t *testing.T, m *master.Master, env *cloudEnv) *player {
	p := &player{t: t, m: m, env: env, playing: map[int]func(){}}
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, stop := range p.playing {
			stop()
		}
	})
	return p
}

// run runs brine with args, playing droplets until it returns.
func (p *player) run(args ...string) cloudRun {
	p.t.Helper()
	done := brineAsync(p.t, args...)
	deadline := time.After(90 * time.Second)
	for {
		select {
		case r := <-done:
			return r
		case <-deadline:
			p.t.Fatalf("brine %s did not return", strings.Join(args, " "))
		case <-time.After(20 * time.Millisecond):
		}
		p.sweep()
	}
}

func (p *player) sweep() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	alive := map[int]bool{}
	for _, d := range p.env.sim.Droplets() {
		alive[d.ID] = true
		if _, ok := p.playing[d.ID]; ok {
			continue
		}
		ud, _ := p.env.sim.UserData(d.Name)
		tok := tokenRE.FindStringSubmatch(ud)
		if tok == nil {
			p.t.Fatalf("no token in the user_data of %s", d.Name)
		}
		p.playing[d.ID] = p.startMinion(d.Name, tok[1])
	}
	for id, stop := range p.playing {
		if !alive[id] {
			stop()
			delete(p.playing, id)
		}
	}
}

func (p *player) startMinion(id, token string) func() {
	cfg := minion.Config{Master: "127.0.0.1", ID: id, DataDir: p.t.TempDir(), Heartbeat: "200ms", MaxBackoff: "300ms",
		Token: token, MasterFinger: p.m.Key().Fingerprint(),
		FactsFunc: func() map[string]any { return map[string]any{"os": "linux", "hostname": id, "arch": "amd64"} }}
	if err := cfg.Fill(); err != nil {
		p.t.Fatal(err)
	}
	cfg.SetAddrs(p.m.PublishAddr(), p.m.RequestAddr())
	mn, err := minion.New(cfg, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = mn.Run(ctx) }()
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.t.Errorf("minion %s did not stop", id)
		}
	}
}

// withMap appends a map to the environment's cloud.hcl.
func (env *cloudEnv) withMap(t *testing.T, hcl string) {
	t.Helper()
	f, err := os.OpenFile(env.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(hcl); err != nil {
		t.Fatal(err)
	}
}

func dropletsNamed(env *cloudEnv, name string) []dosim.Droplet {
	var out []dosim.Droplet
	for _, d := range env.sim.Droplets() {
		if d.Name == name {
			out = append(out, d)
		}
	}
	return out
}

// destroy then create of one name converges: destroy returns once DigitalOcean removed the
// droplet (and deleted its minion key), so the new droplet takes the name and enrols afresh.
func TestCloudDestroyThenCreateConverges(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0" })
	env := newCloudEnv(t, dosim.Options{ExternalBoot: true, DeleteDelay: 300 * time.Millisecond}, "")
	p := newPlayer(t, m, env)
	sock := m.Client().Path
	common := []string{"-c", env.config, "--socket", sock, "--poll-interval", "20ms"}
	for round := 1; round <= 2; round++ {
		r := p.run(append([]string{"cloud", "create", "app", "web-1", "--converge-timeout", "30s"}, common...)...)
		if r.code != 0 {
			t.Fatalf("create %d: exit %d\n%s%s", round, r.code, r.stdout, r.stderr)
		}
		if b, err := os.ReadFile(filepath.Join(env.out, "web-1")); err != nil || string(b) != "converged web-1\n" {
			t.Fatalf("create %d: not converged: %q %v", round, b, err)
		}
		if n := len(dropletsNamed(env, "web-1")); n != 1 {
			t.Fatalf("create %d: %d droplets named web-1", round, n)
		}
		if round == 2 {
			break
		}
		os.Remove(filepath.Join(env.out, "web-1"))
		r = p.run(append([]string{"cloud", "destroy", "web-1", "--yes"}, common...)...)
		if r.code != 0 || !strings.Contains(r.stdout, "destroyed web-1") || !strings.Contains(r.stdout, "deleted the minion key of web-1") {
			t.Fatalf("destroy: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if n := len(env.sim.Droplets()); n != 0 {
			t.Fatalf("destroy returned with %d droplets left", n)
		}
	}
}

// A droplet that DigitalOcean never removes: destroy waits its bound, says so, exits 2, and
// keeps the minion key; sync then neither keeps the dying droplet nor makes a second one.
func TestCloudDestroyAndSyncWithDropletStuckDeleting(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0" })
	env := newCloudEnv(t, dosim.Options{ExternalBoot: true, DeleteDelay: time.Hour}, "")
	env.withMap(t, `
map "prod" {
  droplet "web" {
    profile = "app"
    count   = 2
  }
}
`)
	p := newPlayer(t, m, env)
	sock := m.Client().Path
	common := []string{"-c", env.config, "--socket", sock, "--poll-interval", "20ms"}
	if r := p.run(append([]string{"cloud", "sync", "prod"}, common...)...); r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := p.run(append([]string{"cloud", "destroy", "web-1", "--yes", "--delete-timeout", "300ms"}, common...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "still exists") || strings.Contains(r.stdout, "destroyed web-1") {
		t.Fatalf("destroy of a droplet that stays: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, ok := m.Keys().Get("web-1"); !ok {
		t.Fatal("the key of a droplet that was not destroyed was deleted")
	}
	r = p.run(append([]string{"cloud", "sync", "prod", "--dry-run"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "1 to create, 1 in place") || !strings.Contains(r.stdout, "web-1 (id") ||
		!strings.Contains(r.stdout, "being destroyed") {
		t.Fatalf("sync plan: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = p.run(append([]string{"cloud", "sync", "prod", "--delete-timeout", "200ms"}, common...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "being destroyed") {
		t.Fatalf("sync with web-1 stuck deleting: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := len(dropletsNamed(env, "web-1")); n != 1 {
		t.Fatalf("%d droplets named web-1", n)
	}
}

// A create whose action errors after the 202 fails at once (no 10-minute wait), with nothing
// made; a 5xx to a create that made its droplet (listed late, tagged later) ends with that one
// droplet, converged.
func TestCloudCreateFaults(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0" })
	env := newCloudEnv(t, dosim.Options{ExternalBoot: true, CreateErrors: func(n string) bool { return n == "doomed" },
		ListDelay: 100 * time.Millisecond, TagDelay: 300 * time.Millisecond}, "")
	p := newPlayer(t, m, env)
	sock := m.Client().Path
	common := []string{"-c", env.config, "--socket", sock, "--poll-interval", "20ms", "--converge-timeout", "30s"}
	r := p.run(append([]string{"cloud", "create", "app", "doomed", "--json"}, common...)...)
	stages, res := events(t, r.stdout)
	if r.code != 1 || fmt.Sprint(stages["doomed"]) != "[creating failed]" || res == nil || res.Droplets[0].Created ||
		!strings.Contains(r.stderr, "create action") || !strings.Contains(r.stderr, "created 0 of 1") {
		t.Fatalf("errored create: exit %d %v\n%s%s", r.code, stages, r.stdout, r.stderr)
	}

	env.sim.Inject(dosim.Fault{Method: "POST", Path: "/v2/droplets", Status: 500, Committed: true})
	r = p.run(append([]string{"cloud", "create", "app", "web-1"}, common...)...)
	if r.code != 0 {
		t.Fatalf("create after a 500 that made the droplet: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := len(dropletsNamed(env, "web-1")); n != 1 || env.sim.Requests("POST", "/v2/droplets") != 2 {
		t.Fatalf("%d droplets named web-1, %d creates in all", n, env.sim.Requests("POST", "/v2/droplets"))
	}
}

// A profile the live catalog refuses is refused before any token is minted or droplet made; a
// token without a scope is told which.
func TestCloudCatalogAndScopes(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0" })
	env := newCloudEnv(t, dosim.Options{ExternalBoot: true}, "")
	env.withMap(t, `
profile "tiny" {
  region  = "ams3"
  size    = "s-1vcpu-512mb-10gb"
  image   = "debian-12-x64"
  bundles = ["app"]
}
map "tiny" {
  droplet "t" {
    profile = "tiny"
    count   = 1
  }
}
`)
	sock := m.Client().Path
	for _, args := range [][]string{{"cloud", "create", "tiny", "t-1"}, {"cloud", "create", "tiny", "t-1", "--dry-run"}, {"cloud", "sync", "tiny"}} {
		_, stderr, code := brine(t, append(args, "-c", env.config, "--socket", sock)...)
		if code != 1 || !strings.Contains(stderr, `size "s-1vcpu-512mb-10gb" is not offered in ams3`) {
			t.Fatalf("%v: exit %d\n%s", args, code, stderr)
		}
	}
	if n := len(env.sim.Droplets()); n != 0 {
		t.Fatalf("%d droplets", n)
	}
	if tokens := env.sim.Requests("POST", "/v2/droplets"); tokens != 0 {
		t.Fatalf("%d creates sent", tokens)
	}
	// (That no enrolment token was minted either is TestProfileCheckedAgainstCatalog's, in cloud.)

	ro := newCloudEnv(t, dosim.Options{Scopes: []string{"droplet:read"}}, "")
	_, stderr, code := brine(t, "cloud", "destroy", "web-1", "--yes", "-c", ro.config)
	if code != 1 || !strings.Contains(stderr, "no droplet is named web-1") {
		t.Fatalf("read-only destroy plan: exit %d\n%s", code, stderr)
	}
	_, stderr, code = brine(t, "cloud", "dns", "list", "example.com", "-c", ro.config)
	if code != 1 || !strings.Contains(stderr, "403") || !strings.Contains(stderr, "domain:read") {
		t.Fatalf("dns list without domain:read: exit %d\n%s", code, stderr)
	}
}

// dns set of a CNAME: set, set again (unchanged, whatever the trailing dot), change, and the
// printed rollback command, run as printed, restores the previous target.
func TestCloudDNSCNAMERollback(t *testing.T) {
	env := newCloudEnv(t, dosim.Options{}, "")
	if err := simAddDomain(env.sim.URL(), env.sim.Token(), "example.com"); err != nil {
		t.Fatal(err)
	}
	dns := func(args ...string) (string, string) {
		t.Helper()
		out, stderr, code := brine(t, append(append([]string{"cloud", "dns"}, args...), "-c", env.config)...)
		if code != 0 {
			t.Fatalf("dns %v: exit %d\n%s%s", args, code, out, stderr)
		}
		return out, stderr
	}
	out, _ := dns("set", "example.com", "www", "CNAME", "blue.lb.example.net")
	if !strings.Contains(out, "create www.example.com CNAME blue.lb.example.net") {
		t.Fatalf("create:\n%s", out)
	}
	for _, v := range []string{"blue.lb.example.net", "blue.lb.example.net."} {
		if out, _ := dns("set", "example.com", "www", "CNAME", v); !strings.Contains(out, "is already blue.lb.example.net") {
			t.Fatalf("again with %s:\n%s", v, out)
		}
	}
	out, _ = dns("set", "example.com", "www", "CNAME", "green.lb.example.net.")
	var rollback []string
	for _, l := range strings.Split(out, "\n") {
		if cmd, ok := strings.CutPrefix(l, "rollback: brine "); ok {
			rollback = strings.Fields(cmd)
		}
	}
	if rollback == nil || !strings.Contains(out, "blue.lb.example.net -> green.lb.example.net") {
		t.Fatalf("update:\n%s", out)
	}
	dns(rollback[2:]...)
	out, _ = dns("list", "example.com")
	if !strings.Contains(out, "blue.lb.example.net") || strings.Contains(out, "green") {
		t.Fatalf("after rollback:\n%s", out)
	}
}
