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

// MaxResultText and MaxReportText, which the master holds returns to, are never less than what
// the budget lets through: texts of every size, many results, the longest note.
func TestMaxReportTextHoldsWhatRunReports(t *testing.T) {
	var b textBudget
	const results = 300
	total := 0
	for i := range results {
		for _, n := range []int{maxResultText + 1 + i, 10 << 20, 1000} {
			got := b.cut(strings.Repeat("é", n/2))
			if len(got) > MaxResultText() {
				t.Fatalf("result %d: a text of %d bytes, over MaxResultText %d", i, len(got), MaxResultText())
			}
			total += len(got)
		}
	}
	if max := MaxReportText(3 * results / 2); total > max {
		t.Fatalf("%d bytes of text in %d results, over MaxReportText %d", total, results, max)
	}
	if note := len("\n... (18446744073709551615 more bytes not shown)"); note > cutNote {
		t.Fatalf("the longest note is %d bytes, cutNote %d", note, cutNote)
	}
}
