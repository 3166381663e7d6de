package states

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"

	"github.com/brinecm/brine/internal/termtext"
)

// WriteDiagnostics prints diagnostics for people: severity and summary, then file:line:col, the
// source line with the subject underlined, and the detail. b supplies the source text; it may be
// nil (diagnostics about a config file or flags).
func WriteDiagnostics(w io.Writer, b *Bundle, diags hcl.Diagnostics, color bool) {
	sources := map[string][]byte{}
	if b != nil {
		for n, data := range b.Files {
			sources[b.displayName(n)] = data
		}
	}
	WriteDiagnosticsSources(w, sources, diags, color)
}

// WriteFileDiagnostics writes the diagnostics of config files on disk (master.hcl, minion.hcl,
// a site or secrets file) in the format of a bundle's, quoting the lines they point at: each
// regular file of 4 MiB or less that a diagnostic names is read once.
func WriteFileDiagnostics(w io.Writer, diags hcl.Diagnostics, color bool) {
	sources := map[string][]byte{}
	for _, d := range diags {
		if d.Subject == nil || sources[d.Subject.Filename] != nil {
			continue
		}
		if st, err := os.Stat(d.Subject.Filename); err == nil && st.Mode().IsRegular() && st.Size() <= 4<<20 {
			sources[d.Subject.Filename], _ = os.ReadFile(d.Subject.Filename)
		}
	}
	WriteDiagnosticsSources(w, sources, diags, color)
}

// WriteDiagnosticsSources writes diagnostics for people, quoting the source line of each from
// sources (file name to content) when it is there: the format of every brine diagnostic.
func WriteDiagnosticsSources(w io.Writer, sources map[string][]byte, diags hcl.Diagnostics, color bool) {
	for _, d := range diags {
		writeDiagnostic(w, d, sources, color)
	}
}

func writeDiagnostic(w io.Writer, d *hcl.Diagnostic, sources map[string][]byte, color bool) {
	sev, c := "Error", ansiRed
	if d.Severity == hcl.DiagWarning {
		sev, c = "Warning", ansiYellow
	}
	// Diagnostics can quote what a peer sent (a minion's facts, a file name): escaped.
	if color {
		fmt.Fprintf(w, "%s%s%s: %s\n", c, sev, ansiReset, termtext.Escape(d.Summary))
	} else {
		fmt.Fprintf(w, "%s: %s\n", sev, termtext.Escape(d.Summary))
	}
	if s := d.Subject; s != nil {
		fmt.Fprintf(w, "  --> %s:%d:%d\n", termtext.Escape(s.Filename), s.Start.Line, s.Start.Column)
		if src, ok := sources[s.Filename]; ok {
			lines := strings.Split(string(src), "\n")
			if s.Start.Line >= 1 && s.Start.Line <= len(lines) {
				line := strings.ReplaceAll(lines[s.Start.Line-1], "\t", " ")
				num := fmt.Sprintf("%d", s.Start.Line)
				pad := strings.Repeat(" ", len(num))
				width := 1
				if s.End.Line == s.Start.Line && s.End.Column > s.Start.Column {
					width = s.End.Column - s.Start.Column
				} else if s.End.Line > s.Start.Line {
					width = len(line) - s.Start.Column + 1
				}
				if width < 1 {
					width = 1
				}
				line, col, width := sourceWindow(line, s.Start.Column, width)
				line = termtext.Escape(line)
				marks := strings.Repeat(" ", max(col-1, 0)) + strings.Repeat("^", width)
				if color {
					marks = c + marks + ansiReset
				}
				fmt.Fprintf(w, " %s |\n %s | %s\n %s | %s\n", pad, num, line, pad, marks)
			}
		}
	}
	if d.Detail != "" {
		fmt.Fprintf(w, "%s\n", termtext.Escape(d.Detail))
	}
	fmt.Fprintln(w)
}

// maxSourceLine is how much of a source line a diagnostic shows: a minified or hostile line
// can be megabytes long.
const maxSourceLine = 120

// sourceWindow cuts line to at most about maxSourceLine characters around column col (1-based,
// in bytes as HCL counts them), returning the new column and underline width.
func sourceWindow(line string, col, width int) (string, int, int) {
	if len(line) <= maxSourceLine {
		return line, col, width
	}
	start := max(col-1-maxSourceLine/3, 0)
	for start > 0 && !utf8.RuneStart(line[start]) {
		start--
	}
	end := min(start+maxSourceLine, len(line))
	for end < len(line) && !utf8.RuneStart(line[end]) {
		end++
	}
	out, col := line[start:end], col-start
	if start > 0 {
		out, col = "…"+out, col+1
	}
	if end < len(line) {
		out += "…"
	}
	width = max(min(width, end-start-col+2), 1)
	return out, col, width
}

// UseColor reports whether output to f should be coloured: a terminal, and NO_COLOR unset.
func UseColor(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

const (
	ansiReset  = "\x1b[0m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiDim    = "\x1b[2m"
)

// RenderReport prints a report for people: one line per changed, failed or skipped resource with
// its diff or reason (unchanged ones only when verbose), then a summary line with counts and time.
// A report comes from a minion: every text in it is escaped (termtext.Escape) before colouring,
// so none of its control characters reaches the terminal.
func RenderReport(w io.Writer, r *Report, verbose, color bool) {
	paint := func(c, s string) string {
		if !color {
			return s
		}
		return c + s + ansiReset
	}
	for _, res := range r.Results {
		var mark, word string
		switch res.Status {
		case StatusOK:
			if !verbose {
				continue
			}
			mark, word = paint(ansiDim, "  "), paint(ansiDim, "ok")
		case StatusChanged:
			mark = paint(ansiYellow, "~ ")
			word = paint(ansiYellow, "changed")
			if r.DryRun {
				word = paint(ansiYellow, "would change")
			}
		case StatusFailed:
			mark, word = paint(ansiRed, "! "), paint(ansiRed, "failed")
		case StatusSkipped:
			mark, word = paint(ansiDim, "- "), paint(ansiDim, "skipped")
		}
		fmt.Fprintf(w, "%s%s %s %s\n", mark, termtext.Escape(oneLine(res.Address)), word, paint(ansiDim, fmtDuration(res.Duration)))
		if res.Diff != "" && res.Status != StatusOK {
			for _, line := range strings.Split(strings.TrimRight(res.Diff, "\n"), "\n") {
				line = termtext.Escape(line)
				switch {
				case strings.HasPrefix(line, "+") && !strings.HasPrefix(line, "+++"):
					line = paint(ansiGreen, line)
				case strings.HasPrefix(line, "-") && !strings.HasPrefix(line, "---"):
					line = paint(ansiRed, line)
				}
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
		if res.Error != "" {
			for _, line := range strings.Split(strings.TrimRight(res.Error, "\n"), "\n") {
				fmt.Fprintf(w, "    %s\n", termtext.Escape(line))
			}
		}
	}
	c := r.Counts()
	verb := "Applied"
	if r.DryRun {
		verb = "Planned"
	}
	changed := fmt.Sprintf("%d changed", c[StatusChanged])
	if r.DryRun {
		changed = fmt.Sprintf("%d to change", c[StatusChanged])
	}
	failed := fmt.Sprintf("%d failed", c[StatusFailed])
	if c[StatusFailed] > 0 {
		failed = paint(ansiRed, failed)
	}
	fmt.Fprintf(w, "%s %d resources in %s: %d ok, %s, %s, %d skipped\n",
		verb, len(r.Results), fmtDuration(r.Duration), c[StatusOK], changed, failed, c[StatusSkipped])
}

// oneLine keeps a field that must stay on its line (an address) from starting a new one.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", `\n`) }

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
