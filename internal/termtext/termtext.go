// Package termtext makes text that comes from peers (minion ids, facts, returns, diffs, errors)
// safe to print on an operator's terminal: a terminal acts on control characters, so a return
// whose diff holds ESC ] 52 could write the operator's clipboard, ESC [ 2 J clear the screen,
// and a bidirectional override make a line read differently from what it says.
package termtext

import (
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Escape returns s with every character a terminal could act on replaced by a visible escape:
// the C0 controls except newline and tab (ESC becomes \x1b, CR \x0d) and bytes that are not
// UTF-8 as \xNN; DEL, the C1 controls (U+0080 to U+009F, which some terminals take as ESC
// sequences) and every other character that is not printable (bidirectional overrides and
// isolates, zero-width characters, line/paragraph separators: they reorder or hide text) as
// \uNNNN (a surrogate pair above U+FFFF). The \u form is also a valid JSON escape, so Escape
// can run over JSON output: in encoding/json's output such characters only occur inside strings.
func Escape(s string) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, size) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s // the common case: nothing to escape, no allocation
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unsafeRune(r, size):
			b.WriteString(s[i : i+size])
		case r < 0x20:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r > 0xffff: // as a UTF-16 surrogate pair: the only form JSON has
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

// unsafeRune: everything but newline, tab and what unicode.IsPrint accepts (letters, marks,
// numbers, punctuation, symbols, the ASCII space): that leaves out the C0 and C1 controls, DEL,
// the format characters (bidi overrides and isolates, zero-width, BOM), line and paragraph
// separators, other spaces, unassigned and private-use code points.
func unsafeRune(r rune, size int) bool {
	switch {
	case r == utf8.RuneError && size == 1:
		return true
	case r == '\n' || r == '\t':
		return false
	}
	return !unicode.IsPrint(r)
}

// Writer escapes everything written through it with Escape, except, when colour is on, the
// colour sequences brine itself writes (SGR: ESC [ digits and semicolons m), which only change
// colour. Text from peers is escaped where it is rendered too, so a peer's own ESC [ 31 m
// arrives here already escaped.
type Writer struct {
	w     io.Writer
	color bool
}

// NewWriter returns a Writer over w; color lets SGR colour sequences through.
func NewWriter(w io.Writer, color bool) *Writer { return &Writer{w: w, color: color} }

// Unwrap returns the writer w writes to, for a display that draws on the terminal itself (and
// escapes what it prints).
func (w *Writer) Unwrap() io.Writer { return w.w }

// Write escapes p and writes it whole; it reports len(p) on success, as io.Writer requires.
func (w *Writer) Write(p []byte) (int, error) {
	s := string(p)
	var out string
	if w.color && strings.Contains(s, "\x1b[") {
		var b strings.Builder
		for s != "" {
			i := strings.Index(s, "\x1b[")
			if i < 0 {
				b.WriteString(Escape(s))
				break
			}
			b.WriteString(Escape(s[:i]))
			if n := sgrLen(s[i:]); n > 0 {
				b.WriteString(s[i : i+n])
				s = s[i+n:]
			} else {
				b.WriteString(`\x1b`)
				s = s[i+1:]
			}
		}
		out = b.String()
	} else {
		out = Escape(s)
	}
	if _, err := io.WriteString(w.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// sgrLen returns the length of the SGR sequence s starts with (ESC [ [0-9;]* m, at most 16
// bytes), or 0.
func sgrLen(s string) int {
	for i := 2; i < len(s) && i < 16; i++ {
		c := s[i]
		switch {
		case c == 'm':
			return i + 1
		case c >= '0' && c <= '9' || c == ';':
		default:
			return 0
		}
	}
	return 0
}
