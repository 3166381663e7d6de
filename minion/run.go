package minion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/brinecm/brine/internal/wire"
)

// runJob runs the shell command of a JobRun job: /bin/sh -c, in its own process group, stdin
// from /dev/null, killed with the whole group when its timeout (or the job's expiry) passes.
// The return holds the exit status and the first wire.MaxRunOutput bytes of stdout and stderr,
// with the number of bytes dropped.
func (e *executor) runJob(ctx context.Context, j job, ret wire.Return) wire.Return {
	spec := j.meta.Run
	if spec == nil || spec.Command == "" || len(spec.Command) > wire.MaxRunCommand {
		ret.Error = "a run job without a valid command"
		ret.Finished = time.Now().UTC()
		return ret
	}
	deadline := j.meta.ExpiresAt
	if d := time.Now().Add(spec.Timeout); spec.Timeout > 0 && d.Before(deadline) {
		deadline = d
	}
	runCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	rep := runCommand(runCtx, spec.Command)
	ret.Report, _ = json.Marshal(rep)
	ret.Success = rep.ExitCode == 0 && !rep.TimedOut
	switch {
	case rep.TimedOut:
		ret.Error = fmt.Sprintf("timed out after %s; the command was killed", rep.Duration.Round(time.Millisecond))
	case rep.ExitCode != 0:
		ret.Error = fmt.Sprintf("exit status %d", rep.ExitCode)
	}
	e.log.Info("ran a command", "jid", j.meta.JID, "exit", rep.ExitCode, "timed_out", rep.TimedOut, "duration", rep.Duration)
	ret.Finished = time.Now().UTC()
	return ret
}

func runCommand(ctx context.Context, command string) wire.RunReport {
	start := time.Now()
	stdout := &capped{max: wire.MaxRunOutput}
	stderr := &capped{max: wire.MaxRunOutput}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A child that keeps the pipes open after the shell is gone does not hold the job.
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what the command left behind
	}
	rep := wire.RunReport{ExitCode: 0, Stdout: string(stdout.buf), Stderr: string(stderr.buf),
		StdoutTruncated: stdout.dropped, StderrTruncated: stderr.dropped, Duration: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		rep.TimedOut, rep.ExitCode = true, -1
	case errors.As(err, &ee):
		rep.ExitCode = ee.ExitCode()
	case err != nil && !errors.Is(err, exec.ErrWaitDelay):
		rep.ExitCode = -1
		rep.Stderr += "brine: " + err.Error() + "\n"
	}
	return rep
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	max     int
	buf     []byte
	dropped int64
}

func (c *capped) Write(p []byte) (int, error) {
	keep := min(len(p), c.max-len(c.buf))
	c.buf = append(c.buf, p[:keep]...)
	c.dropped += int64(len(p) - keep)
	return len(p), nil
}
