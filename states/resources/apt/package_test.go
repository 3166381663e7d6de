package apt

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
	"github.com/brinecm/brine/testbed"
)

// pkgHost is a testbed host with the test apt repository and brine in /srv/brine.
type pkgHost struct {
	t      *testing.T
	c      *testbed.Cluster
	h      *testbed.Host
	step   int
	envArg []string
}

func newPkgHost(t *testing.T) *pkgHost {
	if err := testbed.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	bin := testbed.BrineBinary(t)
	c := testbed.NewT(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.EnableApt(ctx, ""); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.SharedDir(), "brine"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return &pkgHost{t: t, c: c, h: c.Host("a")}
}

// apply writes src as a bundle and applies it with `brine local apply --json` in the host.
func (p *pkgHost) apply(src string) (*states.Report, int, string) {
	p.t.Helper()
	p.step++
	dir := filepath.Join(p.c.SharedDir(), "bundles", fmt.Sprint(p.step))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644); err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	argv := append(append([]string{"env"}, p.envArg...),
		testbed.HostSharedDir+"/brine", "local", "apply", "--json", fmt.Sprintf("%s/bundles/%d", testbed.HostSharedDir, p.step))
	out, stderr, code, err := p.h.Run(ctx, argv...)
	if err != nil {
		p.t.Fatalf("brine local apply: %v\n%s%s", err, out, stderr)
	}
	var rep states.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		p.t.Fatalf("step %d: exit %d, not a JSON report: %v\nstdout: %s\nstderr: %s", p.step, code, err, out, stderr)
	}
	return &rep, code, stderr
}

// dpkg returns "name version state" for each installed-or-present package of names in the host.
func (p *pkgHost) dpkg(names ...string) map[string]string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _, err := p.h.Sh(ctx, "cat /var/lib/dpkg/status")
	if err != nil {
		p.t.Fatal(err)
	}
	db, err := parseDpkgStatus(strings.NewReader(out))
	if err != nil {
		p.t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range names {
		for _, e := range db.lookup(n) {
			if e.Present() {
				got[n] = e.Version + " " + e.State
			}
		}
	}
	return got
}

func wantDiff(t *testing.T, rep *states.Report, addr string, st states.Status, diff string) {
	t.Helper()
	r := restest.WantStatus(t, rep, addr, st)
	if !strings.Contains(r.Diff, diff) {
		t.Fatalf("%s: diff %q, want %q", addr, r.Diff, diff)
	}
}

func wantNoChanges(t *testing.T, rep *states.Report) {
	t.Helper()
	if c := rep.Counts(); c[states.StatusChanged] != 0 || c[states.StatusFailed] != 0 {
		t.Fatalf("second apply: %v: %+v", c, rep.Results)
	}
}

func TestPackageInTestbed(t *testing.T) {
	p := newPkgHost(t)

	// Install a pinned version and a package with a dependency, in one apt-get call.
	install := `
package "brine-hello" { version = "1.0" }
package "brine-app-dep" {}
`
	rep, code, _ := p.apply(install)
	if code != 0 {
		t.Fatalf("install: exit %d: %+v", code, rep.Results)
	}
	wantDiff(t, rep, "package.brine-hello", states.StatusChanged, "+ brine-hello 1.0")
	wantDiff(t, rep, "package.brine-app-dep", states.StatusChanged, "+ brine-app-dep 1.0")
	got := p.dpkg("brine-hello", "brine-app-dep", "brine-lib")
	for n, want := range map[string]string{"brine-hello": "1.0 installed", "brine-app-dep": "1.0 installed", "brine-lib": "1.0 installed"} {
		if got[n] != want {
			t.Fatalf("after install: %s is %q, want %q (all: %v)", n, got[n], want, got)
		}
	}
	rep, code, _ = p.apply(install)
	if code != 0 {
		t.Fatalf("second apply exit %d", code)
	}
	wantNoChanges(t, rep)

	// Upgrade to apt's candidate.
	latest := `package "brine-hello" { state = "latest" }`
	rep, _, _ = p.apply(latest)
	wantDiff(t, rep, "package.brine-hello", states.StatusChanged, "+ brine-hello 2.0 (installed 1.0)")
	if v := p.dpkg("brine-hello")["brine-hello"]; v != "2.0 installed" {
		t.Fatalf("after latest: %q", v)
	}
	rep, _, _ = p.apply(latest)
	wantNoChanges(t, rep)

	// Pin back: a downgrade.
	rep, _, _ = p.apply(`package "brine-hello" { version = "1.0" }`)
	wantDiff(t, rep, "package.brine-hello", states.StatusChanged, "+ brine-hello 1.0 (installed 2.0)")
	if v := p.dpkg("brine-hello")["brine-hello"]; v != "1.0 installed" {
		t.Fatalf("after pin: %q", v)
	}

	// Remove.
	absent := `
package "brine-hello" { state = "absent" }
package "brine-app-dep" { state = "absent" }
`
	rep, _, _ = p.apply(absent)
	wantDiff(t, rep, "package.brine-hello", states.StatusChanged, "- brine-hello 1.0")
	wantDiff(t, rep, "package.brine-app-dep", states.StatusChanged, "- brine-app-dep 1.0")
	if got := p.dpkg("brine-hello", "brine-app-dep"); len(got) != 0 {
		t.Fatalf("after remove: %v", got)
	}
	rep, _, _ = p.apply(absent)
	wantNoChanges(t, rep)

	// An unknown package fails alone; the others of its batch apply.
	rep, code, _ = p.apply(`
package "brine-nosuch" {}
package "brine-hello" {}
package "brine-lib" { state = "absent" }
`)
	if code != 2 {
		t.Fatalf("unknown package: exit %d, want 2", code)
	}
	r := restest.WantStatus(t, rep, "package.brine-nosuch", states.StatusFailed)
	if !strings.Contains(r.Error, "brine-nosuch is unknown to apt") {
		t.Fatalf("unknown package error %q", r.Error)
	}
	wantDiff(t, rep, "package.brine-hello", states.StatusChanged, "+ brine-hello 2.0")
	wantDiff(t, rep, "package.brine-lib", states.StatusChanged, "- brine-lib 1.0")

	// A failing postinst: dpkg's message on that package; its batch partner still installs.
	rep, code, _ = p.apply(`
package "brine-badpost" {}
package "brine-proxy" {}
`)
	if code != 2 {
		t.Fatalf("badpost: exit %d, want 2", code)
	}
	r = restest.WantStatus(t, rep, "package.brine-badpost", states.StatusFailed)
	for _, w := range []string{"brine-badpost: postinst refused", "post-installation script subprocess returned error exit status 1"} {
		if !strings.Contains(r.Error, w) {
			t.Fatalf("badpost error lacks %q:\n%s", w, r.Error)
		}
	}
	restest.WantStatus(t, rep, "package.brine-proxy", states.StatusChanged)
	if v := p.dpkg("brine-proxy")["brine-proxy"]; v != "1.0 installed" {
		t.Fatalf("brine-proxy %q", v)
	}
	t.Logf("postinst failure reported as:\n%s", r.Error)

	// The half-configured brine-badpost makes apt-get fail on every later call; a package
	// that still ends up as wanted is not blamed for it.
	rep, _, _ = p.apply(`package "brine-hello" { version = "1.0" }`)
	wantDiff(t, rep, "package.brine-hello", states.StatusChanged, "+ brine-hello 1.0 (installed 2.0)")
}

func TestPackageDpkgLockHeld(t *testing.T) {
	p := newPkgHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// python's lockf takes the same fcntl lock as dpkg and apt.
	locker, err := p.h.Start("dpkg-locker", "python3", "-c", `
import fcntl, time
f = open("/var/lib/dpkg/lock-frontend", "w")
fcntl.lockf(f, fcntl.LOCK_EX)
g = open("/var/lib/dpkg/lock", "w")
fcntl.lockf(g, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
`)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Stop()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(locker.Log(), "locked"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("locker did not take the lock: %s", locker.Log())
		}
	}
	p.envArg = []string{"BRINE_APT_LOCK_TIMEOUT=3s"}
	start := time.Now()
	rep, code, _ := p.apply(`package "brine-hello" {}`)
	took := time.Since(start)
	if code != 2 {
		t.Fatalf("exit %d, want 2: %+v", code, rep.Results)
	}
	r := restest.WantStatus(t, rep, "package.brine-hello", states.StatusFailed)
	if !strings.Contains(r.Error, "locked by another process") || !strings.Contains(r.Error, "waited 3s") {
		t.Fatalf("lock error %q", r.Error)
	}
	if took < 3*time.Second || took > 30*time.Second {
		t.Fatalf("gave up after %s, want about 3s", took)
	}
	t.Logf("held lock: failed after %s: %s", took, r.Error)

	// Once the lock is free the same bundle applies.
	if err := locker.Stop(); err != nil {
		t.Logf("locker stop: %v", err)
	}
	rep, code, _ = p.apply(`package "brine-hello" {}`)
	if code != 0 {
		t.Fatalf("after unlock: exit %d: %+v", code, rep.Results)
	}
}

func TestPackageNameArgument(t *testing.T) {
	b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(`
variable "proxy" { default = "nginx-light" }
package "proxy" { name = var.proxy }
package "bad" { name = "Not A Package" }
`)}}
	_, diags := restest.Compile(b, testTypes, states.Options{})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "main.hcl:4,24") {
		t.Fatalf("want the bad name reported at its argument: %v", diags)
	}
	b.Files["main.hcl"] = []byte(`
variable "proxy" { default = "nginx-light" }
package "proxy" { name = var.proxy }
`)
	g, diags := restest.Compile(b, testTypes, states.Options{})
	if diags.HasErrors() || g.Resources()[0].(*Package).name != "nginx-light" || g.Addresses()[0] != "package.proxy" {
		t.Fatalf("name argument: %v", diags)
	}
}
