package states

import (
	"fmt"
	"unicode/utf8"
)

// Bounds of the text one run reports (diffs and errors), so that a report stays far under what
// the master takes back (wire.MaxRequestFrame, 16 MiB), whatever the host holds: a 10 MB file
// replaced, a command that prints megabytes into its error, ten thousand changed resources.
// The report shows the start of each text and says how much it left out; the apply itself is
// not cut.
const (
	maxResultText = 64 << 10 // one result's diff, or its error
	maxRunText    = 4 << 20  // all results' diffs and errors together; past it, each is cut to runTextTail
	runTextTail   = 256
)

// textBudget cuts the texts of one run's results to the bounds above.
type textBudget struct{ used int }

// cut returns s, or its start (at a line end if there is one in its second half) with a line
// saying how many bytes were left out. It never returns "" for a non-empty s.
func (b *textBudget) cut(s string) string {
	limit := maxResultText
	if b.used >= maxRunText {
		limit = runTextTail
	}
	s = cutText(s, limit)
	b.used += len(s)
	return s
}

func cutText(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	i := limit
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	for j := i - 1; j >= limit/2; j-- {
		if s[j] == '\n' {
			i = j
			break
		}
	}
	return s[:i] + fmt.Sprintf("\n... (%d more bytes not shown)", len(s)-i)
}

// cutNote bounds the line cutText appends ("\n... (N more bytes not shown)", N up to 20 digits).
const cutNote = 48

// MaxResultText is the most bytes of one result's diff, or of its error, in a report of Run.
func MaxResultText() int { return maxResultText + cutNote }

// MaxReportText is the most bytes of all the diffs and errors together in a report of Run with
// n results: what the text budget lets through (the master refuses a return over it, whatever
// a minion says it ran).
func MaxReportText(n int) int {
	return maxRunText + 2*MaxResultText() + 2*n*(runTextTail+cutNote)
}
