package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SystemdBootTimeout bounds how long a systemd host may take to reach
// `systemctl is-system-running` = running or degraded.
var SystemdBootTimeout = 90 * time.Second

// systemdBinary is the init a systemd host boots.
const systemdBinary = "/lib/systemd/systemd"

// cgroupPrefix starts the name of every cgroup the testbed makes on the
// machine: brine-<cluster>-<host>, as the host's network namespace.
const cgroupPrefix = "brine-"

// maskedUnits are units a systemd host never starts, masked in its upper
// layer: they reach past the host's namespaces to the machine (its clock,
// kernel modules, devices, file systems, consoles), or serve no purpose in a
// host that has no terminals. Masking a unit the machine lacks is harmless.
var maskedUnits = []string{
	// Consoles: a host has no ttys.
	"getty@.service", "serial-getty@.service", "console-getty.service", "container-getty@.service",
	"getty-static.service",
	// The machine's kernel, clock and devices.
	"systemd-modules-load.service", "modprobe@.service", "kmod-static-nodes.service",
	"systemd-timesyncd.service", "systemd-pstore.service", "systemd-random-seed.service",
	"systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
	"systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-hwdb-update.service",
	"systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "systemd-firstboot.service",
	// The machine's file systems and block devices.
	"systemd-remount-fs.service", "e2scrub_reap.service", "e2scrub_all.service", "e2scrub_all.timer",
	"fstrim.service", "fstrim.timer", "systemd-fsck-root.service", "lvm2-monitor.service",
	"sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
	"sys-fs-fuse-connections.mount", "dev-hugepages.mount",
	// Desktop-minded daemons dbus would activate when apt runs (the machine's apt hook pokes
	// PackageKit, which brings polkitd): a server needs neither, and each holds inotify
	// instances, a machine-wide budget (see raiseInotifyInstances).
	"packagekit.service", "packagekit-offline-update.service", "polkit.service",
}

// minInotifyInstances is what raiseInotifyInstances lifts fs.inotify.max_user_instances to. A
// systemd host takes about 6 inotify instances of the machine's root user (systemd itself,
// dbus, logind, ...); the kernel's default of 128 is spent by some 20 hosts, after which
// systemd in a new host cannot watch its units and the host fails to boot.
const minInotifyInstances = 8192

// raiseInotifyInstances lifts the machine's fs.inotify.max_user_instances to
// minInotifyInstances if it is lower, as container hosts do; it never lowers it.
func raiseInotifyInstances() error {
	const p = "/proc/sys/fs/inotify/max_user_instances"
	b, err := os.ReadFile(p)
	if err != nil {
		return nil // no such knob: nothing to raise
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= minInotifyInstances {
		return nil
	}
	if err := os.WriteFile(p, []byte(strconv.Itoa(minInotifyInstances)+"\n"), 0o644); err != nil {
		return fmt.Errorf("testbed: systemd hosts need more inotify instances than the machine allows (%s): %w", p, err)
	}
	return nil
}

// prepareSystemdUpper writes what a systemd host's upper layer starts with,
// on top of what every host gets: the masks, and an empty fstab (the
// machine's names devices the host does not have).
func prepareSystemdUpper(upper string) error {
	dir := filepath.Join(upper, "etc/systemd/system")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, u := range maskedUnits {
		if err := os.Symlink("/dev/null", filepath.Join(dir, u)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(upper, "etc/fstab"), []byte("# brine testbed host: no file systems to mount\n"), 0o644)
}

// cgroupLayout is how the machine mounts its cgroup hierarchies, as far as a
// systemd host cares.
type cgroupLayout struct {
	// unified: /sys/fs/cgroup is cgroup2 and nothing else.
	unified bool
	// roots are the machine's hierarchies a host gets a cgroup in:
	// /sys/fs/cgroup (unified), or /sys/fs/cgroup/systemd (name=systemd)
	// and, if mounted, /sys/fs/cgroup/unified (hybrid).
	roots []string
}

var (
	layoutOnce sync.Once
	layout     cgroupLayout
	layoutErr  error
)

// SystemdAvailable reports why this machine cannot boot systemd hosts, or
// nil if it can: testbed hosts must be possible (Available), systemd must
// be installed, and the machine's cgroups mounted unified (cgroup2 at
// /sys/fs/cgroup) or hybrid (name=systemd at /sys/fs/cgroup/systemd).
func SystemdAvailable() error {
	if err := Available(); err != nil {
		return err
	}
	if _, err := os.Stat(systemdBinary); err != nil {
		return fmt.Errorf("testbed: systemd hosts need %s (the systemd package)", systemdBinary)
	}
	_, err := machineCgroups()
	return err
}

func machineCgroups() (cgroupLayout, error) {
	layoutOnce.Do(func() { layout, layoutErr = readCgroupLayout() })
	return layout, layoutErr
}

func readCgroupLayout() (cgroupLayout, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return cgroupLayout{}, fmt.Errorf("testbed: %w", err)
	}
	defer f.Close()
	// mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
	types := map[string]string{}
	super := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, pf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(pf) < 3 {
			continue
		}
		mp := unescapeMount(fields[4])
		types[mp], super[mp] = pf[0], pf[2]
	}
	switch {
	case types["/sys/fs/cgroup"] == "cgroup2":
		return cgroupLayout{unified: true, roots: []string{"/sys/fs/cgroup"}}, nil
	case types["/sys/fs/cgroup/systemd"] == "cgroup" && strings.Contains(","+super["/sys/fs/cgroup/systemd"]+",", ",name=systemd,"):
		l := cgroupLayout{roots: []string{"/sys/fs/cgroup/systemd"}}
		if types["/sys/fs/cgroup/unified"] == "cgroup2" {
			l.roots = append(l.roots, "/sys/fs/cgroup/unified")
		}
		return l, nil
	}
	return cgroupLayout{}, errors.New("testbed: systemd hosts need the machine's cgroups at /sys/fs/cgroup: cgroup2 there, or a name=systemd hierarchy at /sys/fs/cgroup/systemd")
}

// cgroupMode is the holder script's argument saying which cgroup file
// systems to mount in the host: "unified", "hybrid" (name=systemd, and
// cgroup2 below it at unified/), or "legacy" (name=systemd alone).
func (l cgroupLayout) mode() string {
	switch {
	case l.unified:
		return "unified"
	case len(l.roots) > 1:
		return "hybrid"
	}
	return "legacy"
}

// makeCgroups makes the host's cgroup, called name, in every hierarchy of
// the layout and returns their paths.
func (l cgroupLayout) makeCgroups(name string) ([]string, error) {
	var dirs []string
	for _, r := range l.roots {
		d := filepath.Join(r, name)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			removeCgroups(dirs)
			return nil, fmt.Errorf("testbed: make cgroup %s: %w", d, err)
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}

// removeCgroups removes the cgroups dirs and every cgroup below them,
// deepest first. Their processes must be dead; a cgroup stays busy for a
// moment after its last process died, so it retries for up to 5 s.
func removeCgroups(dirs []string) error {
	var errs []error
	deadline := time.Now().Add(5 * time.Second)
	for _, d := range dirs {
		if !strings.HasPrefix(filepath.Base(d), cgroupPrefix) || !strings.HasPrefix(d, "/sys/fs/cgroup/") {
			errs = append(errs, fmt.Errorf("refusing to remove cgroup %s: not a testbed cgroup", d))
			continue
		}
		for {
			killCgroup(d)
			err := rmdirTree(d)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// killCgroup SIGKILLs every process in the cgroup d and below: a host's
// processes are normally gone with its PID 1 already, this is for those
// that escaped its namespaces.
func killCgroup(d string) {
	filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return nil
	})
}

// rmdirTree removes the directory tree of a cgroup with rmdir alone (the
// files of a cgroup cannot be unlinked; rmdir of an empty cgroup removes
// them).
func rmdirTree(d string) error {
	ents, err := os.ReadDir(d)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := rmdirTree(filepath.Join(d, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
		return err
	}
	return nil
}

// testbedCgroups lists the machine's testbed cgroups whose name starts with
// prefix (brine-<cluster>- for a cluster, brine- for all), in every
// hierarchy mounted under /sys/fs/cgroup.
func testbedCgroups(prefix string) []string {
	var out []string
	for _, pat := range []string{"/sys/fs/cgroup/" + prefix + "*", "/sys/fs/cgroup/*/" + prefix + "*"} {
		m, _ := filepath.Glob(pat)
		for _, d := range m {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				out = append(out, d)
			}
		}
	}
	return out
}

// waitSystemd waits until the host's systemd has finished booting, up to
// SystemdBootTimeout, and records the units that failed. A host that ends
// up "degraded" is up; any other end state is an error that names the
// failed units.
func (h *Host) waitSystemd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, SystemdBootTimeout)
	defer cancel()
	var state string
	for {
		// --wait blocks until the boot is over; before systemd listens on its
		// socket it fails at once, and we try again.
		out, _, _, err := h.Run(ctx, "systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		if err != nil || ctx.Err() != nil || !h.Alive() {
			failed := h.failedUnits()
			return fmt.Errorf("testbed: host %s: systemd not up after %s (state %q)%s", h.st.Name, SystemdBootTimeout, state, failedSuffix(failed))
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if state == "degraded" {
		failed := h.failedUnits()
		h.c.mu.Lock()
		h.st.FailedUnits = failed
		h.c.mu.Unlock()
	}
	return nil
}

func failedSuffix(units []string) string {
	if len(units) == 0 {
		return ""
	}
	return "; failed units: " + strings.Join(units, ", ")
}

// failedUnits lists the host's failed units with their result, e.g.
// "foo.service (exit-code)".
func (h *Host) failedUnits() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _, _, err := h.Run(ctx, "systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager", "--full")
	if err != nil {
		return nil
	}
	var units []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		u := f[0]
		res, _, _, _ := h.Run(ctx, "systemctl", "show", "--property=Result", "--value", "--", u)
		if r := strings.TrimSpace(res); r != "" {
			u += " (" + r + ")"
		}
		units = append(units, u)
	}
	return units
}

// Systemd reports whether the host runs systemd as its PID 1.
func (h *Host) Systemd() bool { return h.st.Systemd }

// FailedUnits returns the units that had failed when a systemd host
// finished booting "degraded" (with why each failed), or nil.
func (h *Host) FailedUnits() []string {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	return append([]string(nil), h.st.FailedUnits...)
}
