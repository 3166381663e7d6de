package testbed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/brinecm/brine/internal/lazyre"
)

// clusterState is what /run/brine-testbed/<name>.json records: enough for
// another process to attach to the cluster or to tear it down.
type clusterState struct {
	Name       string      `json:"name"`
	Subnet     int         `json:"subnet"` // the third octet of 10.213.N.0/24
	Bridge     string      `json:"bridge"`
	Dir        string      `json:"dir"`
	Persistent bool        `json:"persistent"`
	OwnerPID   int         `json:"owner_pid,omitempty"`
	OwnerStart uint64      `json:"owner_start,omitempty"`
	Created    time.Time   `json:"created"`
	Apt        bool        `json:"apt,omitempty"`     // EnableApt ran: new hosts get the repository too
	Systemd    bool        `json:"systemd,omitempty"` // hosts boot systemd (Options.Systemd)
	Debian     bool        `json:"debian,omitempty"`  // EnableDebian ran: hosts use the machine's mirror through this process's proxy
	Hosts      []hostState `json:"hosts"`
}

type hostState struct {
	Name        string `json:"name"`
	Index       int    `json:"index"`
	Addr        string `json:"addr"`
	Netns       string `json:"netns"`
	Veth        string `json:"veth"`
	InitPID     int    `json:"init_pid,omitempty"` // the host's PID 1, as the machine sees it
	InitStart   uint64 `json:"init_start,omitempty"`
	HolderPID   int    `json:"holder_pid,omitempty"` // the nsenter/unshare process above it
	HolderStart uint64 `json:"holder_start,omitempty"`
	// Systemd hosts: PID 1 is systemd, in the host's own cgroups (one per
	// hierarchy of the machine), which teardown removes.
	Systemd     bool     `json:"systemd,omitempty"`
	Cgroups     []string `json:"cgroups,omitempty"`
	FailedUnits []string `json:"failed_units,omitempty"` // when boot ended "degraded"
}

func statePath(name string) string { return filepath.Join(StateDir, name+".json") }

// saveLocked writes the record atomically; c.mu must be held (or c not yet shared).
func (c *Cluster) saveLocked() error {
	c.st.Hosts = c.st.Hosts[:0]
	for _, h := range c.hosts {
		c.st.Hosts = append(c.st.Hosts, h.st)
	}
	b, err := json.MarshalIndent(c.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(c.st.Name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("testbed: record cluster: %w", err)
	}
	if err := os.Rename(tmp, statePath(c.st.Name)); err != nil {
		return fmt.Errorf("testbed: record cluster: %w", err)
	}
	return nil
}

func loadState(name string) (clusterState, error) {
	var st clusterState
	b, err := os.ReadFile(statePath(name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return st, fmt.Errorf("testbed: no cluster %q", name)
		}
		return st, fmt.Errorf("testbed: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("testbed: read record of %s: %w", name, err)
	}
	return st, nil
}

func recordedClusters() []string {
	ents, _ := os.ReadDir(StateDir)
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && !e.IsDir() {
			names = append(names, n)
		}
	}
	return names
}

// lockRegistry takes the machine-wide testbed lock (an flock, so it is
// released if the process dies).
func lockRegistry() (func(), error) {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(StateDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("testbed: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

var subnetRE = lazyre.New(`\b10\.213\.(\d+)\.\d+`)

// pickSubnet returns an N for 10.213.N.0/24 that no recorded cluster, no
// address and no brb-N link on the machine uses. Call with the lock held.
func pickSubnet() (int, error) {
	used := map[int]bool{}
	for _, name := range recordedClusters() {
		if st, err := loadState(name); err == nil {
			used[st.Subnet] = true
		}
	}
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		return 0, fmt.Errorf("testbed: ip addr: %w", err)
	}
	for _, m := range subnetRE.FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[1])
		used[n] = true
	}
	out, _ = exec.Command("ip", "-4", "-o", "route", "show").Output()
	for _, m := range subnetRE.FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[1])
		used[n] = true
	}
	links, _ := linkNames()
	for _, l := range links {
		if s, ok := strings.CutPrefix(l, "brb-"); ok {
			n, err := strconv.Atoi(strings.SplitN(s, "-", 2)[0])
			if err == nil {
				used[n] = true
			}
		}
	}
	for n := 1; n < 255; n++ {
		if !used[n] {
			return n, nil
		}
	}
	return 0, errors.New("testbed: no free 10.213.N.0/24 subnet (too many clusters?)")
}

func linkNames() ([]string, error) {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip link: %w", err)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names, nil
}

// ipBatch runs ip commands in one ip process (much faster than one each).
func ipBatch(cmds ...string) error {
	return runIPBatch(false, cmds)
}

// ipBatchForce runs every command even if some fail; for teardown.
func ipBatchForce(cmds ...string) error {
	return runIPBatch(true, cmds)
}

func runIPBatch(force bool, cmds []string) error {
	if len(cmds) == 0 {
		return nil
	}
	args := []string{"-batch", "-"}
	if force {
		args = append([]string{"-force"}, args...)
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip: %v: %s", err, trimOut(out))
	}
	return nil
}

// procStart returns the start time of a process (clock ticks since boot),
// to tell a process from a later one that reused its pid; 0 if it is gone.
func procStart(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields restart after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

func alive(pid int, start uint64) bool {
	return pid > 0 && start != 0 && procStart(pid) == start
}

// proc is one process of the machine, as testbed cleanup sees it.
type proc struct {
	pid     int
	netIno  uint64
	cmdline string
}

func scanProcs() []proc {
	ents, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		p := proc{pid: pid}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil {
			p.netIno = st.Ino
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		p.cmdline = string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		ps = append(ps, p)
	}
	return ps
}

func nsInode(path string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// markerPrefix starts the argv[0] of every process the testbed starts in a
// host's namespaces (see holderScript), so cleanup finds them even without
// a record.
const markerPrefix = "brine-testbed:"

func marker(cluster, host string) string { return markerPrefix + cluster + ":" + host }

// killMatching SIGKILLs every process in one of the network namespaces or
// whose command line holds one of the markers, and waits (up to 5 s) until
// they are gone. It returns the pids it could not kill.
func killMatching(netInos map[uint64]bool, markers []string) []int {
	match := func(p proc) bool {
		if p.netIno != 0 && netInos[p.netIno] {
			return true
		}
		for _, m := range markers {
			if strings.Contains(p.cmdline, m) {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(5 * time.Second)
	// A killed process can linger without namespaces or command line (a
	// PID 1 waits for the kernel to reap its namespace): wait for the pids
	// themselves.
	killed := map[int]uint64{}
	for {
		var left []int
		for _, p := range scanProcs() {
			if match(p) {
				if start := procStart(p.pid); start != 0 {
					killed[p.pid] = start
					syscall.Kill(p.pid, syscall.SIGKILL)
				}
			}
		}
		for pid, start := range killed {
			if alive(pid, start) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// teardown removes everything the record names. The registry lock should be
// held, so that the subnet is not handed out while the bridge still exists.
func (c *Cluster) teardown() error {
	c.mu.Lock()
	st := c.st
	st.Hosts = nil
	for _, h := range c.hosts {
		st.Hosts = append(st.Hosts, h.st)
	}
	c.mu.Unlock()
	return teardownState(st)
}

func teardownState(st clusterState) error {
	var errs []error
	inos := map[uint64]bool{}
	var markers []string
	for _, h := range st.Hosts {
		if ino := nsInode("/run/netns/" + h.Netns); ino != 0 {
			inos[ino] = true
		}
		markers = append(markers, marker(st.Name, h.Name)+" ")
		// Killing a host's PID 1 kills every process of the host at once.
		if alive(h.InitPID, h.InitStart) {
			syscall.Kill(h.InitPID, syscall.SIGKILL)
		}
	}
	if left := killMatching(inos, markers); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes %v of cluster %s survive SIGKILL", left, st.Name))
	}
	// A dying PID 1 lingers until the kernel has reaped its namespace.
	deadline := time.Now().Add(5 * time.Second)
	for _, h := range st.Hosts {
		for alive(h.InitPID, h.InitStart) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(h.InitPID, h.InitStart) {
			errs = append(errs, fmt.Errorf("init %d of host %s survives SIGKILL", h.InitPID, h.Name))
		}
	}
	for _, h := range st.Hosts {
		if err := removeCgroups(h.Cgroups); err != nil {
			errs = append(errs, err)
		}
	}
	// Deleting a veth deletes its peer in the host; delete links first, as
	// a namespace's devices go away asynchronously after the namespace.
	var cmds []string
	ours := func(l string) bool { return l == st.Bridge || strings.HasPrefix(l, st.Bridge+"-") }
	links, _ := linkNames()
	for _, l := range links {
		if ours(l) && l != st.Bridge {
			cmds = append(cmds, "link del "+l)
		}
	}
	cmds = append(cmds, "link del "+st.Bridge)
	for _, h := range st.Hosts {
		if _, err := os.Stat("/run/netns/" + h.Netns); err == nil {
			cmds = append(cmds, "netns del "+h.Netns)
		}
	}
	// Errors here are mostly "already gone"; what matters is what is left.
	ipBatchForce(cmds...)
	deadline = time.Now().Add(3 * time.Second)
	for {
		var left []string
		links, _ := linkNames()
		for _, l := range links {
			if ours(l) {
				left = append(left, "link "+l)
			}
		}
		for _, h := range st.Hosts {
			if _, err := os.Stat("/run/netns/" + h.Netns); err == nil {
				left = append(left, "netns "+h.Netns)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("cannot remove %s", strings.Join(left, ", ")))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Dir != "" && strings.HasPrefix(st.Dir, StateDir+"/") {
		if err := unmountUnder(st.Dir); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(st.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(statePath(st.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testbed: tear down %s: %w", st.Name, err)
	}
	return nil
}

// mountsUnder lists the machine's mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	slices.SortFunc(mps, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(mps)
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unmountUnder(dir string) error {
	var errs []error
	for _, mp := range mountsUnder(dir) {
		// Stacked mounts show up more than once; unmount until gone.
		for range 8 {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
				if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
					errs = append(errs, fmt.Errorf("umount %s: %w", mp, err))
				}
				break
			}
		}
	}
	return errors.Join(errs...)
}

// cleanStaleLocked tears down clusters whose creating process is gone and
// that were not made to outlive it (a test binary that crashed or was
// killed). Call with the lock held.
func cleanStaleLocked() {
	for _, name := range recordedClusters() {
		st, err := loadState(name)
		if err != nil || st.Persistent || alive(st.OwnerPID, st.OwnerStart) {
			continue
		}
		teardownState(st)
	}
}

// Up makes a cluster that outlives the calling process (for `brine testbed
// up`), with the default test apt repository enabled in its hosts unless
// opts names another. Find it again with Attach, remove it with Down.
func Up(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.AptRepo == "" {
		repo, err := DefaultAptRepo()
		if err != nil {
			return nil, err
		}
		opts.AptRepo = repo
	}
	opts.Persistent = true
	return New(ctx, opts)
}

// Attach returns the running cluster called name, made by this or another
// process. Daemons started by another process are not visible to it.
func Attach(name string) (*Cluster, error) {
	st, err := loadState(name)
	if err != nil {
		return nil, err
	}
	c := &Cluster{st: st}
	for _, hs := range st.Hosts {
		if !alive(hs.InitPID, hs.InitStart) {
			return nil, fmt.Errorf("testbed: host %s of cluster %s is not running (brine testbed down %s)", hs.Name, name, name)
		}
		c.hosts = append(c.hosts, &Host{c: c, st: hs})
	}
	return c, nil
}

// Down tears down the recorded cluster called name, running or half-dead.
func Down(name string) error {
	unlock, err := lockRegistry()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(name)
	if err != nil {
		return err
	}
	return teardownState(st)
}

// List returns the names of the recorded clusters.
func List() []string {
	names := recordedClusters()
	slices.Sort(names)
	return names
}

// CleanAll removes every cluster and every leftover of crashed runs: the
// recorded clusters, then any process started in a testbed host, brine-*
// network namespace and cgroup, brb-* link and mount under /run/brine-testbed. It
// also removes the clusters of other processes that are still running.
func CleanAll() error { return cleanLeftovers("") }

// cleanLeftovers removes the cluster called name (every cluster if name is
// empty), finding it by its record and also by names alone: namespaces
// brine-<name>-*, the bridge whose alias is brine-testbed:<name> and its
// veths, processes marked brine-testbed:<name>:, and mounts.
func cleanLeftovers(name string) error {
	unlock, err := lockRegistry()
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, n := range recordedClusters() {
		if name != "" && n != name {
			continue
		}
		st, err := loadState(n)
		if err != nil {
			os.Remove(statePath(n))
			continue
		}
		if err := teardownState(st); err != nil {
			errs = append(errs, err)
		}
	}
	nsPrefix, mark := "brine-", markerPrefix
	if name != "" {
		nsPrefix, mark = "brine-"+name+"-", marker(name, "")
	}
	inos := map[uint64]bool{}
	var cmds []string
	for _, ns := range netnsNames() {
		if strings.HasPrefix(ns, nsPrefix) {
			inos[nsInode("/run/netns/"+ns)] = true
			cmds = append(cmds, "netns del "+ns)
		}
	}
	if left := killMatching(inos, []string{mark}); len(left) > 0 {
		errs = append(errs, fmt.Errorf("testbed: processes %v survive SIGKILL", left))
	}
	if err := removeCgroups(testbedCgroups(nsPrefix)); err != nil {
		errs = append(errs, fmt.Errorf("testbed: %w", err))
	}
	var linkCmds []string
	for _, l := range testbedLinks(name) {
		linkCmds = append(linkCmds, "link del "+l)
	}
	ipBatchForce(append(linkCmds, cmds...)...)
	dirs := []string{filepath.Join(StateDir, name)}
	if name == "" {
		dirs = nil
		ents, _ := os.ReadDir(StateDir)
		for _, e := range ents {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(StateDir, e.Name()))
			}
		}
	}
	for _, d := range dirs {
		if err := unmountUnder(d); err != nil {
			errs = append(errs, err)
		}
		os.RemoveAll(d)
	}
	if left := Leftovers(name); len(left) > 0 {
		errs = append(errs, fmt.Errorf("testbed: cannot remove %s", strings.Join(left, ", ")))
	}
	return errors.Join(errs...)
}

// testbedLinks lists the links of the cluster called name on the machine
// (its bridge, found by alias, and the bridge's veths), or every brb-* link
// if name is empty.
func testbedLinks(name string) []string {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return nil
	}
	var all, bridges []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		l, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if !strings.HasPrefix(l, "brb-") {
			continue
		}
		all = append(all, l)
		// ip -o joins the lines of a link with backslashes.
		for _, part := range strings.Split(line, "\\") {
			if name != "" && strings.TrimSpace(part) == "alias brine-testbed:"+name {
				bridges = append(bridges, l)
			}
		}
	}
	if name == "" {
		return all
	}
	var ours []string
	for _, l := range all {
		for _, b := range bridges {
			if l == b || strings.HasPrefix(l, b+"-") {
				ours = append(ours, l)
			}
		}
	}
	return ours
}

func netnsNames() []string {
	ents, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// Leftovers lists what exists of the cluster called name (or of any testbed
// cluster, if name is empty) on the machine: processes, network namespaces,
// cgroups, links, mounts and records. After Close or Down it is empty.
func Leftovers(name string) []string {
	nsPrefix, mark := "brine-", markerPrefix
	if name != "" {
		nsPrefix, mark = "brine-"+name+"-", marker(name, "")
	}
	var out []string
	inos := map[uint64]bool{}
	for _, ns := range netnsNames() {
		if strings.HasPrefix(ns, nsPrefix) {
			out = append(out, "netns "+ns)
			inos[nsInode("/run/netns/"+ns)] = true
		}
	}
	for _, p := range scanProcs() {
		if (p.netIno != 0 && inos[p.netIno]) || strings.Contains(p.cmdline, mark) {
			if procStart(p.pid) != 0 {
				out = append(out, fmt.Sprintf("process %d %s", p.pid, p.cmdline))
			}
		}
	}
	for _, l := range testbedLinks(name) {
		out = append(out, "link "+l)
	}
	for _, cg := range testbedCgroups(nsPrefix) {
		out = append(out, "cgroup "+cg)
	}
	if name != "" {
		if _, err := os.Stat(statePath(name)); err == nil {
			out = append(out, "record "+statePath(name))
		}
	}
	dir := StateDir
	if name != "" {
		dir = filepath.Join(StateDir, name)
	}
	for _, mp := range mountsUnder(dir) {
		out = append(out, "mount "+mp)
	}
	if name != "" {
		if _, err := os.Stat(dir); err == nil {
			out = append(out, "dir "+dir)
		}
	}
	return out
}
