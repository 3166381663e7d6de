package atomicfile

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
