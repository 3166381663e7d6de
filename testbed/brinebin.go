package testbed

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/brinecm/brine/internal/tb"
)

// The brine binary for tests that run it in hosts: built once per test process, as shipped
// (CGO off), and removed by Main.
var brineBin struct {
	once sync.Once
	path string
	err  error
}

// BrineBinary returns the path of a brine binary built from this module, once per test process.
// A package that calls it runs its tests through Main, which removes the binary at the end.
func BrineBinary(t tb.TB) string {
	t.Helper()
	brineBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "brine-testbin-")
		if err != nil {
			brineBin.err = err
			return
		}
		brineBin.path = filepath.Join(dir, "brine")
		cmd := exec.Command("go", "build", "-o", brineBin.path, "github.com/brinecm/brine/cmd/brine")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			brineBin.err = fmt.Errorf("go build brine: %v: %s", err, out)
		}
	})
	if brineBin.err != nil {
		t.Fatal(brineBin.err)
	}
	return brineBin.path
}

// InstallBrine copies the test binary to dir/brine (a cluster's SharedDir, which hosts see as
// HostSharedDir) and returns that path.
func InstallBrine(t tb.TB, dir string) string {
	t.Helper()
	src := BrineBinary(t)
	dst := filepath.Join(dir, "brine")
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// Main runs a test package's tests (call it from TestMain) and then removes the binary that
// BrineBinary built.
func Main(m interface{ Run() int }) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup removes the binary that BrineBinary built; for a TestMain that has more to clean up
// than Main does.
func Cleanup() {
	if brineBin.path != "" {
		os.RemoveAll(filepath.Dir(brineBin.path))
	}
}
