package hclfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	var c struct {
		Name string `hcl:"name,optional"`
		Port int    `hcl:"port,optional"`
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	os.WriteFile(good, []byte("name = \"m\"\nport = 4505\n"), 0o600)
	if diags := Decode(good, "test config", &c); diags.HasErrors() || c.Name != "m" || c.Port != 4505 {
		t.Fatalf("%v %+v", diags, c)
	}
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("name = \"m\"\nprot = 1\n"), 0o600)
	if diags := Decode(bad, "test config", &c); !diags.HasErrors() || !strings.Contains(diags.Error(), "bad.hcl:2,1") || !strings.Contains(diags.Error(), `"port"`) {
		t.Fatalf("want a positioned diagnostic with a suggestion: %v", diags)
	}
	if diags := Decode(filepath.Join(dir, "none.hcl"), "test config", &c); !diags.HasErrors() || !strings.Contains(diags.Error(), "Cannot read test config") {
		t.Fatalf("missing file: %v", diags)
	}
}
