package master_test

import (
	"os"
	"testing"

	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/testbed"
)

// TestMain runs the attacker process of the flood tests when asked to (floodEnv), and
// otherwise the tests. It removes the brine binary built for the testbed tests and stops the private
// PostgreSQL cluster the multi-master tests start (pgtest.Shared) once they are all done.
func TestMain(m *testing.M) {
	if spec := os.Getenv(floodEnv); spec != "" {
		os.Exit(floodChild(spec)) // this process is a test's attacker (floods_test.go)
	}
	code := m.Run()
	pgtest.Stop()
	testbed.Cleanup()
	os.Exit(code)
}
