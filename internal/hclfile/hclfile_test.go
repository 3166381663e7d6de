package hclfile

import (
	"errors"
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

func TestDiagnoseNamesTheField(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "master.hcl")
	os.WriteFile(p, []byte("site = \"/srv\"\n\nschedule \"nightly\" {\n  target = \"*\"\n  every  = \"1s\"\n}\n"), 0o600)
	for _, c := range []struct {
		field []string
		want  string
	}{
		{[]string{"schedule", "nightly", "every"}, "master.hcl:5,12-16"},
		{[]string{"schedule", "nightly", "splay"}, "master.hcl:3,1-19"}, // not written: the block
		{[]string{"site"}, "master.hcl:1,8-14"},
	} {
		diags := Diagnose(p, "Invalid master config", Field(errors.New("too short"), c.field...))
		if !strings.Contains(diags.Error(), c.want) || !strings.Contains(diags.Error(), "too short") {
			t.Errorf("%v: %v, want %s", c.field, diags, c.want)
		}
	}
	// A field the file does not hold (a default) and a plain error name the file instead.
	for _, err := range []error{Field(errors.New("bad"), "job_max"), errors.New("bad")} {
		diags := Diagnose(p, "Invalid master config", err)
		if diags[0].Subject != nil || !strings.Contains(diags[0].Summary, p) {
			t.Errorf("%v: %#v", err, diags[0])
		}
	}
}
