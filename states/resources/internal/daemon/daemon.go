// Package daemon is the one place the resource types handle daemons (service, tinc_network):
// systemd units through systemctl where PID 1 is systemd, and elsewhere processes found by their
// pidfile, checked against /proc so that a recycled pid does not count as the daemon running.
package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/brinecm/brine/internal/safepath"
	"golang.org/x/sys/unix"
)

// SystemdDir exists when PID 1 is systemd. A variable so that tests on a systemd machine can
// take the pidfile path.
var SystemdDir = "/run/systemd/system"

// Systemd reports whether this host runs systemd.
func Systemd() bool {
	st, err := os.Stat(SystemdDir)
	return err == nil && st.IsDir()
}

// Systemctl runs `systemctl ARGS...`; the error holds what systemctl said.
func Systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// UnitActive reports whether unit is active (`systemctl is-active`).
func UnitActive(unit string) bool {
	return exec.Command("systemctl", "is-active", "--quiet", "--", unit).Run() == nil
}

// UnitEnabled reports whether unit is enabled (`systemctl is-enabled`).
func UnitEnabled(unit string) bool {
	return exec.Command("systemctl", "is-enabled", "--quiet", "--", unit).Run() == nil
}

// ProcInfo is what /proc says about a pid.
type ProcInfo struct {
	Cmdline []string
	State   byte // R, S, D, Z, ...
	Pgid    int
}

// ReadProc reads /proc/PID; ok is false when there is no such process or it is a zombie (a dead
// process its parent has not reaped yet is not running, whatever kill(pid, 0) says).
func ReadProc(pid int) (ProcInfo, bool) {
	var pi ProcInfo
	if pid <= 0 {
		return pi, false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return pi, false
	}
	// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses, so cut at the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return pi, false
	}
	f := strings.Fields(string(stat[i+2:]))
	if len(f) < 3 {
		return pi, false
	}
	pi.State = f[0][0]
	pi.Pgid, _ = strconv.Atoi(f[2])
	if pi.State == 'Z' || pi.State == 'X' {
		return pi, false
	}
	cl, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return pi, false
	}
	for _, a := range bytes.Split(bytes.TrimRight(cl, "\x00"), []byte{0}) {
		pi.Cmdline = append(pi.Cmdline, string(a))
	}
	return pi, true
}

// pidfileMax is how much of a pidfile is read: a pid and then some.
const pidfileMax = 64

// ReadPidfile returns the pid a pidfile names (its first word). The pidfile is reached through
// safepath (a link a user could have placed is not followed), opened without blocking and read
// only when it is a regular file, and only its first 64 bytes: a FIFO, a device or a huge file
// put there does not hang or bloat the minion; it is no pidfile.
func ReadPidfile(path string) (int, bool) {
	file, err := safepath.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return 0, false
	}
	defer file.Close()
	if st, err := file.Stat(); err != nil || !st.Mode().IsRegular() {
		return 0, false
	}
	data, err := io.ReadAll(io.LimitReader(file, pidfileMax))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, true
}

// Live returns the pid pidfile names when that process is alive and its command line is the
// daemon's (match); the pid is returned, with false, also when the process is not the daemon.
func Live(pidfile string, match func(cmdline []string) bool) (int, bool) {
	pid, ok := ReadPidfile(pidfile)
	if !ok {
		return 0, false
	}
	pi, ok := ReadProc(pid)
	if !ok || !match(pi.Cmdline) {
		return pid, false
	}
	return pid, true
}

// Await polls until up reports true (true), or timeout passes or ctx ends (false).
func Await(ctx context.Context, timeout time.Duration, up func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if up() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitGone polls until pid is no longer a live process (true) or the deadline passes.
func WaitGone(ctx context.Context, pid int, d time.Duration) bool {
	return Await(ctx, d, func() bool {
		_, ok := ReadProc(pid)
		return !ok
	})
}

// Stop sends SIGTERM to the daemon pid (to its process group when it leads one), waits up to wait
// for it to end, then sends SIGKILL and waits 5 seconds more. It reports a process that survives.
func Stop(ctx context.Context, what string, pid int, wait time.Duration) error {
	target := pid
	if pi, ok := ReadProc(pid); ok && pi.Pgid == pid {
		target = -pid
	}
	if err := syscall.Kill(target, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s: %w", what, err)
	}
	if !WaitGone(ctx, pid, wait) {
		syscall.Kill(target, syscall.SIGKILL)
		if !WaitGone(ctx, pid, 5*time.Second) {
			return fmt.Errorf("stop %s: pid %d survived SIGKILL", what, pid)
		}
	}
	return nil
}

// TailLines is the last k lines of s, joined with "; ": a log's end in one error line.
func TailLines(s string, k int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > k {
		l = l[len(l)-k:]
	}
	return strings.Join(l, "; ")
}
