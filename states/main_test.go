package states_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
	"github.com/brinecm/brine/states/resources/restest"
	"github.com/brinecm/brine/testbed"
)

// builtinTypes is what the tests that use real resource types compile against.
var builtinTypes = builtin.Types()

// TestMain removes the brine binary built for the testbed tests once they are all done.
func TestMain(m *testing.M) { testbed.Main(m) }

// wantCompileError compiles src as a bundle's main.hcl and fails t unless that is an error whose
// subject, summary or detail contains want.
func wantCompileError(t *testing.T, src, want string) {
	t.Helper()
	_, diags := restest.Compile(&states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, builtinTypes, states.Options{})
	var all strings.Builder
	for _, d := range diags {
		fmt.Fprintf(&all, "%s: %s: %s\n", d.Subject, d.Summary, d.Detail)
	}
	if !diags.HasErrors() || !strings.Contains(all.String(), want) {
		t.Errorf("%s: diags %s, want %q", src, all.String(), want)
	}
}
