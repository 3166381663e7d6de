package minionbin

import (
	"os"
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
