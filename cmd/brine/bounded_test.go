package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// brine local apply compiles in a bounded child first (states/bounded): a bundle whose
// expressions would take all the host's memory (a 64 GB string) ends in an error naming the
// bundle and the bound, and nothing is applied.
func TestLocalApplyHostileBundleBounded(t *testing.T) {
	target := t.TempDir()
	dir := writeBundle(t, map[string]string{"main.hcl": `locals {
  s0 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  s1 = join("", [for i in range(1000) : local.s0])
  s2 = join("", [for i in range(1000) : local.s1])
  s3 = join("", [for i in range(1000) : local.s2])
}
file "early" {
  path    = "` + target + `/early"
  content = "x"
}
file "bomb" {
  path    = "` + target + `/bomb"
  content = local.s3
}`})
	_, stderr, code := brine(t, "local", "apply", dir)
	if code != 1 || !strings.Contains(stderr, "over the compile bound") || !strings.Contains(stderr, dir) || !strings.Contains(stderr, "memory") {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("applied %s", filepath.Join(target, entries[0].Name()))
	}
}
