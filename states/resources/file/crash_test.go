package file

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/brinecm/brine/testbed"
)

// TestKilledApplyLeavesEveryFileOldOrNew kills a real `brine local apply` with SIGKILL while it
// replaces 20 files, again and again, and checks after each kill that every file holds exactly
// its content from before that run or the new one: never a mix, never a truncated or empty
// file. The kill point moves through the apply: after k temporary files exist (staging and
// syncing) on even rounds, after k files hold their new content (renaming) on odd ones.
func TestKilledApplyLeavesEveryFileOldOrNew(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the brine binary")
	}
	bin := testbed.BrineBinary(t)
	const files, rounds = 20, 24
	work := t.TempDir()
	bundle, root := filepath.Join(work, "bundle"), filepath.Join(work, "root")
	for _, d := range []string{filepath.Join(bundle, "data"), root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var hcl strings.Builder
	hcl.WriteString("variable \"root\" { type = string }\n")
	for i := 0; i < files; i++ {
		fmt.Fprintf(&hcl, "file \"f%d\" {\n  path   = \"${var.root}/f%d\"\n  source = \"data/f%d\"\n}\n", i, i, i)
	}
	if err := os.WriteFile(filepath.Join(bundle, "main.hcl"), []byte(hcl.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	content := func(gen, i int) []byte { // 128 KiB, different in every generation and file
		return append([]byte(header(gen, i)), bytes.Repeat([]byte{byte('a' + gen%26)}, 128<<10)...)
	}
	have := make([][]byte, files) // what each file holds now; nil = absent
	killed, leftMax := 0, 0
	for gen := 1; gen <= rounds; gen++ {
		for i := 0; i < files; i++ {
			if err := os.WriteFile(filepath.Join(bundle, "data", fmt.Sprintf("f%d", i)), content(gen, i), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(bin, "local", "apply", bundle, "--var", "root="+root)
		cmd.Stdout, cmd.Stderr = nil, nil
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		k := 1 + (gen/2)%files
		renaming := gen%2 == 1
		var waitErr error
		done := false
	poll:
		for {
			select {
			case waitErr = <-exited:
				done = true
				break poll
			default:
			}
			if reached(t, root, gen, k, renaming) {
				break
			}
		}
		if !done {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			waitErr = <-exited
			if ee, ok := waitErr.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
				killed++
			} else if waitErr != nil {
				t.Fatalf("round %d: apply failed on its own: %v", gen, waitErr)
			}
		} else if waitErr != nil {
			t.Fatalf("round %d: apply failed: %v", gen, waitErr)
		}
		for i := 0; i < files; i++ {
			got, err := os.ReadFile(filepath.Join(root, fmt.Sprintf("f%d", i)))
			switch {
			case os.IsNotExist(err) && have[i] == nil:
			case err != nil:
				t.Fatalf("round %d: f%d: %v", gen, i, err)
			case bytes.Equal(got, content(gen, i)):
				have[i] = got
			case have[i] != nil && bytes.Equal(got, have[i]):
			default:
				t.Fatalf("round %d: f%d is neither its old nor its new content: %d bytes starting %q",
					gen, i, len(got), got[:min(len(got), 40)])
			}
		}
		if n := len(temps(t, root)); n > leftMax {
			leftMax = n
		}
	}
	t.Logf("%d of %d applies killed mid-apply, up to %d temporary files left by one", killed, rounds, leftMax)
	if killed == 0 {
		t.Fatal("no apply was killed mid-apply: the test proved nothing")
	}
	if leftMax == 0 {
		t.Fatal("no killed apply left a temporary file: the clean-up is not tested")
	}
	// An apply that runs to the end puts every file in place and removes the temporary files
	// killed applies left (besides those of the last round, one planted as a kill leaves it:
	// unlocked). An apply with nothing to rewrite removes them too.
	apply := func(what string) string {
		out, err := exec.Command(bin, "local", "apply", bundle, "--var", "root="+root).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		return string(out)
	}
	dead := filepath.Join(root, ".f0.brine-12345")
	if err := os.WriteFile(dead, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("before the full apply: %d temporary files", len(temps(t, root)))
	apply("full apply")
	for i := 0; i < files; i++ {
		if got, _ := os.ReadFile(filepath.Join(root, fmt.Sprintf("f%d", i))); !bytes.Equal(got, content(rounds, i)) {
			t.Fatalf("f%d not converged after a full apply", i)
		}
	}
	if left := temps(t, root); len(left) > 0 {
		t.Fatalf("temporary files left after a full apply: %v", left)
	}
	if err := os.WriteFile(dead, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := apply("apply without changes"); !strings.Contains(out, ".f0.brine-12345") {
		t.Errorf("the apply does not report the temporary file it removes:\n%s", out)
	}
	if left := temps(t, root); len(left) > 0 {
		t.Fatalf("temporary files left after an apply without changes: %v", left)
	}
}

// temps returns the names of the temporary files in root.
func temps(t *testing.T, root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".brine-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// reached reports whether the apply of generation gen got to its kill point: k temporary files
// in root, or (renaming) k files with their new content.
func header(gen, i int) string { return fmt.Sprintf("generation %d, file %d\n", gen, i) }

func reached(t *testing.T, root string, gen, k int, renaming bool) bool {
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		name := e.Name()
		if !renaming {
			if strings.HasPrefix(name, ".") && strings.Contains(name, ".brine-") {
				n++
			}
			continue
		}
		if strings.HasPrefix(name, ".") {
			continue
		}
		// A renamed file has its new length; reading just the header is enough to tell.
		f, err := os.Open(filepath.Join(root, name))
		if err != nil {
			continue
		}
		head := make([]byte, len(header(gen, 99)))
		m, _ := f.Read(head)
		f.Close()
		var i int
		fmt.Sscanf(name, "f%d", &i)
		if string(head[:m]) == header(gen, i) {
			n++
		}
	}
	return n >= k
}
