package termtext

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostile holds what a compromised minion would put in a diff or an error.
var hostile = map[string]string{
	"clear screen":   "\x1b[2J\x1b[H",
	"title":          "\x1b]0;owned\x07",
	"clipboard":      "\x1b]52;c;Y3VybCBldmlsLnNofHNo\x07",
	"C1 CSI":         "\u009b2J",
	"C1 OSC raw":     "\x9d0;t\x9c",
	"DEL and CR":     "abc\x7f\rxyz",
	"bidi override":  "good\u202edab.exe",
	"isolate":        "a\u2066b\u2069",
	"bell backspace": "\a\b",
	"line separator": "a\u2028b",
}

// raw reports whether s holds a character a terminal would act on.
func raw(s string) bool {
	for i, r := range s {
		if r == '\n' || r == '\t' {
			continue
		}
		if r < 0x20 || r >= 0x7f && r <= 0x9f || r == 0xfffd && s[i] != 0xef || strings.ContainsRune("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u2028\u2029", r) {
			return true
		}
	}
	return false
}

func TestEscape(t *testing.T) {
	for name, s := range hostile {
		got := Escape("before " + s + " after\n\tnext")
		if raw(got) || !strings.HasPrefix(got, "before ") || !strings.HasSuffix(got, " after\n\tnext") {
			t.Errorf("%s: %q", name, got)
		}
	}
	if got := Escape("\x1b[2J"); got != `\x1b[2J` {
		t.Errorf("ESC shows as %q, want \\x1b[2J", got)
	}
	if got := Escape("\u009b"); got != `\u009b` {
		t.Errorf("C1 shows as %q", got)
	}
	if got := Escape("caf\xe9"); got != `caf\xe9` { // not UTF-8
		t.Errorf("invalid UTF-8 shows as %q", got)
	}
	plain := "héllo wörld ✓ 日本\n\tok"
	if got := Escape(plain); got != plain {
		t.Errorf("printable text changed: %q", got)
	}
}

// JSON output stays valid JSON and decodes to the same strings, with no raw control left.
func TestWriterOverJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := json.NewEncoder(NewWriter(&buf, false)).Encode(hostile); err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSuffix(buf.String(), "\n")
	if raw(out) {
		t.Fatalf("raw control character in JSON output: %q", out)
	}
	var back map[string]string
	if err := json.Unmarshal([]byte(out), &back); err != nil {
		t.Fatalf("not JSON any more: %v\n%s", err, out)
	}
	for k, v := range hostile {
		if utf8.ValidString(v) && back[k] != v {
			t.Errorf("%s: %q decodes to %q", k, v, back[k])
		}
	}
}

// With colour, only SGR colour sequences pass; everything else is escaped.
func TestWriterColor(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, true)
	w.Write([]byte("\x1b[31mred\x1b[0m \x1b[2J \x1b]52;c;eA==\x07 \x1b[1;32mok\x1b[0m"))
	want := "\x1b[31mred\x1b[0m \\x1b[2J \\x1b]52;c;eA==\\x07 \x1b[1;32mok\x1b[0m"
	if buf.String() != want {
		t.Fatalf("got  %q\nwant %q", buf.String(), want)
	}
	buf.Reset()
	NewWriter(&buf, false).Write([]byte("\x1b[31mred"))
	if buf.String() != `\x1b[31mred` {
		t.Fatalf("without colour: %q", buf.String())
	}
}

// Escape leaves no character a terminal acts on, and over encoding/json's output keeps it JSON
// that decodes to the same strings.
func FuzzEscape(f *testing.F) {
	for _, s := range hostile {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := Escape(s); raw(got) {
			t.Fatalf("Escape(%q) = %q", s, got)
		}
		enc, _ := json.Marshal(s)
		esc := Escape(string(enc))
		var back string
		if err := json.Unmarshal([]byte(esc), &back); err != nil || raw(esc) {
			t.Fatalf("JSON %s escaped to %s: %v", enc, esc, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("JSON round trip %q -> %q", s, back)
		}
	})
}
