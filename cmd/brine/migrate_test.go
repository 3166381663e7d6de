package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/testbed"
)

// The migration runbook (examples/migrate/run.sh), run as written with this package's binary:
// three legacy servers enrolled over SSH, captured (0 to change on them), cloned through the
// cloud simulator, converged from the capture (0 to change after), serving the same content,
// and DNS cut over and back.
func TestMigrateRunbook(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	if err := testbed.SystemdAvailable(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../examples/migrate/run.sh")
	cmd.Env = append(os.Environ(), "BRINE="+brineBin, "NO_COLOR=1")
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	s := string(out)
	if err != nil || !strings.HasSuffix(s, "migration runbook: done\n") || strings.Count(s, "serve the same content") != 3 ||
		strings.Count(s, " 0 to change, 0 failed") != 6 || !strings.Contains(s, "3 enrolled, 0 failed") {
		t.Fatalf("run.sh: %v\n%s", err, s)
	}
}
