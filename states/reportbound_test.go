package states

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// cutText keeps valid UTF-8, cuts at a line end when there is one in the second half, never
// returns an empty text for a non-empty one, and says how much it left out.
func TestCutText(t *testing.T) {
	for _, c := range []struct {
		in    string
		limit int
		want  string
	}{
		{"short", 10, "short"},
		{"ab\ncdefgh", 6, "ab\ncde\n... (3 more bytes not shown)"}, // no line end in the second half
		{"abcd\nefgh", 6, "abcd\n... (5 more bytes not shown)"},
		{"ééééé", 5, "éé\n... (6 more bytes not shown)"}, // not in the middle of a rune
	} {
		got := cutText(c.in, c.limit)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("cutText(%q, %d) = %q, want %q", c.in, c.limit, got, c.want)
		}
	}
	var b textBudget
	big := strings.Repeat("x", maxResultText+1)
	for range maxRunText / maxResultText {
		if got := b.cut(big); len(got) > maxResultText+40 {
			t.Fatalf("a result's text of %d bytes", len(got))
		}
	}
	if got := b.cut(big); len(got) > runTextTail+40 {
		t.Fatalf("past the run's budget, a text of %d bytes", len(got))
	}
	if b.cut("") != "" || b.cut("x") != "x" {
		t.Fatal("short texts changed")
	}
}
