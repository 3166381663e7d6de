package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestWriteLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for i := 0; i < 3; i++ {
		if err := Write(p, []byte(strings.Repeat("x", i*1000)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left over: %v", entries)
	}
}

func TestBatchChangesNothingUntilCommit(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old")
	if err := Write(old, []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	var b Batch
	paths := []string{old, filepath.Join(dir, "new"), filepath.Join(dir, "sub", "deep")}
	for i, p := range paths {
		if err := b.Stage(p, []byte(strings.Repeat("n", i+1)), 0o600, -1, -1); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := os.ReadFile(old); string(got) != "before" {
		t.Fatalf("staging changed %s: %q", old, got)
	}
	if _, err := os.Stat(paths[1]); !os.IsNotExist(err) {
		t.Fatalf("staging created %s", paths[1])
	}
	for i, err := range b.Commit() {
		if err != nil {
			t.Fatalf("commit %s: %v", paths[i], err)
		}
	}
	for i, p := range paths {
		got, err := os.ReadFile(p)
		if err != nil || string(got) != strings.Repeat("n", i+1) {
			t.Fatalf("%s after commit: %q %v", p, got, err)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", p, st.Mode())
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, "sub")} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".brine-") {
				t.Fatalf("temporary file left in %s: %s", d, e.Name())
			}
		}
	}
	if b.Len() != 0 {
		t.Fatalf("batch not empty after commit: %d", b.Len())
	}
}

func TestBatchAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	var b Batch
	for i := 0; i < maxOpen+3; i++ { // past maxOpen: the closed-descriptor path too
		if err := b.Stage(filepath.Join(dir, "f"+strconv.Itoa(i)), []byte("x"), 0o644, -1, -1); err != nil {
			t.Fatal(err)
		}
	}
	b.Abort()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("abort left %d files", len(entries))
	}
}

func TestBatchManyFilesPastOpenLimit(t *testing.T) {
	dir := t.TempDir()
	var b Batch
	n := maxOpen + 10
	for i := 0; i < n; i++ {
		if err := b.Stage(filepath.Join(dir, "f"+strconv.Itoa(i)), []byte(strconv.Itoa(i)), 0o644, -1, -1); err != nil {
			t.Fatal(err)
		}
	}
	for i, err := range b.Commit() {
		if err != nil {
			t.Fatalf("file %d: %v", i, err)
		}
	}
	for i := 0; i < n; i++ {
		if got, _ := os.ReadFile(filepath.Join(dir, "f"+strconv.Itoa(i))); string(got) != strconv.Itoa(i) {
			t.Fatalf("f%d = %q", i, got)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != n {
		t.Fatalf("%d entries, want %d", len(entries), n)
	}
}

// BenchmarkReplace20 is the price of replacing 20 small files in one directory, one by one (two
// fsyncs each) and as one batch. Run it on a real disk: TMPDIR=/var/tmp.
func BenchmarkReplace20(b *testing.B) {
	dir := b.TempDir()
	data := []byte(strings.Repeat("line of a config file\n", 20))
	b.Run("one-by-one", func(b *testing.B) {
		for n := 0; n < b.N; n++ {
			for i := 0; i < 20; i++ {
				if err := Write(filepath.Join(dir, "f"+strconv.Itoa(i)), data, 0o644); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("batch", func(b *testing.B) {
		for n := 0; n < b.N; n++ {
			var bt Batch
			for i := 0; i < 20; i++ {
				if err := bt.Stage(filepath.Join(dir, "f"+strconv.Itoa(i)), data, 0o644, -1, -1); err != nil {
					b.Fatal(err)
				}
			}
			for _, err := range bt.Commit() {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// A writer killed between staging and renaming leaves .NAME.brine-DIGITS behind, unlocked. The
// next write into that directory removes such files, and nothing else: not a live writer's
// (locked), not a symbolic link or a directory of that name, not names that merely look alike.
func TestStaleTempFilesAreRemovedByTheNextWrite(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	target := filepath.Join(dir, "f")
	if err := Write(target, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dead := []string{mk(".f.brine-123"), mk(".g.brine-4567")}
	kept := []string{mk(".f.brine-x1"), mk("f.brine-1"), mk(".f.brine-"), mk(".f.tmp-1")}
	live := mk(".f.brine-999")
	lf, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, live)
	secret := filepath.Join(elsewhere, "secret")
	if err := os.WriteFile(secret, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, ".f.brine-42")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, ".f.brine-77")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, link, sub)

	stale, err := Stale(target)
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) != 1 || stale[0] != dead[0] {
		t.Fatalf("Stale(%s) = %v, want [%s]", target, stale, dead[0])
	}
	if err := Write(filepath.Join(dir, "other"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range dead {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s was not removed: %v", p, err)
		}
	}
	for _, p := range kept {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	if got, _ := os.ReadFile(secret); string(got) != "keep me" {
		t.Errorf("the symbolic link's target changed: %q", got)
	}
	lf.Close() // the live writer dies
	if err := RemoveStale(target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(live); !os.IsNotExist(err) {
		t.Errorf("%s was not removed once its writer was gone: %v", live, err)
	}
	if got, _ := os.ReadFile(target); string(got) != "old" {
		t.Errorf("%s changed: %q", target, got)
	}
}

// Writers of different files in one directory sweep it while the others stage: a sweep that
// reaches a temporary file between its creation and its writer's lock must not cost that writer
// its write (the sweep removed the file; the writer locked the unlinked file and its rename
// failed with ENOENT).
func TestConcurrentWritersInOneDirectory(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				p := filepath.Join(dir, fmt.Sprintf("w%d", w))
				if err := Write(p, []byte(fmt.Sprint(i)), 0o644); err != nil {
					errs <- fmt.Errorf("writer %d, write %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A user who owns a directory on the path replaces a directory below it with a symbolic link to
// root's (here a decoy): the write is refused, naming the link, and the decoy keeps its files.
// A link in a directory only root can write (like /lib -> usr/lib) is still followed.
func TestWriteRefusesALinkAUserPlaced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give a directory to another user")
	}
	root := t.TempDir()
	home, decoy := filepath.Join(root, "home", "alice"), filepath.Join(root, "rootssh")
	for _, d := range []string{home, decoy, filepath.Join(root, "usr", "lib")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(decoy, "authorized_keys"), []byte("root's\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(decoy, filepath.Join(home, ".ssh")); err != nil {
		t.Fatal(err)
	}
	err := Write(filepath.Join(home, ".ssh", "authorized_keys"), []byte("alice's\n"), 0o600)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(home, ".ssh")) || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("write through alice's link: %v, want a refusal naming the link and its owner", err)
	}
	if got, _ := os.ReadFile(filepath.Join(decoy, "authorized_keys")); string(got) != "root's\n" {
		t.Fatalf("the decoy was written: %q", got)
	}
	if entries, _ := os.ReadDir(decoy); len(entries) != 1 {
		t.Fatalf("the decoy directory changed: %v", entries)
	}
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(root, "lib", "x.conf"), []byte("x"), 0o644); err != nil {
		t.Fatalf("write through a link in a root-owned directory: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "usr", "lib", "x.conf")); string(got) != "x" {
		t.Fatalf("usr/lib/x.conf: %q", got)
	}
}
