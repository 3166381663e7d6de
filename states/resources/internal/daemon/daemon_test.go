package daemon

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// What a user may put where a pidfile is read: a FIFO (with no writer), a link to one, a huge
// file. ReadPidfile neither blocks nor reads more than a pid's worth, and a link in a directory
// the user owns is not followed.
func TestReadPidfileHostile(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o755))
	fifo := filepath.Join(dir, "fifo")
	must(t, syscall.Mkfifo(fifo, 0o600))
	must(t, os.Symlink(fifo, filepath.Join(dir, "fifo.pid")))
	huge := filepath.Join(dir, "huge.pid")
	must(t, os.WriteFile(huge, []byte("4242 "), 0o644))
	must(t, os.Truncate(huge, 256<<20))
	must(t, os.WriteFile(filepath.Join(dir, "real.pid"), []byte("4343\n"), 0o644))
	must(t, os.Symlink("real.pid", filepath.Join(dir, "link.pid")))

	for _, tc := range []struct {
		name string
		pid  int
	}{{"fifo", 0}, {"fifo.pid", 0}, {"huge.pid", 4242}, {"real.pid", 4343}, {"link.pid", 4343}} {
		done := make(chan int, 1)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		go func() {
			pid, _ := ReadPidfile(filepath.Join(dir, tc.name))
			done <- pid
		}()
		select {
		case pid := <-done:
			runtime.ReadMemStats(&after)
			if pid != tc.pid {
				t.Errorf("%s: pid %d, want %d", tc.name, pid, tc.pid)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
				t.Errorf("%s: reading it allocated %d MiB", tc.name, n>>20)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: ReadPidfile blocked", tc.name)
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close() // let the blocked reader go
			}
			<-done
		}
	}

	if os.Geteuid() == 0 {
		user := filepath.Join(dir, "user")
		must(t, os.Mkdir(user, 0o755))
		must(t, os.Chown(user, 65534, 65534))
		must(t, os.Symlink(filepath.Join(dir, "real.pid"), filepath.Join(user, "x.pid")))
		if pid, ok := ReadPidfile(filepath.Join(user, "x.pid")); ok {
			t.Errorf("a link in a user's directory was followed: pid %d", pid)
		}
	}
}
