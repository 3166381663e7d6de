package testbed

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSystemdHosts boots two systemd hosts and checks what makes them
// production-like and what keeps them apart from the machine.
func TestSystemdHosts(t *testing.T) {
	c := NewSystemdT(t, "s1", "s2")
	s1, s2 := c.Host("s1"), c.Host("s2")
	for _, h := range []*Host{s1, s2} {
		if comm := strings.TrimSpace(mustSh(t, h, "cat /proc/1/comm")); comm != "systemd" {
			t.Errorf("%s: PID 1 is %q, want systemd", h.Name(), comm)
		}
		out, _, _ := h.Sh(testCtx(t), "systemctl is-system-running")
		if st := strings.TrimSpace(out); st != "running" && st != "degraded" {
			t.Errorf("%s: system state %q", h.Name(), st)
		}
		// Its own cgroup tree, rooted at the host's cgroup on the machine.
		if out := mustSh(t, h, "cat /proc/1/cgroup"); !strings.Contains(out, ":/init.scope\n") {
			t.Errorf("%s: PID 1 cgroups:\n%s", h.Name(), out)
		}
		for _, cg := range h.st.Cgroups {
			if _, err := os.Stat(filepath.Join(cg, "init.scope")); err != nil {
				t.Errorf("%s: %v", h.Name(), err)
			}
		}
	}
	t.Run("units run in their own cgroups", func(t *testing.T) {
		mustSh(t, s1, "systemd-run --unit=brine-probe --property=Type=exec sleep 1000")
		out := mustSh(t, s1, "systemctl is-active brine-probe.service; cat /proc/$(systemctl show -p MainPID --value brine-probe)/cgroup")
		if !strings.HasPrefix(out, "active\n") || !strings.Contains(out, "/system.slice/brine-probe.service") {
			t.Errorf("transient unit:\n%s", out)
		}
		if _, code, _ := s2.Sh(testCtx(t), "systemctl is-active --quiet brine-probe.service"); code == 0 {
			t.Error("s1's unit is active in s2")
		}
		mustSh(t, s1, "systemctl stop brine-probe.service")
	})
	t.Run("the machine's enabled units are not", func(t *testing.T) {
		ents, _ := filepath.Glob("/etc/systemd/system/*.wants/*")
		for _, e := range ents {
			if _, code, _ := s1.Sh(testCtx(t), "test -e "+e); code == 0 {
				t.Errorf("s1 has the machine's %s", e)
			}
		}
		for _, u := range []string{"getty@tty1.service", "systemd-timesyncd.service", "systemd-udevd.service"} {
			out, _, _ := s1.Sh(testCtx(t), "systemctl is-enabled "+u)
			if strings.TrimSpace(out) != "masked" && strings.TrimSpace(out) != "masked-runtime" {
				t.Errorf("%s is %q in s1, want masked", u, strings.TrimSpace(out))
			}
		}
	})
	t.Run("kernel settings are read-only but the host's network", func(t *testing.T) {
		if _, code, _ := s1.Sh(testCtx(t), "echo 1 > /proc/sys/kernel/sysrq"); code == 0 {
			t.Error("a host can write the machine's kernel.sysrq")
		}
		if _, code, _ := s1.Sh(testCtx(t), "touch /sys/kernel/brine-probe"); code == 0 {
			t.Error("a host can write /sys")
		}
		mustSh(t, s1, "echo 1 > /proc/sys/net/ipv4/ip_forward")
		if out := mustSh(t, s2, "cat /proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(out) != "0" {
			t.Errorf("s1's ip_forward reached s2: %q", out)
		}
	})
	t.Run("hosts reach each other", func(t *testing.T) {
		mustSh(t, s1, "ping -c1 -W5 "+s2.Addr())
	})
}

// TestSystemdCloseLeavesNothing checks that teardown of systemd hosts
// removes their cgroups too, after a unit of their own made more.
func TestSystemdCloseLeavesNothing(t *testing.T) {
	if err := SystemdAvailable(); err != nil {
		SkipUnavailable(t, err)
	}
	c, err := New(testCtx(t), Options{Hosts: []string{"x"}, Systemd: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	x := c.Host("x")
	mustSh(t, x, "systemd-run --unit=brine-bg --property=Type=exec sleep 1000")
	cgs := x.st.Cgroups
	if len(cgs) == 0 {
		t.Fatal("no cgroups recorded")
	}
	var left []string
	for _, l := range Leftovers(c.Name()) {
		if strings.HasPrefix(l, "cgroup ") {
			left = append(left, l)
		}
	}
	if len(left) != len(cgs) {
		t.Errorf("Leftovers of a running systemd cluster lists cgroups %v, want %v", left, cgs)
	}
	pid := x.InitPID()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, c.Name(), c.Bridge(), []int{pid})
	for _, cg := range cgs {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup %s left", cg)
		}
	}
}

// BenchmarkSystemdUp4 times bringing up four systemd hosts until all four
// report `systemctl is-system-running` = running (or degraded), and tearing
// them down.
func BenchmarkSystemdUp4(b *testing.B) {
	if err := SystemdAvailable(); err != nil {
		b.Skip(err)
	}
	hosts := []string{"h1", "h2", "h3", "h4"}
	var up time.Duration
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		start := time.Now()
		c, err := New(ctx, Options{Hosts: hosts, Systemd: true})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		up += time.Since(start)
		for _, h := range c.Hosts() {
			if f := h.FailedUnits(); len(f) > 0 {
				b.Logf("%s degraded: %v", h.Name(), f)
			}
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(up.Seconds()/float64(b.N), "s-up/op")
}
