package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/testbed"
)

// TestDebInSystemdHosts builds the .deb with scripts/mkdeb.sh (what `make deb` runs), installs it
// with apt-get in two fresh systemd hosts, runs the master from its unit in one and the minion
// from its unit in the other (enrolled by token), converges a bundle, and purges the package.
func TestDebInSystemdHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	if err := testbed.SystemdAvailable(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		testbed.SkipUnavailable(t, "no dpkg-deb: "+err.Error())
	}
	c := testbed.NewSystemdT(t, "mst", "m1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A describe output with every character dpkg would refuse in its place; the minion-only
	// binary is found beside brineBin, as `make build` puts them.
	out, err := exec.CommandContext(ctx, "../../scripts/mkdeb.sh", brineBin, c.SharedDir(), "v1.2.3-4-gabc1234-dirty").CombinedOutput()
	if err != nil {
		t.Fatalf("mkdeb: %v\n%s", err, out)
	}
	deb := strings.TrimSpace(string(out))
	if want := "brine_1.2.3+4+gabc1234+dirty_"; !strings.HasPrefix(filepath.Base(deb), want) {
		t.Fatalf("deb %s, want %s*", deb, want)
	}
	hostDeb := testbed.HostSharedDir + "/" + filepath.Base(deb)

	sh := func(h *testbed.Host, script string) string {
		t.Helper()
		out, code, err := h.Sh(ctx, script)
		if err != nil || code != 0 {
			t.Fatalf("%s: %s: exit %d, %v\n%s", h.Name(), script, code, err, out)
		}
		return out
	}
	waitFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("no %s after %s", what, d)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	mst, m1 := c.Host("mst"), c.Host("m1")
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	for _, h := range []*testbed.Host{mst, m1} {
		sh(h, "apt-get install -y -q "+hostDeb)
		// Installed, nothing started: the operator enables the unit this host runs.
		got := sh(h, `dpkg-query -W -f='${Version}\n' brine; /usr/bin/brine --version >/dev/null && /usr/bin/brine-minion --version | grep -q '^brine-minion ' && [ $(stat -c %s /usr/bin/brine-minion) -lt $(stat -c %s /usr/bin/brine) ] && echo runs
stat -c '%a %n' /var/lib/brine /var/lib/brine/master /var/lib/brine/minion /etc/brine/minion.hcl
for u in brine-master brine-minion; do systemctl is-enabled $u || true; systemctl is-active $u || true; done
grep -v '^#' /etc/brine/master.hcl /etc/brine/minion.hcl | grep -v ':$' || echo all-commented`)
		want := "1.2.3+4+gabc1234+dirty\nruns\n700 /var/lib/brine\n700 /var/lib/brine/master\n700 /var/lib/brine/minion\n600 /etc/brine/minion.hcl\n" +
			"disabled\ninactive\ndisabled\ninactive\nall-commented\n"
		if got != want {
			t.Fatalf("%s after install:\n%s\nwant:\n%s", h.Name(), got, want)
		}
		if out := sh(h, "dpkg-query -W -f='${Conffiles}\\n' brine"); !strings.Contains(out, "/etc/brine/master.hcl") || !strings.Contains(out, "/etc/brine/minion.hcl") {
			t.Errorf("conffiles: %s", out)
		}
	}

	step("installed")
	// The master from its unit, on built-in defaults (the shipped master.hcl sets nothing).
	sh(mst, "systemctl enable --now brine-master")
	waitFor("master control socket", 30*time.Second, func() bool {
		_, code, _ := mst.Sh(ctx, "brine key list")
		return code == 0
	})
	token := strings.TrimSpace(sh(mst, "brine key token create --groups web --ttl 1h 2>/dev/null"))
	if !strings.HasPrefix(token, "brn") {
		t.Fatalf("token %q", token)
	}
	step("master up")
	// The minion from its unit, configured in the shipped conffile.
	cfg := fmt.Sprintf("master = %q\nid = \"m1\"\ntoken = %q\ngroups = [\"web\"]\nheartbeat = \"1s\"\nmax_backoff = \"2s\"\n", mst.Addr(), token)
	if err := os.WriteFile(filepath.Join(m1.Root(), "etc/brine/minion.hcl"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(m1, "systemctl enable --now brine-minion")
	if got := sh(m1, "cat /proc/$(systemctl show -p MainPID --value brine-minion)/cmdline | tr '\\0' ' '"); got != "/usr/bin/brine-minion " {
		t.Errorf("minion process: %q", got)
	}
	waitFor("m1 enrolled and answering", 60*time.Second, func() bool {
		_, code, _ := mst.Sh(ctx, "brine ping m1 --timeout 3s")
		return code == 0
	})
	step("minion enrolled")
	if err := os.MkdirAll(filepath.Join(c.SharedDir(), "bundle"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.SharedDir(), "bundle", "main.hcl"), []byte(`
file "motd" {
  path    = "/etc/motd"
  content = "managed by brine on ${minion.id}\n"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	apply := "brine apply m1 " + testbed.HostSharedDir + "/bundle --timeout 60s 2>&1"
	if out, code, err := mst.Sh(ctx, apply); err != nil || code != 0 {
		t.Fatalf("apply: exit %d %v\n%s\nminion journal:\n%s", code, err, out, sh(m1, "journalctl -u brine-minion --no-pager | tail -n 30"))
	}
	if got := sh(m1, "cat /etc/motd"); got != "managed by brine on m1\n" {
		t.Errorf("motd: %q", got)
	}
	if out := sh(mst, apply+" --json"); !strings.Contains(out, `"ok"`) || strings.Contains(out, `"changed"`) {
		t.Errorf("second apply is not a no-op:\n%s", out)
	}

	step("converged")
	// Purge: the daemon stops, and the package's files, config and state are gone.
	sh(m1, "apt-get purge -y -q brine")
	got := sh(m1, `for f in /usr/bin/brine /usr/bin/brine-minion /lib/systemd/system/brine-minion.service /lib/systemd/system/brine-master.service /etc/brine /var/lib/brine /etc/systemd/system/multi-user.target.wants/brine-minion.service; do
  if [ -e "$f" ] || [ -L "$f" ]; then echo "left: $f"; fi
done
dpkg-query -W -f='${Status}\n' brine 2>&1 || true
pgrep -x brine || pgrep -x brine-minion || echo no-process`)
	if !strings.HasSuffix(got, "no-process\n") || strings.Contains(got, "left:") || strings.Contains(got, "install ok") {
		t.Errorf("after purge:\n%s", got)
	}
}
