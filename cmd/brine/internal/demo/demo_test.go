package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/testbed"
)

// The demo flow, as `make demo` runs it: enrol four real minions with tokens, converge the
// reference deployment, prove the mesh and the firewall, and a second apply with 0 changes.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 4-host cluster")
	}
	if err := testbed.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	bin := testbed.BrineBinary(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := Run(ctx, Options{Binary: bin, Bundle: "../../../../examples/ghost-pro", Out: &out, Name: "demotest"})
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"12 of 12 host pairs", "refused by ufw", "a second apply changed nothing"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q", want)
		}
	}
	if left := testbed.Leftovers("demotest"); len(left) > 0 {
		t.Fatalf("the demo left %v", left)
	}
}

// `brine demo --real`: the reference deployment on real Debian packages, on systemd hosts whose
// minions run from the shipped unit, in one cluster: an HTTP request to cache's public address
// is proxied by nginx over the mesh to the app, which reads its row from MariaDB over the mesh;
// the database is refused from outside the mesh; a second apply changes nothing. It downloads
// from the machine's Debian mirror (once: later runs use the machine's cache), so it skips when
// the mirror cannot be reached.
func TestDemoReal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 4-host cluster with real packages")
	}
	if err := testbed.SystemdAvailable(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	if err := testbed.DebianReachable(context.Background(), 5*time.Second); err != nil {
		t.Skipf("real Debian packages: %v", err)
	}
	bin := testbed.BrineBinary(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	err := Run(ctx, Options{Binary: bin, Bundle: "../../../../examples/ghost-pro-real", Real: true, Out: &out, Name: "demoreal"})
	t.Log(out.String())
	t.Logf("brine demo --real: %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"12 of 12 host pairs", "Hello from MariaDB, over the mesh", "served by ghost-app on app from the database at 10.8.0.",
		"db:3306 from outside the mesh", "a second apply changed nothing"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q", want)
		}
	}
	if left := testbed.Leftovers("demoreal"); len(left) > 0 {
		t.Fatalf("the demo left %v", left)
	}
}
