package testbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Host is one host of a cluster.
type Host struct {
	c  *Cluster
	st hostState // set before the host is shared; InitPID and friends by boot

	mu      sync.Mutex // guards daemons
	daemons []*Daemon
}

// holderScript runs in the host's fresh network, mount, UTS, IPC and PID
// namespaces as its PID 1. It mounts the overlay root and the host's own
// /proc, /sys, /dev, /run and /tmp, configures the network, pivots into the
// new root (dropping every mount of the machine, so the host holds no
// references to other clusters), reports "ready <pid>" on fd 3 and becomes
// an init that only reaps orphans.
//
// With CG set (unified, hybrid or legacy: how the machine mounts cgroups),
// the host is a systemd host: it also has its own cgroup namespace, rooted
// at the host's cgroup, whose hierarchies it mounts where systemd looks for
// them; /sys and /proc/sys are read-only but for the host's own network
// settings, as in a container; the machine's enabled units are disabled
// (their links whited out), and systemd replaces the holder as PID 1.
const holderScript = `set -eu
M=$1 U=$2 W=$3 NAME=$4 ADDR=$5 GW=$6 SHARED=$7 APT=$8 CG=$9
# Our pid as the machine sees it: the machine's /proc is still mounted here.
read -r PID _ < /proc/self/stat
ip link set lo up
ip addr add "$ADDR/24" dev eth0
ip link set eth0 up
ip route add default via "$GW"
hostname "$NAME"
mount -t overlay brine-root -o "lowerdir=/,upperdir=$U,workdir=$W" "$M"
mount -t proc proc "$M/proc"
if [ -z "$CG" ]; then
  mount -t sysfs sysfs "$M/sys"
else
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$M/sys"
  if [ "$CG" = unified ]; then
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$M/sys/fs/cgroup"
  else
    mount -t tmpfs -o mode=755,nosuid,nodev,noexec brine-cgroup "$M/sys/fs/cgroup"
    mkdir "$M/sys/fs/cgroup/systemd"
    mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup "$M/sys/fs/cgroup/systemd"
    if [ "$CG" = hybrid ]; then
      mkdir "$M/sys/fs/cgroup/unified"
      mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$M/sys/fs/cgroup/unified"
    fi
    mount -o remount,ro,bind "$M/sys/fs/cgroup"
  fi
  mount --bind "$M/proc/sys" "$M/proc/sys"
  mount --bind "$M/proc/sys/net" "$M/proc/sys/net"
  mount -o remount,ro,bind "$M/proc/sys"
  for f in "$M"/etc/systemd/system/*.wants/* "$M"/etc/systemd/system/*.requires/*; do
    if [ -L "$f" ]; then rm -f "$f"; fi
  done
fi
mount -t tmpfs -o mode=755,size=16m,nosuid brine-dev "$M/dev"
mkdir "$M/dev/net" "$M/dev/pts" "$M/dev/shm"
mknod -m 666 "$M/dev/null" c 1 3
mknod -m 666 "$M/dev/zero" c 1 5
mknod -m 666 "$M/dev/full" c 1 7
mknod -m 666 "$M/dev/random" c 1 8
mknod -m 666 "$M/dev/urandom" c 1 9
mknod -m 666 "$M/dev/tty" c 5 0
mknod -m 666 "$M/dev/net/tun" c 10 200
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$M/dev/pts"
ln -s pts/ptmx "$M/dev/ptmx"
ln -s /proc/self/fd "$M/dev/fd"
ln -s /proc/self/fd/0 "$M/dev/stdin"
ln -s /proc/self/fd/1 "$M/dev/stdout"
ln -s /proc/self/fd/2 "$M/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev brine-shm "$M/dev/shm"
mount -t tmpfs -o mode=755,nosuid,nodev brine-run "$M/run"
mkdir -m 1777 "$M/run/lock"
mount -t tmpfs -o mode=1777,nosuid,nodev brine-tmp "$M/tmp"
mkdir -p "$M/srv/brine" "$M/srv/brine-apt"
mount --bind "$SHARED" "$M/srv/brine"
mount --bind -o ro "$APT" "$M/srv/brine-apt"
# The machine's apt sources would send apt to the network.
rm -f "$M"/etc/apt/sources.list.d/*
cd "$M"
pivot_root . .
umount -l .
cd /
echo "ready $PID" >&3
exec 3>&- </dev/null
if [ -n "$CG" ]; then
  exec env -i container=brine-testbed PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --system --show-status=no
fi
exec >/dev/null 2>&1
exec /bin/sh -c 'trap "" INT TERM HUP; while :; do sleep 2147483647 & wait; done' "$0"
`

func (h *Host) dir() string { return filepath.Join(h.c.st.Dir, "hosts", h.st.Name) }

// boot prepares the host's upper layer and starts its PID 1.
func (h *Host) boot(ctx context.Context) error {
	d := h.dir()
	upper, work, merged := filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "merged")
	for _, p := range []string{upper, work, merged, filepath.Join(upper, "etc/apt")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("testbed: host %s: %w", h.st.Name, err)
		}
	}
	// Files written into the upper layer before the overlay is mounted
	// simply shadow the machine's.
	files := map[string]string{
		"etc/hostname":         h.st.Name + "\n",
		"etc/hosts":            fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", h.st.Addr, h.st.Name),
		"etc/machine-id":       randHex(16) + "\n",
		"etc/apt/sources.list": "# brine testbed host: no network sources\n",
	}
	for p, content := range files {
		if err := os.WriteFile(filepath.Join(upper, p), []byte(content), 0o644); err != nil {
			return fmt.Errorf("testbed: host %s: %w", h.st.Name, err)
		}
	}
	var cgMode string
	var cgroups []string
	if h.st.Systemd {
		l, err := machineCgroups()
		if err != nil {
			return err
		}
		if err := prepareSystemdUpper(upper); err != nil {
			return fmt.Errorf("testbed: host %s: %w", h.st.Name, err)
		}
		// Recorded before it exists, so that teardown removes it whatever happens next.
		h.c.mu.Lock()
		for _, r := range l.roots {
			h.st.Cgroups = append(h.st.Cgroups, filepath.Join(r, h.st.Netns))
		}
		h.c.mu.Unlock()
		if cgroups, err = l.makeCgroups(h.st.Netns); err != nil {
			return err
		}
		cgMode = l.mode()
	}
	logf, err := os.OpenFile(filepath.Join(h.c.st.Dir, "logs", h.st.Name+"@init.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testbed: host %s: %w", h.st.Name, err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	unshare := []string{"unshare", "--mount", "--propagation", "private", "--uts", "--ipc", "--pid", "--fork"}
	if h.st.Systemd {
		unshare = append(unshare, "--cgroup")
	}
	args := append([]string{"nsenter", "--net=/run/netns/" + h.st.Netns}, unshare...)
	args = append(args, "--",
		"/bin/sh", "-c", holderScript, marker(h.c.st.Name, h.st.Name),
		merged, upper, work, h.st.Name, h.st.Addr, h.c.BridgeAddr(),
		h.c.SharedDir(), filepath.Join(h.c.st.Dir, "apt"), cgMode,
	)
	if len(cgroups) > 0 {
		// The holder joins the host's cgroups before unshare makes its
		// cgroup namespace, so that the namespace is rooted there.
		args = append([]string{"/bin/sh", "-c", joinCgroupsScript, marker(h.c.st.Name, h.st.Name), strconv.Itoa(len(cgroups))},
			append(cgroups, args...)...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	cmd.Env = hostEnv(h.st.Name)
	// Its own session: the host must not die with the terminal or with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("testbed: start host %s: %w", h.st.Name, err)
	}
	w.Close()
	// c.mu guards every host's state: a concurrent AddHost saves the record of all hosts.
	holderStart := procStart(cmd.Process.Pid)
	h.c.mu.Lock()
	h.st.HolderPID, h.st.HolderStart = cmd.Process.Pid, holderStart
	h.c.mu.Unlock()
	go cmd.Wait() // reap it if it exits while we live

	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		ch <- result{line, err}
	}()
	var res result
	select {
	case res = <-ch:
	case <-ctx.Done():
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("testbed: start host %s: %w", h.st.Name, ctx.Err())
	case <-time.After(30 * time.Second):
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("testbed: start host %s: not ready after 30s", h.st.Name)
	}
	pidStr, ok := strings.CutPrefix(strings.TrimSpace(res.line), "ready ")
	pid, perr := strconv.Atoi(pidStr)
	if !ok || perr != nil {
		time.Sleep(50 * time.Millisecond) // let the log catch up
		log, _ := os.ReadFile(filepath.Join(h.c.st.Dir, "logs", h.st.Name+"@init.log"))
		return fmt.Errorf("testbed: start host %s failed: %s", h.st.Name, trimOut(bytes.TrimSpace(log)))
	}
	initStart := procStart(pid)
	h.c.mu.Lock()
	h.st.InitPID, h.st.InitStart = pid, initStart
	h.c.mu.Unlock()
	if h.st.Systemd {
		return h.waitSystemd(ctx)
	}
	return nil
}

// joinCgroupsScript moves itself into the N cgroups named after N, then
// execs the rest of its arguments.
const joinCgroupsScript = `set -eu
n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs"; shift; n=$((n - 1)); done
exec "$@"
`

func hostEnv(name string) []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"LANG=C.UTF-8",
		"TERM=dumb",
		"DEBIAN_FRONTEND=noninteractive",
		"HOSTNAME=" + name,
	}
}

// Name returns the host's name (also its hostname).
func (h *Host) Name() string { return h.st.Name }

// Addr returns the host's address on the cluster bridge.
func (h *Host) Addr() string { return h.st.Addr }

// Netns returns the name of the host's network namespace (for `ip netns exec`).
func (h *Host) Netns() string { return h.st.Netns }

// Root returns a path on the machine through which the host's root file
// system can be read and written while it runs (it goes through the
// overlay, like the host's own processes).
func (h *Host) Root() string { return fmt.Sprintf("/proc/%d/root", h.st.InitPID) }

// InitPID returns the machine's pid of the host's PID 1.
func (h *Host) InitPID() int { return h.st.InitPID }

// Alive reports whether the host's PID 1 still runs.
func (h *Host) Alive() bool { return alive(h.st.InitPID, h.st.InitStart) }

// PowerOff pulls the host's plug: it kills the host's PID 1, which takes every process of the
// host (its PID namespace) with it, and waits until it is gone. The host's network namespace,
// link and files stay until the cluster is closed; Alive reports false from then on.
func (h *Host) PowerOff() error {
	pid, start := h.st.InitPID, h.st.InitStart
	if !alive(pid, start) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("testbed: power off %s: %w", h.st.Name, err)
	}
	for deadline := time.Now().Add(10 * time.Second); alive(pid, start); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("testbed: power off %s: its PID 1 (%d) is still there after 10s", h.st.Name, pid)
		}
	}
	return nil
}

// Command returns a command that runs argv inside the host (its
// namespaces and root, cwd /, a clean environment) for the caller to wire
// and start, e.g. to a terminal. Cancelling ctx kills only the nsenter
// process; prefer Run for anything that must not outlive ctx.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := []string{"-t", strconv.Itoa(h.st.InitPID), "-m", "-u", "-i", "-n", "-p", "-r", "-w"}
	if h.st.Systemd {
		args = append(args, "-C")
	}
	args = append(append(args, "--"), argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = hostEnv(h.st.Name)
	return cmd
}

// command is Command in its own process group, so that cancelling ctx
// kills the process inside the host too.
func (h *Host) command(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := h.Command(ctx, argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run runs argv inside the host and returns its output and exit status (128+n
// if killed by signal n). err is set only if the command could not run: the
// host is gone, or ctx ended first.
func (h *Host) Run(ctx context.Context, argv ...string) (stdout, stderr string, exit int, err error) {
	if len(argv) == 0 {
		return "", "", -1, errors.New("testbed: Run: empty command")
	}
	if !h.Alive() {
		return "", "", -1, fmt.Errorf("testbed: host %s is not running", h.st.Name)
	}
	var o, e bytes.Buffer
	cmd := h.command(ctx, argv...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	exit, err = exitStatus(err)
	if ctx.Err() != nil {
		return o.String(), e.String(), exit, fmt.Errorf("testbed: run %q in %s: %w", argv[0], h.st.Name, ctx.Err())
	}
	if err != nil {
		return o.String(), e.String(), exit, fmt.Errorf("testbed: run %q in %s: %w", argv[0], h.st.Name, err)
	}
	return o.String(), e.String(), exit, nil
}

// Sh runs script with /bin/sh -c inside the host and returns its combined
// output and exit status, like Run.
func (h *Host) Sh(ctx context.Context, script string) (out string, exit int, err error) {
	if !h.Alive() {
		return "", -1, fmt.Errorf("testbed: host %s is not running", h.st.Name)
	}
	var b bytes.Buffer
	cmd := h.command(ctx, "/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = &b, &b
	exit, err = exitStatus(cmd.Run())
	if ctx.Err() != nil {
		return b.String(), exit, fmt.Errorf("testbed: sh in %s: %w", h.st.Name, ctx.Err())
	}
	if err != nil {
		return b.String(), exit, fmt.Errorf("testbed: sh in %s: %w", h.st.Name, err)
	}
	return b.String(), exit, nil
}

// exitStatus turns a Wait error into an exit status, keeping the error
// only if the process did not run to an exit.
func exitStatus(err error) (int, error) {
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return -1, err
}
