package testbed

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/brinecm/brine/internal/tb"
)

// RequireRealEnv names the environment variable under which a test that needs the real machine
// (root, namespaces, iptables, dpkg) fails instead of skipping. .ci/run sets it: CI has all of
// that, so a skip there would be a test quietly lost.
const RequireRealEnv = "BRINE_REQUIRE_REAL"

// SkipUnavailable skips t because the machine lacks what it needs (why), or fails it when
// RequireRealEnv is set.
func SkipUnavailable(t tb.TB, why any) {
	t.Helper()
	if os.Getenv(RequireRealEnv) != "" {
		t.Fatalf("%v (%s is set: this machine must run real-host tests)", why, RequireRealEnv)
	}
	t.Skip(why)
}

// NewT makes a cluster with the given hosts for the test t, skipping the
// test (with the reason) if the machine cannot make one. The cluster is
// closed when the test ends; if the test failed, the logs of the daemons
// started in it are printed first, and a daemon log holding "panic:" or
// "DATA RACE" fails the test.
func NewT(t tb.TB, hosts ...string) *Cluster {
	t.Helper()
	if err := Available(); err != nil {
		SkipUnavailable(t, err)
	}
	return newT(t, Options{Hosts: hosts})
}

// NewSystemdT is NewT with systemd hosts (Options.Systemd). The units that
// failed in a host that booted "degraded" are logged.
func NewSystemdT(t tb.TB, hosts ...string) *Cluster {
	t.Helper()
	if err := SystemdAvailable(); err != nil {
		SkipUnavailable(t, err)
	}
	c := newT(t, Options{Hosts: hosts, Systemd: true})
	for _, h := range c.Hosts() {
		if f := h.FailedUnits(); len(f) > 0 {
			t.Logf("testbed: host %s booted degraded: failed units: %s", h.Name(), strings.Join(f, ", "))
		}
	}
	return c
}

func newT(t tb.TB, opts Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+SystemdBootTimeout)
	defer cancel()
	opts.Name = "t" + randHex(3)
	c, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		for _, h := range c.Hosts() {
			for _, d := range h.Daemons() {
				log := d.Log()
				bad := strings.Contains(log, "panic:") || strings.Contains(log, "DATA RACE")
				if bad {
					t.Errorf("testbed: daemon %s on %s logged a panic or a data race", d.Name(), h.Name())
				}
				if t.Failed() || bad {
					t.Logf("testbed: log of daemon %s on %s (%s):\n%s", d.Name(), h.Name(), d.LogPath(), log)
				}
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("testbed: %v", err)
		}
	})
	return c
}
