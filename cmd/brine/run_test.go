package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
)

// A run return is printed with what a minion's output holds escaped (terminal escapes, other
// control characters, invalid UTF-8), truncation said, and the exit status.
func TestPrintRunReturnEscapes(t *testing.T) {
	rep, _ := json.Marshal(wire.RunReport{ExitCode: 3, Stdout: "ok\x1b]0;pwned\x07\n\ttab\r\n", Stderr: "bad \xff byte\n",
		StdoutTruncated: 42, Duration: 1500 * time.Millisecond})
	var buf bytes.Buffer
	printRunReturn(&buf, wire.Return{Minion: "web1", Kind: wire.JobRun, Report: rep, Error: "exit status 3"})
	out := buf.String()
	for _, want := range []string{"web1: exit 3 (1.5s)", `ok\x1b]0;pwned\x07`, "\ttab\\x0d", "  stderr:", "[stdout truncated: 42 more bytes not kept]"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07\r") {
		t.Fatalf("control characters reached the terminal: %q", out)
	}
	if got := escapeOutput("a\xffb\u2028c\u00e9"); got != `a\xffb\u2028cé` {
		t.Fatalf("escapeOutput = %q", got)
	}
}

// A minion's error stays on its own line: a compromised minion cannot forge another minion's
// result line ("web2: pong", "web2: ok") in `brine apply` or `brine jobs show`.
func TestPrintReturnErrorCannotForgeLines(t *testing.T) {
	for _, kind := range []string{wire.JobApply, wire.JobRun} {
		var buf bytes.Buffer
		printReturn(&buf, wire.Return{Minion: "evil", Kind: kind, Error: "boom\nweb2: pong\r\nweb3:\n  Applied 3 resources", Diagnostics: "d1\nweb4: pong\n"}, false, false)
		for _, l := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
			if !strings.HasPrefix(l, "evil: ") && !strings.HasPrefix(l, "  ") {
				t.Fatalf("%s: a minion's error printed a line of its own %q:\n%s", kind, l, buf.String())
			}
		}
	}
}
