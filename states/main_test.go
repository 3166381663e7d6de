package states

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// wantCompileError compiles src as a bundle's main.hcl and fails t unless that is an error whose
// subject, summary or detail contains want.
func wantCompileError(t *testing.T, src, want string) {
	t.Helper()
	_, diags := Compile(&Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, Options{})
	var all strings.Builder
	for _, d := range diags {
		fmt.Fprintf(&all, "%s: %s: %s\n", d.Subject, d.Summary, d.Detail)
	}
	if !diags.HasErrors() || !strings.Contains(all.String(), want) {
		t.Errorf("%s: diags %s, want %q", src, all.String(), want)
	}
}
