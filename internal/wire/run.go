package wire

import "time"

// JobRun is a job that runs a shell command on each minion (`brine run`). Like every job it is
// signed by the master and published only for an operator's command on the control socket.
const JobRun = "run"

// Bounds of a run job.
const (
	MaxRunCommand = 64 << 10 // bytes of the command line
	MaxRunOutput  = 64 << 10 // bytes of stdout and of stderr kept in a return; the rest is counted
)

// RunSpec is the command of a JobRun job: /bin/sh -c Command, killed (its whole process group)
// after Timeout.
type RunSpec struct {
	Command string        `json:"command"`
	Timeout time.Duration `json:"timeout"`
}

// RunReport is what a minion returns for a JobRun job, in Return.Report. Stdout and Stderr hold
// at most MaxRunOutput bytes each; the Truncated counts say how many more were dropped.
type RunReport struct {
	ExitCode        int           `json:"exit_code"` // -1 when the command did not exit by itself
	TimedOut        bool          `json:"timed_out,omitempty"`
	Stdout          string        `json:"stdout"`
	Stderr          string        `json:"stderr"`
	StdoutTruncated int64         `json:"stdout_truncated,omitempty"`
	StderrTruncated int64         `json:"stderr_truncated,omitempty"`
	Duration        time.Duration `json:"duration_ns"`
}
