package tinc

import (
	"testing"

	"github.com/brinecm/brine/testbed"
)

// TestMain removes the brine binary built for the testbed tests once they are all done.
func TestMain(m *testing.M) { testbed.Main(m) }
