package states

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes what tests share across the package once they are all done: the brine
// binary built for the testbed tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if pkgBrine.path != "" {
		os.RemoveAll(filepath.Dir(pkgBrine.path))
	}
	os.Exit(code)
}
