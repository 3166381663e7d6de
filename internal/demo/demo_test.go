package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/testbed"
)

// The demo flow, as `make demo` runs it: enrol four real minions with tokens, converge the
// reference deployment, prove the mesh and the firewall, and a second apply with 0 changes.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 4-host cluster")
	}
	if err := testbed.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	bin := testbed.BrineBinary(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := Run(ctx, Options{Binary: bin, Bundle: "../../examples/ghost-pro", Out: &out, Name: "demotest"})
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"12 of 12 host pairs", "refused by ufw", "a second apply changed nothing"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q", want)
		}
	}
	if left := testbed.Leftovers("demotest"); len(left) > 0 {
		t.Fatalf("the demo left %v", left)
	}
}
