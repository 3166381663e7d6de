// Package testbedboot is a dosim.Booter that boots each simulated droplet as a real testbed
// host and runs its user_data there, as cloud-init would: a test, or `brine cloud sim --boot
// testbed`, then goes from `brine cloud create` to a bootstrapped minion for real, on one
// machine.
//
// It lives apart from dosim so that dosim, a plain HTTP simulator, does not depend on the testbed.
package testbedboot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/brinecm/brine/cloud/dosim"
	"github.com/brinecm/brine/testbed"
)

// UserDataPath is where the droplet's user_data is written inside the host, as on a real
// droplet.
const UserDataPath = "/var/lib/cloud/instance/user-data.txt"

// Booter boots droplets as hosts of Cluster. Droplet names must be valid testbed host names
// (at most 31 characters). In a cluster of systemd hosts (testbed.Options.Systemd), which is
// what a droplet is, the user_data finds systemd and starts the minion from its unit.
type Booter struct {
	Cluster *testbed.Cluster

	mu   sync.Mutex // guards runs
	runs map[string]*testbed.Daemon
}

// New returns a Booter for c.
func New(c *testbed.Cluster) *Booter { return &Booter{Cluster: c, runs: map[string]*testbed.Daemon{}} }

// Boot adds a host named after the droplet, writes the user_data into it and starts it as the
// daemon "cloud-init" (its output is that daemon's log). It returns the host's address as soon
// as the host is up: on DigitalOcean a droplet is "active" while cloud-init still runs.
func (b *Booter) Boot(ctx context.Context, d dosim.Droplet, userData string) (string, error) {
	h, err := b.Cluster.AddHost(ctx, d.Name) // safe from several goroutines (b9ce4e0)
	if err != nil {
		return "", fmt.Errorf("boot %s: %w", d.Name, err)
	}
	if userData == "" {
		return h.Addr(), nil
	}
	p := filepath.Join(h.Root(), UserDataPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", fmt.Errorf("boot %s: %w", d.Name, err)
	}
	if err := os.WriteFile(p, []byte(userData), 0o700); err != nil {
		return "", fmt.Errorf("boot %s: %w", d.Name, err)
	}
	run, err := h.Start("cloud-init", "/bin/sh", UserDataPath)
	if err != nil {
		return "", fmt.Errorf("boot %s: run user_data: %w", d.Name, err)
	}
	b.mu.Lock()
	b.runs[d.Name] = run
	b.mu.Unlock()
	return h.Addr(), nil
}

// BootKind says what the simulator boots its droplets as (dosim.SimulatorHeader).
func (b *Booter) BootKind() string { return dosim.BootTestbed }

// CloudInitLog returns the output of the droplet's user_data so far.
func (b *Booter) CloudInitLog(name string) string {
	b.mu.Lock()
	run := b.runs[name]
	b.mu.Unlock()
	if run == nil {
		return ""
	}
	return run.Log()
}

// Destroy powers the host off: a systemd host's PID 1 is killed (every process of the host goes
// with it); in a host without systemd every process but its PID 1 is killed. Its link is cut
// either way. What is left of the host goes when the cluster is closed.
func (b *Booter) Destroy(name string) {
	h := b.Cluster.Host(name)
	if h == nil {
		return
	}
	for _, d := range h.Daemons() {
		_ = d.Kill()
	}
	if h.Systemd() {
		_ = h.PowerOff()
		_ = b.Cluster.Partition(name)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// kill -1 from inside the host's PID namespace reaches every process but PID 1 and the
	// shell itself.
	_, _, _ = h.Sh(ctx, "kill -9 -1 2>/dev/null; true")
	_ = b.Cluster.Partition(name)
}
