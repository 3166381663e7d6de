// Package shell runs the shell commands of resources (exec's command and guards, a service's
// start command) in their own process group with a deadline, and quotes words for scripts brine
// writes.
package shell

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Cmd describes one /bin/sh -c run.
type Cmd struct {
	Script  string
	Env     map[string]string // added to (and overriding) brine's own environment
	Dir     string            // working directory; "" means /
	Timeout time.Duration     // 0: no limit besides ctx
}

// Result is how a Cmd ended. Output is the tail of stdout and stderr interleaved.
type Result struct {
	Exit     int // -1 when killed by a signal or never waited for
	Output   string
	TimedOut bool
}

// OutputTail is how much of a command's output is kept for errors and reports.
const OutputTail = 4096

// Run runs sc.Script with /bin/sh -c in a new process group. On timeout or ctx cancellation
// the whole group is killed with SIGKILL, so that children the script started die with it.
// Output goes to an unlinked temporary file rather than a pipe: a script that leaves a daemon
// running in the background must not keep us waiting for that daemon to close our pipe.
// The error is non-nil only when the command could not be run or was killed; a non-zero exit is
// reported in Exit.
func Run(ctx context.Context, sc Cmd) (Result, error) {
	res := Result{Exit: -1}
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
	cmd.Env = MergeEnv(os.Environ(), sc.Env)
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
		res.Output = ReadTail(out)
		return res, fmt.Errorf("timed out after %s; killed its process group", sc.Timeout)
	case <-ctx.Done():
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
		res.Output = ReadTail(out)
		return res, ctx.Err()
	}
	res.Output = ReadTail(out)
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

// MergeEnv returns base with the variables of extra set (replacing any of the same name).
func MergeEnv(base []string, extra map[string]string) []string {
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

// ReadTail returns the last OutputTail bytes written to f, trimmed.
func ReadTail(f *os.File) string {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return ""
	}
	start := max(end-OutputTail, 0)
	buf := make([]byte, end-start)
	n, _ := f.ReadAt(buf, start)
	s := string(bytes.TrimSpace(buf[:n]))
	if start > 0 {
		s = "..." + s
	}
	return s
}

// Quote quotes s for a POSIX shell as one word.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// OutputSuffix is ":\n" and out, for an error that ends with a command's output, or "" when
// there is none.
func OutputSuffix(out string) string {
	if out == "" {
		return ""
	}
	return ":\n" + out
}
