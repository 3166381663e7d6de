// Package textdiff is how resources show a difference: a unified diff of a file's content (a
// digest line for binary content) or of a list of lines (firewall rules).
package textdiff

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pmezard/go-difflib/difflib"
)

// Content is a unified diff for text, a digest line for binary content.
func Content(p string, have, want []byte) string {
	if !utf8.Valid(have) || !utf8.Valid(want) || bytes.IndexByte(have, 0) >= 0 || bytes.IndexByte(want, 0) >= 0 {
		return fmt.Sprintf("~ binary content of %s: sha256 %x -> %x", p, sha256.Sum256(have), sha256.Sum256(want))
	}
	from := p
	if have == nil {
		from = "/dev/null"
	}
	d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: splitLines(string(have)), B: splitLines(string(want)),
		FromFile: from, ToFile: p, Context: 3,
	})
	return strings.TrimRight(d, "\n")
}

// splitLines splits text into lines that each end in a newline, with no phantom empty last line.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	} else {
		lines[len(lines)-1] += "\n"
	}
	return lines
}

// Lines is a unified diff of two lists of lines (each ending in a newline).
func Lines(from, to string, a, b []string) string {
	d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: a, B: b, FromFile: from, ToFile: to, Context: 2})
	return strings.TrimRight(d, "\n")
}
