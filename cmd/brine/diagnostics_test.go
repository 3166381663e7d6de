package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The README's example of a broken bundle is what brine prints for it, word for word.
func TestReadmeDiagnosticIsWhatBrinePrints(t *testing.T) {
	dir := t.TempDir()
	site := filepath.Join(dir, "site")
	os.Mkdir(site, 0o755)
	os.WriteFile(filepath.Join(site, "main.hcl"), []byte("file \"motd\" {\n  path = \"/tmp/motd\"\n  mdoe = \"0644\"\n}\n"), 0o644)
	cmd := exec.Command(brineBin, "local", "plan", "site")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "NO_COLOR=1")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != exitNothing {
		t.Fatalf("exit %d: %s", cmd.ProcessState.ExitCode(), out)
	}
	diag, _, _ := strings.Cut(string(out), "\nbrine: ")
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```\n"+strings.TrimSpace(diag)+"\n```") {
		t.Fatalf("README.md does not show what brine prints:\n%s", diag)
	}
}

// A mistake in a daemon's config file is named by file, line and column, with the line
// quoted, like a bundle's: never "<nil>:".
func TestConfigDiagnosticsNameTheLine(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ cmd, body, want string }{
		{"master", "site = \"/srv\"\nschedule \"nightly\" {\n  every = \"soon\"\n}\n", ":3:11\n   |\n 3 |   every = \"soon\"\n   |           ^^^^^^\nevery = \"soon\": want a duration"},
		{"master", "store = \"mysql://db\"\n", ":1:9\n"},
		{"minion", "master = \"m1\"\nid = \"Web 1\"\n", ":2:6\n"},
	} {
		p := filepath.Join(dir, c.cmd+".hcl")
		os.WriteFile(p, []byte(c.body), 0o600)
		_, stderr, code := brine(t, c.cmd, "--config", p, "--data-dir", filepath.Join(dir, "data"))
		if code != exitNothing || !strings.Contains(stderr, "  --> "+p+c.want) || strings.Contains(stderr, "<nil>") {
			t.Errorf("%s %q: exit %d\n%s", c.cmd, c.body, code, stderr)
		}
	}
}
