package file

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
)

// A run lists a directory for the temporary files of killed applies once when it holds none:
// the files checked after it in the same run do not read it again. A directory that holds one
// is listed for each file, and a new run lists it again.
func TestStaleListingOncePerRun(t *testing.T) {
	dir := t.TempDir()
	res := func(name string) *fileRes {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		return &fileRes{path: p, state: "file", content: []byte("x"), uid: -1, gid: -1}
	}
	f0, f1 := res("f0"), res("f1")
	check := func(env *states.Env, r *fileRes) string {
		t.Helper()
		d, err := r.Check(context.Background(), env)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	run := &states.Env{}
	if d := check(run, f0); d != "" {
		t.Fatalf("f0: %q", d)
	}
	dead := filepath.Join(dir, ".f1.brine-12345") // a killed writer's, after the run's listing
	if err := os.WriteFile(dead, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d := check(run, f1); d != "" {
		t.Errorf("f1 in the run that found no temporary files: %q, want no difference (not listed again)", d)
	}
	next := &states.Env{}
	if d := check(next, f0); d != "" {
		t.Errorf("f0 in the next run: %q", d)
	}
	if d := check(next, f1); !strings.Contains(d, dead) {
		t.Errorf("f1 in the next run: %q, want the temporary file to remove", d)
	}
	if d := check(next, f1); !strings.Contains(d, dead) {
		t.Errorf("f1 again in the run that found a temporary file: %q, want it listed again", d)
	}
}
