package master

import (
	"errors"
	"fmt"
	"time"

	"github.com/brinecm/brine/internal/wire"
)

// runSpec makes spec a run job of command: the command runs for at most the job's timeout
// (default: the master's job_timeout), and the job expires a little after it so that the
// minion's kill and return fit in.
func runSpec(spec JobSpec, command string, def time.Duration) (JobSpec, error) {
	if command == "" {
		return spec, errors.New("run: no command")
	}
	if len(command) > wire.MaxRunCommand {
		return spec, fmt.Errorf("run: the command is %d bytes; at most %d", len(command), wire.MaxRunCommand)
	}
	if spec.Timeout <= 0 {
		spec.Timeout = def
	}
	spec.Kind = wire.JobRun
	spec.Run = &wire.RunSpec{Command: command, Timeout: spec.Timeout}
	spec.Timeout += 10 * time.Second
	return spec, nil
}
