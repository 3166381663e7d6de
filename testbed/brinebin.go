package testbed

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/brinecm/brine/internal/minionbin"
	"github.com/brinecm/brine/internal/tb"
)

// The brine binaries for tests that run them in hosts: brine and, beside it, brine-minion (as
// `make build` puts them), built once per test process, as shipped (CGO off), and removed by Main.
var brineBin struct {
	once sync.Once
	path string
	err  error
}

// BrineBinary returns the path of a brine binary built from this module, once per test process,
// with brine-minion built beside it (MinionBinary): what takes a binary and runs a minion from
// it (the demo, the master's bootstrap endpoint, enroll) finds brine-minion there. A package that
// calls it runs its tests through Main, which removes the binaries at the end.
func BrineBinary(t tb.TB) string {
	t.Helper()
	brineBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "brine-testbin-")
		if err != nil {
			brineBin.err = err
			return
		}
		brineBin.path = filepath.Join(dir, "brine")
		for name, pkg := range map[string]string{"brine": "cmd/brine", minionbin.Name: "cmd/brine-minion"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "github.com/brinecm/brine/"+pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				brineBin.err = fmt.Errorf("go build %s: %v: %s", name, err, out)
				return
			}
		}
	})
	if brineBin.err != nil {
		t.Fatal(brineBin.err)
	}
	return brineBin.path
}

// MinionBinary returns the path of the brine-minion binary built beside BrineBinary's.
func MinionBinary(t tb.TB) string {
	t.Helper()
	return filepath.Join(filepath.Dir(BrineBinary(t)), minionbin.Name)
}

// InstallBrine copies the test binaries to dir/brine and dir/brine-minion (a cluster's
// SharedDir, which hosts see as HostSharedDir) and returns the first path.
func InstallBrine(t tb.TB, dir string) string {
	t.Helper()
	copyBinary(t, MinionBinary(t), filepath.Join(dir, minionbin.Name))
	dst := filepath.Join(dir, "brine")
	copyBinary(t, BrineBinary(t), dst)
	return dst
}

func copyBinary(t tb.TB, src, dst string) {
	t.Helper()
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
