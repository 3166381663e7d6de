package states

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
)

// This file holds the process plumbing shared by exec and service: running a shell command in its
// own process group with a deadline, and telling whether a pid is a live process.

// shellCmd describes one /bin/sh -c run.
type shellCmd struct {
	Script  string
	Env     map[string]string // added to (and overriding) brine's own environment
	Dir     string            // working directory; "" means /
	Timeout time.Duration     // 0: no limit besides ctx
}

// shellResult is how a shellCmd ended. Output is the tail of stdout and stderr interleaved.
type shellResult struct {
	Exit     int // -1 when killed by a signal or never waited for
	Output   string
	TimedOut bool
}

// outputTail is how much of a command's output is kept for errors and reports.
const outputTail = 4096

// runShell runs sc.Script with /bin/sh -c in a new process group. On timeout or ctx cancellation
// the whole group is killed with SIGKILL, so that children the script started die with it.
// Output goes to an unlinked temporary file rather than a pipe: a script that leaves a daemon
// running in the background must not keep us waiting for that daemon to close our pipe.
// The error is non-nil only when the command could not be run or was killed; a non-zero exit is
// reported in Exit.
func runShell(ctx context.Context, sc shellCmd) (shellResult, error) {
	res := shellResult{Exit: -1}
	out, err := os.CreateTemp("", "brine-exec-*.out")
	if err != nil {
		return res, fmt.Errorf("output file: %w", err)
	}
	os.Remove(out.Name())
	defer out.Close()

	dir := sc.Dir
	if dir == "" {
		dir = "/"
	}
	cmd := exec.Command("/bin/sh", "-c", sc.Script)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = mergeEnv(os.Environ(), sc.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var timeout <-chan time.Time
	if sc.Timeout > 0 {
		t := time.NewTimer(sc.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var waitErr error
	select {
	case waitErr = <-done:
	case <-timeout:
		res.TimedOut = true
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
		res.Output = readTail(out)
		return res, fmt.Errorf("timed out after %s; killed its process group", sc.Timeout)
	case <-ctx.Done():
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
		res.Output = readTail(out)
		return res, ctx.Err()
	}
	res.Output = readTail(out)
	var ee *exec.ExitError
	switch {
	case waitErr == nil:
		res.Exit = 0
	case errors.As(waitErr, &ee):
		res.Exit = ee.ExitCode() // -1 when a signal killed it
		if res.Exit < 0 {
			return res, fmt.Errorf("killed by %s", waitErr)
		}
	default:
		return res, waitErr
	}
	return res, nil
}

// mergeEnv returns base with the variables of extra set (replacing any of the same name).
func mergeEnv(base []string, extra map[string]string) []string {
	if len(extra) == 0 {
		return base
	}
	out := make([]string, 0, len(base)+len(extra))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, over := extra[k]; !over {
			out = append(out, kv)
		}
	}
	for k, v := range extra {
		out = append(out, k+"="+v)
	}
	return out
}

// readTail returns the last outputTail bytes written to f, trimmed.
func readTail(f *os.File) string {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return ""
	}
	start := max(end-outputTail, 0)
	buf := make([]byte, end-start)
	n, _ := f.ReadAt(buf, start)
	s := string(bytes.TrimSpace(buf[:n]))
	if start > 0 {
		s = "..." + s
	}
	return s
}

// procInfo is what /proc says about a pid.
type procInfo struct {
	Cmdline []string
	State   byte // R, S, D, Z, ...
	Pgid    int
}

// readProc reads /proc/PID; ok is false when there is no such process or it is a zombie (a dead
// process its parent has not reaped yet is not running, whatever kill(pid, 0) says).
func readProc(pid int) (procInfo, bool) {
	var pi procInfo
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

// waitGone polls until pid is no longer a live process or the deadline passes.
func waitGone(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if _, ok := readProc(pid); !ok {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shellQuote quotes s for a POSIX shell as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
