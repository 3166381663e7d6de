package minionbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestBeside(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "brine")
	if got := Beside(exe); got != exe {
		t.Fatalf("none beside: %q, want the binary itself", got)
	}
	mb := filepath.Join(dir, Name)
	if err := os.WriteFile(mb, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := Beside(exe); got != exe {
		t.Fatalf("not executable beside: %q, want the binary itself", got)
	}
	if err := os.Chmod(mb, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := Beside(exe); got != mb {
		t.Fatalf("beside: %q, want %q", got, mb)
	}
	if got := Beside(mb); got != mb {
		t.Fatalf("of itself: %q", got)
	}
	if err := os.Remove(mb); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mb, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := Beside(exe); got != exe {
		t.Fatalf("a directory beside: %q, want the binary itself", got)
	}
}

// A brine-minion built from another commit than the brine beside it is not used (the binary
// itself is), one built from the same commit is: real `go build`s in a scratch git repository.
func TestBesideRefusesAnotherBuild(t *testing.T) {
	for _, tool := range []string{"go", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to build the test binaries: %v", tool, err)
		}
	}
	src, bin := t.TempDir(), t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t", "GOFLAGS=-buildvcs=true", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	commit := func(msg string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() { println(\""+msg+"\") }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		run("git", "add", ".")
		run("git", "commit", "-q", "-m", msg)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module example.com/b\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("git", "init", "-q")
	commit("one")
	exe, mb := filepath.Join(bin, "brine"), filepath.Join(bin, Name)
	run("go", "build", "-o", mb, ".")
	commit("two")
	run("go", "build", "-o", exe, ".")
	if got := Beside(exe); got != exe {
		t.Fatalf("brine-minion of the previous commit beside: %q, want the binary itself", got)
	}
	run("go", "build", "-o", mb, ".")
	if got := Beside(exe); got != mb {
		t.Fatalf("brine-minion of the same commit beside: %q, want %q", got, mb)
	}
}
