// Package testbed makes real multi-host clusters on one Linux machine, for
// tests and demos, without containers.
//
// A cluster is a bridge in the machine's network namespace (brb-<n>) holding
// the first address of a private /24 (10.213.<n>.0/24), plus hosts. A host is
// a network namespace (brine-<cluster>-<host>) wired to the bridge by a veth
// pair, and a mount, UTS, IPC and PID namespace whose root is an overlayfs
// over the machine's "/" with its upper layer on a per-cluster tmpfs: a host
// shares the machine's files without copying them, and its writes (its /etc,
// its dpkg database) never reach the machine. Each host is held open by one
// init process (a reaper, or systemd with Options.Systemd); killing it kills
// every process of the host.
//
// Clusters are recorded under /run/brine-testbed, so that a cluster made by
// Up outlives its creator, Attach and Down find it again, and CleanAll
// removes what a crashed run left behind. Everything it makes is named with a
// brine- or brb- prefix.
package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/brinecm/brine/internal/lazyre"
	"golang.org/x/sync/errgroup"
)

// StateDir is where clusters are recorded (<name>.json) and where their
// working directories live (<name>/, a tmpfs).
const StateDir = "/run/brine-testbed"

// Paths inside every host.
const (
	// HostSharedDir is where Cluster.SharedDir is mounted read-write in every host.
	HostSharedDir = "/srv/brine"
	// HostAptDir is where the cluster's apt repository is mounted read-only.
	HostAptDir = "/srv/brine-apt"
)

var (
	clusterNameRE = lazyre.New(`^[a-z0-9]{1,24}$`) // no "-": brine-<cluster>-<host> must parse
	hostNameRE    = lazyre.New(`^[a-z0-9][a-z0-9-]{0,30}$`)
)

// tools the testbed runs on the machine.
var requiredTools = []string{"ip", "nsenter", "unshare", "mount", "umount", "pivot_root", "mknod", "hostname", "sh"}

var (
	availOnce sync.Once
	availErr  error
)

// Available reports why clusters cannot be made on this machine, or nil if
// they can: it needs root, network, mount and PID namespaces, overlayfs,
// tmpfs, bridges and veth pairs, and the util-linux and iproute2 tools.
func Available() error {
	availOnce.Do(func() { availErr = checkAvailable() })
	return availErr
}

func checkAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("testbed needs root")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return errors.New("testbed needs network namespaces (no /proc/self/ns/net)")
	}
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	for _, fs := range []string{"overlay", "tmpfs", "devpts"} {
		if !regexp.MustCompile(`\s` + fs + `\n`).Match(fss) {
			return fmt.Errorf("testbed needs the %s filesystem", fs)
		}
	}
	for _, t := range requiredTools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("testbed needs %s in PATH", t)
		}
	}
	// Namespaces can be compiled in yet refused (e.g. inside an unprivileged
	// container): try them once.
	out, err := exec.Command("unshare", "--net", "--mount", "--pid", "--uts", "--ipc", "--fork", "true").CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed cannot create namespaces: %v: %s", err, trimOut(out))
	}
	return nil
}

// Options describe a cluster to make.
type Options struct {
	// Name names the cluster (lower-case letters and digits, at most 24);
	// empty picks a random one.
	Name string
	// Hosts are the names of the hosts to start with (valid host names, at
	// most 31 characters).
	Hosts []string
	// AptRepo is a directory holding an apt repository built by BuildAptRepo;
	// when set, New calls EnableApt with it.
	AptRepo string
	// Systemd makes every host of the cluster a systemd host: it boots
	// /lib/systemd/systemd as its PID 1, in its own cgroup namespace, and is
	// ready once `systemctl is-system-running` says running or degraded
	// (Host.FailedUnits tells why). The machine's enabled units are not
	// enabled in the host, and units that would reach past the host to the
	// machine (clock, kernel modules, devices, consoles) are masked. New
	// raises the machine's fs.inotify.max_user_instances to 8192 if lower:
	// each systemd host takes some of that machine-wide budget.
	// SystemdAvailable says whether the machine can do it.
	Systemd bool
	// Debian, when set, makes New call EnableDebian: hosts install real packages from the
	// machine's Debian mirror, through a proxy that lives as long as the Cluster value.
	Debian bool
	// Persistent leaves the cluster running when the creating process exits
	// (Up sets it). A cluster that is not persistent is removed by the next
	// New or CleanAll once its creator is gone.
	Persistent bool
}

// Cluster is a running cluster. Its methods are safe for concurrent use.
type Cluster struct {
	mu    sync.Mutex // guards st, hosts, closed, mirror
	st    clusterState
	hosts []*Host
	// mirror is the Debian mirror proxy (EnableDebian), nil when off.
	mirror *mirrorProxy
	// closed is set by Close.
	closed bool
}

// New makes a cluster with the hosts of opts and waits until every host is
// ready. On error nothing is left behind.
func New(ctx context.Context, opts Options) (c *Cluster, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.Systemd {
		if err := SystemdAvailable(); err != nil {
			return nil, err
		}
		if err := raiseInotifyInstances(); err != nil {
			return nil, err
		}
	}
	if opts.Name == "" {
		opts.Name = "c" + randHex(3)
	}
	if !clusterNameRE.MatchString(opts.Name) {
		return nil, fmt.Errorf("testbed: bad cluster name %q: want %s", opts.Name, clusterNameRE)
	}
	if err := checkHostNames(nil, opts.Hosts); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	c = &Cluster{}
	if err := c.create(opts); err != nil {
		return nil, err
	}
	made := c // the error returns below set c to nil before this runs
	defer func() {
		if err != nil {
			made.Close()
		}
	}()
	if _, err := c.addHosts(ctx, opts.Hosts); err != nil {
		return nil, err
	}
	if opts.AptRepo != "" {
		if err := c.EnableApt(ctx, opts.AptRepo); err != nil {
			return nil, err
		}
	}
	if opts.Debian {
		if err := c.EnableDebian(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// create allocates the subnet, makes the bridge and the working directory
// and records the cluster, all under the registry lock so that parallel
// clusters never share a subnet.
func (c *Cluster) create(opts Options) error {
	unlock, err := lockRegistry()
	if err != nil {
		return err
	}
	defer unlock()
	cleanStaleLocked()
	if _, err := os.Stat(statePath(opts.Name)); err == nil {
		return fmt.Errorf("testbed: cluster %q already exists (brine testbed down %s)", opts.Name, opts.Name)
	}
	n, err := pickSubnet()
	if err != nil {
		return err
	}
	c.st = clusterState{
		Name:       opts.Name,
		Subnet:     n,
		Bridge:     fmt.Sprintf("brb-%d", n),
		Dir:        filepath.Join(StateDir, opts.Name),
		Persistent: opts.Persistent,
		Systemd:    opts.Systemd,
		Created:    time.Now().UTC(),
	}
	if !opts.Persistent {
		c.st.OwnerPID = os.Getpid()
		c.st.OwnerStart = procStart(os.Getpid())
	}
	// Record first, so that a crash from here on leaves something CleanAll finds.
	if err := c.saveLocked(); err != nil {
		return err
	}
	if err := c.makeDirs(); err != nil {
		c.teardown()
		return err
	}
	if err := ipBatch(
		fmt.Sprintf("link add %s type bridge", c.st.Bridge),
		fmt.Sprintf("link set %s alias brine-testbed:%s", c.st.Bridge, c.st.Name),
		fmt.Sprintf("addr add %s/24 dev %s", c.BridgeAddr(), c.st.Bridge),
		fmt.Sprintf("link set %s up", c.st.Bridge),
	); err != nil {
		c.teardown()
		return fmt.Errorf("testbed: make bridge: %w", err)
	}
	// Hosts reach each other and the machine, never beyond: even if the
	// machine forwards packets, it does not forward those of this bridge.
	for _, f := range []string{
		"/proc/sys/net/ipv4/conf/" + c.st.Bridge + "/forwarding",
		"/proc/sys/net/ipv6/conf/" + c.st.Bridge + "/forwarding",
	} {
		if err := os.WriteFile(f, []byte("0\n"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.teardown()
			return fmt.Errorf("testbed: keep %s from forwarding: %w", c.st.Bridge, err)
		}
	}
	return nil
}

func (c *Cluster) makeDirs() error {
	d := c.st.Dir
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	// One tmpfs holds every upper layer, log and shared file of the cluster:
	// fast, no disk left behind, and one umount frees it all.
	if err := syscall.Mount("brine-testbed", d, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=755"); err != nil {
		return fmt.Errorf("testbed: mount tmpfs on %s: %w", d, err)
	}
	for _, sub := range []string{"shared", "apt", "hosts", "logs"} {
		if err := os.Mkdir(filepath.Join(d, sub), 0o755); err != nil {
			return fmt.Errorf("testbed: %w", err)
		}
	}
	return os.Chmod(filepath.Join(d, "shared"), 0o777)
}

// AddHost starts one more host in the cluster (the cloud simulator "boots"
// droplets with it) and waits until it is ready.
func (c *Cluster) AddHost(ctx context.Context, name string) (*Host, error) {
	hs, err := c.addHosts(ctx, []string{name})
	if err != nil {
		return nil, err
	}
	return hs[0], nil
}

func (c *Cluster) addHosts(ctx context.Context, names []string) ([]*Host, error) {
	if len(names) == 0 {
		return nil, nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("testbed: cluster closed")
	}
	var existing []string
	next := 0
	for _, h := range c.hosts {
		existing = append(existing, h.st.Name)
		next = max(next, h.st.Index+1)
	}
	if err := checkHostNames(existing, names); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	if next+len(names) > 253 {
		c.mu.Unlock()
		return nil, fmt.Errorf("testbed: a cluster holds at most 253 hosts")
	}
	var hs []*Host
	var batch []string
	for i, name := range names {
		idx := next + i
		h := &Host{c: c, st: hostState{
			Name:    name,
			Index:   idx,
			Addr:    fmt.Sprintf("10.213.%d.%d", c.st.Subnet, idx+2),
			Netns:   "brine-" + c.st.Name + "-" + name,
			Veth:    fmt.Sprintf("%s-%d", c.st.Bridge, idx),
			Systemd: c.st.Systemd,
		}}
		hs = append(hs, h)
		batch = append(batch,
			"netns add "+h.st.Netns,
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", h.st.Veth, h.st.Netns),
			fmt.Sprintf("link set %s master %s up", h.st.Veth, c.st.Bridge),
		)
	}
	// Hosts are recorded before they exist, so Close and CleanAll find
	// half-made ones.
	c.hosts = append(c.hosts, hs...)
	err := c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := ipBatch(batch...); err != nil {
		return nil, fmt.Errorf("testbed: make host links: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, h := range hs {
		g.Go(func() error { return h.boot(gctx) })
	}
	err = g.Wait()
	c.mu.Lock()
	if serr := c.saveLocked(); err == nil {
		err = serr
	}
	apt, debian := c.st.Apt, c.mirror != nil
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if apt || debian {
		g, gctx := errgroup.WithContext(ctx)
		for _, h := range hs {
			g.Go(func() error {
				if debian {
					if err := h.enableDebian(gctx); err != nil {
						return err
					}
				}
				if apt {
					return h.enableApt(gctx)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}
	return hs, nil
}

func checkHostNames(existing, names []string) error {
	seen := map[string]bool{}
	for _, n := range existing {
		seen[n] = true
	}
	for _, n := range names {
		if !hostNameRE.MatchString(n) {
			return fmt.Errorf("testbed: bad host name %q: want %s", n, hostNameRE)
		}
		if seen[n] {
			return fmt.Errorf("testbed: duplicate host name %q", n)
		}
		seen[n] = true
	}
	return nil
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.st.Name }

// Host returns the host called name, or nil.
func (c *Cluster) Host(name string) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		if h.st.Name == name {
			return h
		}
	}
	return nil
}

// Hosts returns the cluster's hosts in the order they were added.
func (c *Cluster) Hosts() []*Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.hosts)
}

// BridgeAddr returns the machine's address on the cluster's bridge (where a
// master running on the machine listens), e.g. 10.213.7.1.
func (c *Cluster) BridgeAddr() string { return fmt.Sprintf("10.213.%d.1", c.st.Subnet) }

// Bridge returns the name of the cluster's bridge on the machine.
func (c *Cluster) Bridge() string { return c.st.Bridge }

// SharedDir returns a directory on the machine that every host sees
// read-write at /srv/brine: the way to hand binaries and bundles to hosts.
func (c *Cluster) SharedDir() string { return filepath.Join(c.st.Dir, "shared") }

// Partition cuts host off the network: its link to the bridge goes down.
func (c *Cluster) Partition(host string) error { return c.setLink(host, "down") }

// Heal restores the link cut by Partition.
func (c *Cluster) Heal(host string) error { return c.setLink(host, "up") }

func (c *Cluster) setLink(host, state string) error {
	h := c.Host(host)
	if h == nil {
		return fmt.Errorf("testbed: no host %q in cluster %s", host, c.st.Name)
	}
	if err := ipBatch(fmt.Sprintf("link set %s %s", h.st.Veth, state)); err != nil {
		return fmt.Errorf("testbed: set %s link %s: %w", host, state, err)
	}
	return nil
}

// Close stops every daemon, kills every process of every host, and removes
// the namespaces, links, mounts, directories and record of the cluster. It
// is safe to call more than once; it returns what it could not remove.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	hosts := slices.Clone(c.hosts)
	mirror := c.mirror
	c.mu.Unlock()
	if mirror != nil {
		mirror.close()
	}
	for _, h := range hosts {
		h.killDaemons()
	}
	unlock, err := lockRegistry()
	if err == nil {
		defer unlock()
	}
	return c.teardown()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func trimOut(b []byte) string {
	const max = 2000
	s := string(b)
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
