package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// Messages a newcomer can act on, through the real CLI, master and minions: an unknown id in a
// target list is named (exit 2, the others still run), typos of target kinds, groups and fact
// keys get "did you mean", `facts` of nothing exits 1, and after --timeout the CLI says where the
// late results will appear.
func TestTargetHintsThroughRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master and minions")
	}
	sock := cluster(t, 2)
	brine(t, "key", "groups", "r1", "--groups", "app", "--socket", sock)

	out, stderr, code := brine(t, "ping", "r1,rr2", "--socket", sock, "--timeout", "20s")
	if code != 2 || !strings.Contains(out, "r1: pong") || !strings.Contains(out, "1 unknown (rr2)") ||
		!strings.Contains(stderr, "rr2: no accepted minion has this id; did you mean r2?") {
		t.Errorf("ping r1,rr2: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, c := range []struct{ target, want string }{
		{"grop:app", `"grop:app": "grop:" is not a kind of target (a term is an id glob, group:NAME or fact:KEY=VALUE); did you mean "group:app"?`},
		{"group:ap", "group:ap: no minion is in group \"ap\"; did you mean group:app?"},
		{"fact:hostnme=r1", "fact:hostnme=r1: no minion reports a fact \"hostnme\"; did you mean fact:hostname=r1?"},
		{"rr2", "rr2: no accepted minion has this id; did you mean r2?"},
	} {
		out, stderr, code := brine(t, "ping", c.target, "--socket", sock, "--timeout", "20s")
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("ping %s: exit %d, want 1 and %q\n%s\n%s", c.target, code, c.want, out, stderr)
		}
	}
	// A group typo next to a term that matches: the job runs, the hint is printed, exit 0.
	if out, stderr, code := brine(t, "ping", "r2 or group:ap", "--socket", sock, "--timeout", "20s"); code != 0 || !strings.Contains(stderr, "did you mean group:app?") {
		t.Errorf("ping 'r2 or group:ap': exit %d\n%s\n%s", code, out, stderr)
	}
	if out, stderr, code := brine(t, "facts", "nosuch", "--socket", sock); code != 1 || !strings.Contains(stderr, "matches no accepted minion") {
		t.Errorf("facts nosuch: exit %d\n%s\n%s", code, out, stderr)
	}

	// An apply that outlasts --timeout: the CLI says the job goes on and where to look.
	b := writeBundle(t, map[string]string{"main.hcl": "exec \"slow\" {\n  command = \"sleep 4\"\n}\n"})
	out, stderr, code = brine(t, "apply", "r1", b, "--socket", sock, "--timeout", "1s")
	m := regexp.MustCompile(`job (\S+): the minions that did not return in time may still be running it; their results will appear in: brine jobs show (\S+)`).FindStringSubmatch(stderr)
	if code != 2 || m == nil || m[1] != m[2] {
		t.Fatalf("apply past --timeout: exit %d\n%s\n%s", code, out, stderr)
	}
	deadline := 30
	for i := 0; ; i++ {
		show, _, _ := brine(t, "jobs", "show", m[1], "--socket", sock)
		if strings.Contains(show, "exec.slow changed") && !strings.Contains(show, "no return") {
			break
		}
		if i == deadline*5 {
			t.Fatalf("the late return never appeared in jobs show:\n%s", show)
		}
		sleepPoll()
	}
}

// sleepPoll is the pause between two polls of a condition.
func sleepPoll() { time.Sleep(200 * time.Millisecond) }
