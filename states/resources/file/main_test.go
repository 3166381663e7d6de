package file

import (
	"testing"

	"github.com/brinecm/brine/testbed"
)

// TestMain removes the brine binary built for the crash test once the tests are done.
func TestMain(m *testing.M) { testbed.Main(m) }
