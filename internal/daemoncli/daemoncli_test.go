package daemoncli

import (
	"os"
	"path/filepath"
	"testing"
)

func TestConfigPathDefault(t *testing.T) {
	dir := t.TempDir()
	def := filepath.Join(dir, "master.hcl")
	if got := ConfigPath("", def); got != "" {
		t.Fatalf("absent default: %q, want built-in defaults", got)
	}
	if err := os.WriteFile(def, []byte("# empty\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := ConfigPath("", def); got != def {
		t.Fatalf("present default: %q", got)
	}
	if got := ConfigPath("/x.hcl", def); got != "/x.hcl" {
		t.Fatalf("given: %q", got)
	}
}
