package tinc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
	"github.com/brinecm/brine/testbed"
)

// probeUnit is a unit for the service tests: it logs each start (with $VERSION and the content of
// /etc/brine-probe.conf) and each SIGHUP to /run/brine-probe.log.
func probeUnit(version string, install bool) string {
	u := `[Unit]
Description=brine test daemon
[Service]
Environment=VERSION=` + version + `
ExecStart=/bin/sh -c 'echo "start v=$VERSION conf=$(cat /etc/brine-probe.conf 2>/dev/null)" >>/run/brine-probe.log; trap "echo hup >>/run/brine-probe.log" HUP; while :; do sleep 1 & wait; done'
ExecReload=/bin/kill -HUP $MAINPID
`
	if install {
		u += "[Install]\nWantedBy=multi-user.target\n"
	}
	return u
}

// probeBundle manages the probe's unit file and config and the service, the file resources
// notifying it.
func probeBundle(unit, conf, service string) string {
	return fmt.Sprintf(`
file "unit" {
  path    = "/etc/systemd/system/brine-probe.service"
  content = %q
  notify  = [service.brine-probe]
}
file "conf" {
  path    = "/etc/brine-probe.conf"
  content = %q
  notify  = [service.brine-probe]
}
service "brine-probe" {
%s
}
`, unit, conf, service)
}

// TestSystemdPaths runs the systemd paths of service and tinc_network against real units in two
// systemd testbed hosts.
func TestSystemdPaths(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	if err := testbed.SystemdAvailable(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	c := testbed.NewSystemdT(t, "a", "b")
	testbed.InstallBrine(t, c.SharedDir())
	n := &restest.NetCluster{T: t, C: c}
	// sub runs a subtest with n reporting to it.
	sub := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			n.T = t
			defer func() { n.T = nil }()
			f(t)
		})
	}
	show := func(props string) string {
		return strings.TrimSpace(n.Sh("a", "systemctl show --property="+props+" brine-probe.service"))
	}
	mainPID := func() string { return strings.TrimPrefix(show("MainPID"), "MainPID=") }
	log := func() string { return n.Sh("a", "cat /run/brine-probe.log 2>/dev/null || true") }
	// logEnds waits until the probe's log ends with want: systemd returns from start and reload
	// before the daemon has written its line.
	logEnds := func(want string) bool {
		deadline := time.Now().Add(10 * time.Second)
		for !strings.HasSuffix(log(), want) {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(50 * time.Millisecond)
		}
		return true
	}

	sub("start and enable, then idempotent", func(t *testing.T) {
		b := probeBundle(probeUnit("1", true), "one", "state = \"running\"\nenabled = true")
		rep := n.Apply("a", b)
		restest.WantCounts(t, rep, 3, 0)
		if got := show("ActiveState,UnitFileState"); got != "ActiveState=active\nUnitFileState=enabled" {
			t.Fatalf("after apply: %s", got)
		}
		if !logEnds("start v=1 conf=one\n") || log() != "start v=1 conf=one\n" {
			t.Errorf("log: %q (the service ran once, not restarted by the notify)", log())
		}
		restest.WantCounts(t, n.Apply("a", b), 0, 0)
	})
	sub("notify with reload = reload sends SIGHUP", func(t *testing.T) {
		pid := mainPID()
		b := probeBundle(probeUnit("1", true), "two", "state = \"running\"\nenabled = true\nreload = \"reload\"")
		restest.WantCounts(t, n.Apply("a", b), 2, 0) // the file, and the notified service
		if !logEnds("hup\n") || mainPID() != pid {
			t.Errorf("not reloaded in place: pid %s -> %s, log %q", pid, mainPID(), log())
		}
	})
	sub("notify restarts", func(t *testing.T) {
		pid := mainPID()
		b := probeBundle(probeUnit("1", true), "three", "state = \"running\"\nenabled = true")
		restest.WantCounts(t, n.Apply("a", b), 2, 0)
		if !logEnds("start v=1 conf=three\n") || mainPID() == pid {
			t.Errorf("not restarted: pid %s -> %s, log %q", pid, mainPID(), log())
		}
	})
	sub("a changed unit file is loaded before the restart", func(t *testing.T) {
		b := probeBundle(probeUnit("2", true), "three", "state = \"running\"\nenabled = true")
		rep := n.Apply("a", b)
		restest.WantCounts(t, rep, 2, 0) // the unit file, and the service's daemon-reload
		if d := restest.Result(t, rep, "service.brine-probe").Diff; !strings.Contains(d, "daemon-reload") {
			t.Errorf("service diff: %q", d)
		}
		if !logEnds("start v=2 conf=three\n") {
			t.Errorf("the restart ran the old unit: log %q", log())
		}
		if got := show("NeedDaemonReload"); got != "NeedDaemonReload=no" {
			t.Errorf("after apply: %s", got)
		}
		restest.WantCounts(t, n.Apply("a", b), 0, 0)
	})
	sub("a unit file changed by hand is reloaded by the next check", func(t *testing.T) {
		n.Sh("a", "sed -i s/VERSION=2/VERSION=3/ /etc/systemd/system/brine-probe.service")
		rep := n.Apply("a", `service "brine-probe" {
  state = "running"
}`)
		restest.WantCounts(t, rep, 1, 0)
		if got := show("NeedDaemonReload"); got != "NeedDaemonReload=no" {
			t.Errorf("after apply: %s", got)
		}
	})
	sub("stop and disable", func(t *testing.T) {
		b := probeBundle(probeUnit("2", true), "three", "state = \"stopped\"\nenabled = false")
		rep := n.Apply("a", b)
		restest.WantCounts(t, rep, 2, 0) // the unit file back to v2, and the service
		if got := show("ActiveState,UnitFileState"); got != "ActiveState=inactive\nUnitFileState=disabled" {
			t.Fatalf("after apply: %s", got)
		}
		restest.WantCounts(t, n.Apply("a", b), 0, 0)
	})
	sub("a static unit runs, and enabled cannot apply to it", func(t *testing.T) {
		b := probeBundle(probeUnit("2", false), "three", "state = \"running\"\nenabled = true")
		restest.WantCounts(t, n.Apply("a", b), 2, 0)
		if got := show("ActiveState,UnitFileState"); got != "ActiveState=active\nUnitFileState=static" {
			t.Fatalf("after apply: %s", got)
		}
		restest.WantCounts(t, n.Apply("a", b), 0, 0)
		n.Sh("a", "systemctl stop brine-probe.service")
	})
	sub("a masked unit", func(t *testing.T) {
		// A unit a package ships, masked by the administrator.
		n.Sh("a", "printf '[Service]\\nExecStart=/bin/sleep 1000\\n[Install]\\nWantedBy=multi-user.target\\n' >/lib/systemd/system/brine-masked.service && systemctl mask brine-masked.service")
		restest.WantCounts(t, n.Apply("a", `service "brine-masked" {
  state   = "stopped"
  enabled = false
}`), 0, 0)
		for _, body := range []string{`state = "running"`, `enabled = true`} {
			rep := n.Apply("a", "service \"brine-masked\" {\n"+body+"\n}")
			restest.WantCounts(t, rep, 0, 1)
			if e := restest.Result(t, rep, "service.brine-masked").Error; !strings.Contains(e, "masked") || !strings.Contains(e, "systemctl unmask") {
				t.Errorf("%s: error: %q", body, e)
			}
		}
		if out := n.Sh("a", "systemctl is-active brine-masked.service || true"); out != "inactive\n" {
			t.Errorf("masked unit: %q", out)
		}
	})
	sub("a missing unit", func(t *testing.T) {
		rep := n.Apply("a", `service "brine-nosuch" {
  state = "running"
}`)
		restest.WantCounts(t, rep, 0, 1)
		if e := restest.Result(t, rep, "service.brine-nosuch").Error; !strings.Contains(e, "no unit brine-nosuch.service") {
			t.Errorf("error: %q", e)
		}
	})
	sub("tinc_network runs tinc@NAME", func(t *testing.T) {
		hosts := []string{"a", "b"}
		vpn := map[string]string{"a": "10.8.0.1", "b": "10.8.0.2"}
		keys := map[string]string{}
		for _, h := range hosts {
			restest.WantCounts(t, n.Apply(h, tincBundle(n), meshVars(t, n, h, vpn, nil, nil)...), 1, 0)
			old := tincRoot
			tincRoot = c.Host(h).Root()
			keys[h], _ = Facts()["tinc_pubkey"].(map[string]any)["mesh"].(string)
			tincRoot = old
			if keys[h] == "" {
				t.Fatalf("no public key on %s", h)
			}
		}
		apply := func(h string, members []string) *states.Report {
			return n.Apply(h, tincBundle(n), meshVars(t, n, h, vpn, keys, members)...)
		}
		for _, h := range hosts {
			restest.WantCounts(t, apply(h, hosts), 1, 0)
			if out := n.Sh(h, "systemctl is-active tinc@mesh; systemctl is-enabled tinc@mesh; systemctl show -p MainPID --value tinc@mesh"); !strings.HasPrefix(out, "active\nenabled\n") || strings.HasSuffix(out, "\n0\n") {
				t.Errorf("%s: tinc@mesh: %q", h, out)
			}
		}
		pollPing(t, n, "a", vpn["b"], true, 30*time.Second)
		pollPing(t, n, "b", vpn["a"], true, 30*time.Second)
		for _, h := range hosts {
			restest.WantCounts(t, apply(h, hosts), 0, 0)
		}
		// The whole tinc service is what boots the nets: tinc@mesh is wanted by tinc.service.
		if out := n.Sh("a", "systemctl is-enabled tinc.service"); strings.TrimSpace(out) != "enabled" {
			t.Errorf("tinc.service: %q", out)
		}
		// b leaves a's mesh: a reloads tincd through systemd, its pid unchanged.
		pid := n.Sh("a", "systemctl show -p MainPID --value tinc@mesh")
		rep := apply("a", []string{"a"})
		restest.WantCounts(t, rep, 1, 0)
		if got := n.Sh("a", "systemctl show -p MainPID --value tinc@mesh"); got != pid {
			t.Errorf("tinc@mesh restarted (pid %s -> %s), want a reload", strings.TrimSpace(pid), strings.TrimSpace(got))
		}
		pollPing(t, n, "a", vpn["b"], false, 20*time.Second)
		// running = false stops and disables it.
		b := strings.Replace(tincBundle(n), "key_size = 2048", "key_size = 2048\n  running = false", 1)
		restest.WantCounts(t, n.Apply("a", b, meshVars(t, n, "a", vpn, keys, []string{"a"})...), 1, 0)
		if out, _, _ := c.Host("a").Sh(context.Background(), "systemctl is-active tinc@mesh; systemctl is-enabled tinc@mesh"); out != "inactive\ndisabled\n" {
			t.Errorf("after running = false: %q", out)
		}
	})
}
