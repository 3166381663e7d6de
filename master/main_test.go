package master_test

import (
	"os"
	"testing"

	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/testbed"
)

// TestMain removes the brine binary built for the testbed tests and stops the private
// PostgreSQL cluster the multi-master tests start (pgtest.Shared) once they are all done.
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	testbed.Cleanup()
	os.Exit(code)
}
