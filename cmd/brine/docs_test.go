package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/testbed"
)

// Every shell block of README.md and docs/*.md is either run as written, by the test its entry
// in docBlockPlan names, or skipped with the reason its entry gives. A block that is in the docs
// and not in the table (or in the table and no longer in the docs) fails TestDocBlocksClassified,
// so a command cannot enter the docs untried. A block is keyed by its file and its first command
// (the first line without its comment).

// docPlan says what the test does with one block: run it, or skip it and why.
type docPlan struct {
	run  func(t *testing.T, b docBlock)
	skip string
}

var docBlockPlan = map[string]docPlan{
	"README.md: make demo": {skip: "the demo and the whole test suite: what CI (.ci/run) runs; " +
		"brine demo is TestDemo (cmd/brine/internal/demo), and a test cannot run the suite it is part of"},
	"README.md: apt-get install ./dist/brine_*.deb": {skip: "installs the .deb on a server whose PID 1 is systemd: " +
		"TestDebInSystemdHosts does each of these steps (apt-get install, systemctl enable --now on a master and a minion, apt-get purge) in systemd testbed hosts"},
	"README.md: brine master &":                                                                {run: runDocQuickStart},
	"README.md: brine testbed up 3":                                                            {run: runDocTestbed},
	"docs/capture.md: brine local capture --out ./web1":                                        {run: runDocCapture},
	"docs/capture.md: brine capture 'legacy*' --out ./site":                                    {run: runDocCaptureSite},
	"docs/capture.md: ssh-keyscan -t ed25519 10.0.0.5 >> ~/.ssh/known_hosts":                   {run: runDocEnroll},
	"docs/capture.md: brine capture 'legacy*' --site /etc/brine/states --out ./states-new":     {run: runDocCaptureJoinSite},
	"docs/cloud.md: brine cloud sim --boot-delay 2s --domain example.com":                      {run: runDocCloudSim},
	"docs/cloud.md: brine cloud sim --boot testbed --boot-delay 0s --cluster sim1":             {run: runDocCloudBoot},
	"docs/master.md: brine master":                                                             {run: runDocMasterIntro},
	"docs/master.md: runuser -u postgres -- createuser brine":                                  {run: runDocPostgres},
	"docs/master.md: scp /var/lib/brine/master/master.key m2:/var/lib/brine/master/master.key": {run: runDocCopyMasterKey},
	"docs/master.md: brine key list":                                                           {run: runDocAcceptTinc},
	"docs/master.md: curl -s http://127.0.0.1:9105/metrics | grep '^brine_'":                   {run: runDocMetrics},
	"docs/master.md: brine run '*' -- uptime":                                                  {run: runDocRun},
	"examples/ghost-pro/README.md: brine apply '*' examples/ghost-pro": {skip: "the reference deployment on a master and 4 hosts: " +
		"what brine demo (make demo) does, tested by TestDemo (cmd/brine/internal/demo)"},
	"examples/ghost-pro/README.md: brine apply '*' examples/ghost-pro \\": {skip: "real servers with Debian's nginx, nodejs and mariadb-server and a Ghost install; " +
		"TestDemoReal deploys examples/ghost-pro-real with real Debian packages on systemd testbed hosts"},
	"examples/migrate/README.md: make build": {skip: "the runbook builds bin/brine in the work tree; TestMigrateRunbook (cmd/brine) runs run.sh " +
		"as written with the test's binary as BRINE"},
	"examples/ghost-pro/README.md: brine local plan examples/ghost-pro --group cache":                                       {run: runDocExamplePlan},
	"examples/ghost-pro-real/README.md: printf 'secret \"db_password\" {\\n value = \"example\"\\n}\\n' > /tmp/secrets.hcl": {run: runDocExamplePlan},
}

// docBlock is one shell block of the docs.
type docBlock struct {
	file string // relative to the repository: README.md, docs/cloud.md
	line int    // the line of its opening fence
	text string
	// untagged is set once a block without a language was found to hold commands.
	untagged bool
}

// key is the block's key in docBlockPlan.
func (b docBlock) key() string {
	cmds := splitShell(b.text)
	first := ""
	if len(cmds) > 0 {
		first = strings.Join(strings.Fields(stripComment(cmds[0])), " ")
	}
	return b.file + ": " + first
}

// shellFence matches the opening fence of a shell block.
var shellFence = regexp.MustCompile("^```(sh|bash|shell|console)\\s*$")

// docBlocks reads the shell blocks of README.md, docs/*.md and examples/*/README.md.
func docBlocks(t *testing.T) []docBlock {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob("../../examples/*/README.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(append([]string{"../../README.md"}, files...), examples...)
	var blocks []docBlock
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(f, "../../")
		var cur *docBlock
		var body []string
		shell := false
		for i, l := range strings.Split(string(data), "\n") {
			switch {
			case cur == nil && strings.HasPrefix(l, "```"):
				cur, body, shell = &docBlock{file: rel, line: i + 1}, nil, shellFence.MatchString(l)
			case cur != nil && strings.HasPrefix(l, "```"):
				cur.text = strings.Join(body, "\n") + "\n"
				if shell {
					blocks = append(blocks, *cur)
				}
				cur = nil
			case cur != nil:
				body = append(body, l)
				// Commands hide in blocks without a language too: make them shell blocks.
				if strings.HasPrefix(l, "brine ") && !shell && !cur.untagged {
					cur.untagged = true
					t.Errorf("%s:%d: a block of commands without a language (%q): open it with ```sh so that it is run, or ```text if it is output", rel, cur.line, l)
				}
			}
		}
		if cur != nil {
			t.Fatalf("%s:%d: shell block never closed", rel, cur.line)
		}
	}
	if len(blocks) == 0 {
		t.Fatal("no shell block found in README.md and docs/*.md")
	}
	return blocks
}

// TestDocBlocksClassified: every shell block of the docs is in docBlockPlan, run or skipped with
// a reason, and every entry of the table is a block of the docs.
func TestDocBlocksClassified(t *testing.T) {
	seen := map[string]string{}
	for _, b := range docBlocks(t) {
		k := b.key()
		if where, dup := seen[k]; dup {
			t.Errorf("%s:%d: two shell blocks are keyed %q (the other at %s): start one with another command", b.file, b.line, k, where)
			continue
		}
		seen[k] = fmt.Sprintf("%s:%d", b.file, b.line)
		p, ok := docBlockPlan[k]
		switch {
		case !ok:
			t.Errorf("%s:%d: shell block %q is neither run nor skipped by a test: add it to docBlockPlan (cmd/brine/docs_test.go) with the test that runs it as written, or the reason it cannot run in a testbed", b.file, b.line, k)
		case (p.run == nil) == (p.skip == ""):
			t.Errorf("docBlockPlan[%q]: give exactly one of run and skip", k)
		}
	}
	for k := range docBlockPlan {
		if _, ok := seen[k]; !ok {
			t.Errorf("docBlockPlan has %q, which no shell block of README.md or docs/*.md starts with", k)
		}
	}
}

// TestDocBlocks runs every block of docBlockPlan that can run, as written, and reports the
// others as skipped with their reason.
func TestDocBlocks(t *testing.T) {
	for _, b := range docBlocks(t) {
		p, ok := docBlockPlan[b.key()]
		if !ok {
			continue // TestDocBlocksClassified says so
		}
		t.Run(fmt.Sprintf("%s:%d", b.file, b.line), func(t *testing.T) {
			if p.skip != "" {
				t.Skip(p.skip)
			}
			if testing.Short() {
				t.Skip("testbed test skipped in -short mode")
			}
			p.run(t, b)
		})
	}
}

// heredocRE finds a here-document's delimiter in a command line.
var heredocRE = regexp.MustCompile(`<<-?\s*(?:'([A-Za-z_]+)'|"([A-Za-z_]+)"|([A-Za-z_]+))`)

// splitShell splits a block into its commands as the shell reads them: a line, with the lines
// of its here-documents and of its backslash continuations. Blank lines and comment lines are
// left out.
func splitShell(text string) []string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var cmds []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		cmd := l
		for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
			i++
			cmd += "\n" + lines[i]
		}
		if m := heredocRE.FindStringSubmatch(stripComment(cmd)); m != nil {
			end := m[1] + m[2] + m[3]
			for i+1 < len(lines) {
				i++
				cmd += "\n" + lines[i]
				if strings.TrimLeft(lines[i], "\t") == end {
					break
				}
			}
		}
		cmds = append(cmds, cmd)
	}
	return cmds
}

// stripComment returns the first line of cmd without its comment (a # that starts a word,
// outside quotes) and without trailing blanks.
func stripComment(cmd string) string {
	line, _, _ := strings.Cut(cmd, "\n")
	var quote rune
	prev := ' '
	for i, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && (prev == ' ' || prev == '\t'):
			return strings.TrimRight(line[:i], " \t")
		}
		prev = r
	}
	return strings.TrimRight(line, " \t")
}

// background says whether a command runs in the background (ends with a single &).
func background(cmd string) bool {
	c := stripComment(cmd)
	return strings.HasSuffix(c, "&") && !strings.HasSuffix(c, "&&")
}

func TestSplitShell(t *testing.T) {
	got := splitShell("# a comment\nbrine master &   # on the master\n\na \\\n  b\ncat > f <<'HCL'\nx # not a comment\nHCL\necho '# quoted' && true # said\n")
	want := []string{"brine master &   # on the master", "a \\\n  b", "cat > f <<'HCL'\nx # not a comment\nHCL", "echo '# quoted' && true # said"}
	if !slices.Equal(got, want) {
		t.Fatalf("splitShell = %q, want %q", got, want)
	}
	if !background(got[0]) || background(got[3]) || background("a && b") {
		t.Fatal("background")
	}
	if c := stripComment(got[3]); c != "echo '# quoted' && true" {
		t.Fatalf("stripComment = %q", c)
	}
}

// docStep is what the test does with one command of a block, in order.
type docStep struct {
	cmd    string            // the command as written starts with this
	on     string            // the shell that runs it ("" the block's first)
	skip   string            // why this command is not run (it would reach past the test)
	daemon bool              // it runs until stopped (a person gives it a terminal): run in the background
	vars   map[string]string // placeholders the docs name (a whole word) and their values
	before func()            // what a person waits for before typing the command
	exit   int               // its exit status (not checked for background commands)
	check  func(out, errOut string)
}

var wordChar = regexp.MustCompile(`[A-Za-z0-9_]`)

// substitute replaces each placeholder of vars in cmd where it is a whole word.
func substitute(cmd string, vars map[string]string) string {
	for k, v := range vars {
		re := regexp.MustCompile(`(^|[^A-Za-z0-9_])` + regexp.QuoteMeta(k) + `($|[^A-Za-z0-9_])`)
		if !wordChar.MatchString(k) {
			re = regexp.MustCompile(regexp.QuoteMeta(k))
			cmd = re.ReplaceAllLiteralString(cmd, v)
			continue
		}
		cmd = re.ReplaceAllStringFunc(cmd, func(m string) string {
			i := strings.Index(m, k)
			return m[:i] + v + m[i+len(k):]
		})
	}
	return cmd
}

// runDocSteps runs the commands of b in order with the shells of sh (by name; "" is first),
// one step each: a step for every command, so that a command added to the block fails the test
// until a step says what it must do.
func runDocSteps(t *testing.T, b docBlock, sh map[string]*docShell, first string, steps []docStep) {
	t.Helper()
	cmds := splitShell(b.text)
	if len(cmds) != len(steps) {
		t.Fatalf("%s:%d has %d commands, the test knows %d: update the steps of the test with the block\n%s", b.file, b.line, len(cmds), len(steps), b.text)
	}
	for i, c := range cmds {
		s := steps[i]
		if !strings.HasPrefix(strings.TrimSpace(c), s.cmd) {
			t.Fatalf("%s:%d: command %d is %q, the test expects %q", b.file, b.line, i+1, c, s.cmd)
		}
		if s.skip != "" {
			t.Logf("not run: %s (%s)", c, s.skip)
			continue
		}
		on := s.on
		if on == "" {
			on = first
		}
		shell := sh[on]
		if s.before != nil {
			s.before()
		}
		run := substitute(c, s.vars)
		if background(c) || s.daemon {
			if !background(c) { // before its comment
				run = stripComment(run) + " &"
			}
			shell.start(run)
			t.Logf("%s$ %s", on, run)
			if s.check != nil {
				s.check("", "")
			}
			continue
		}
		out, errOut, code := shell.run(run)
		t.Logf("%s$ %s\n%s", on, run, firstLines(out+errOut, 30))
		if code != s.exit {
			t.Fatalf("%s:%d: %q exited %d, want %d\nstdout:\n%s\nstderr:\n%s", b.file, b.line, run, code, s.exit, out, errOut)
		}
		if s.check != nil {
			s.check(out, errOut)
		}
	}
}

// docShell is one long-lived /bin/sh that runs a block's commands one after another, as a person
// types them into a terminal: the working directory, exported variables and background jobs
// carry over. Each command's output goes to files, read back when the shell reports its exit
// status on its stdout.
type docShell struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	rcs     chan string
	outDir  string // where the test reads the output files
	shDir   string // the same directory as the shell sees it
	n       int
	bgLogs  []string
	timeout time.Duration
}

// newHostShell starts a shell in host h, in directory dir (made if missing), with the test's
// brine binary installed in the cluster's shared directory and first on PATH.
func newHostShell(t *testing.T, c *testbed.Cluster, h *testbed.Host, dir string) *docShell {
	t.Helper()
	installDocBrine(t, c)
	out := "/tmp/brine-docs-out"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if o, code, err := h.Sh(ctx, "mkdir -p "+out+" "+dir); err != nil || code != 0 {
		t.Fatalf("%s: mkdir: %v %s", h.Name(), err, o)
	}
	cmd := h.Command(context.Background(), "/bin/sh")
	cmd.Env = append(cmd.Env, "PATH="+testbed.HostSharedDir+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "NO_COLOR=1")
	s := &docShell{t: t, name: h.Name(), cmd: cmd, outDir: filepath.Join(h.Root(), out), shDir: out}
	s.begin(dir)
	return s
}

// newMachineShell starts a shell on this machine in a new temporary directory, with the test's
// brine binary first on PATH.
func newMachineShell(t *testing.T, name string) *docShell {
	t.Helper()
	dir, out := t.TempDir(), t.TempDir()
	cmd := exec.Command("/bin/sh")
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(brineBin)+":"+os.Getenv("PATH"), "NO_COLOR=1")
	s := &docShell{t: t, name: name, cmd: cmd, outDir: out, shDir: out}
	s.begin(dir)
	return s
}

func (s *docShell) begin(dir string) {
	t := s.t
	t.Helper()
	s.timeout = 5 * time.Minute
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := s.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = os.Stderr // the shell's own complaints (none expected)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.stdin, s.rcs = stdin, make(chan string)
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rc, ok := strings.CutPrefix(sc.Text(), "::brine-docs-rc "); ok {
				s.rcs <- rc
			}
		}
		close(s.rcs)
		_ = s.cmd.Wait()
		close(exited)
	}()
	// Stop the shell and everything it started in the background, even on failure: SIGTERM to
	// its process group (a daemon's clean shutdown), SIGKILL to what is left.
	t.Cleanup(func() {
		stdin.Close()
		pg := s.cmd.Process.Pid
		_ = syscall.Kill(-pg, syscall.SIGTERM)
		for deadline := time.Now().Add(30 * time.Second); syscall.Kill(-pg, 0) == nil && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(-pg, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			for _, l := range s.bgLogs {
				b, _ := os.ReadFile(filepath.Join(s.outDir, l))
				t.Logf("%s: output of background command %s:\n%s", s.name, l, b)
			}
		}
	})
	s.send(fmt.Sprintf("cd %s || exit 1\necho '::brine-docs-rc 0'\n", shQuote(dir)))
	if rc := s.wait("cd " + dir); rc != "0" {
		t.Fatalf("%s: cd %s: %s", s.name, dir, rc)
	}
}

func (s *docShell) send(script string) {
	if _, err := io.WriteString(s.stdin, script); err != nil {
		s.t.Fatalf("%s: write to shell: %v", s.name, err)
	}
}

func (s *docShell) wait(what string) string {
	s.t.Helper()
	select {
	case rc, ok := <-s.rcs:
		if !ok {
			s.t.Fatalf("%s: the shell exited running %q", s.name, what)
		}
		return rc
	case <-time.After(s.timeout):
		s.t.Fatalf("%s: %q did not end in %s", s.name, what, s.timeout)
		return ""
	}
}

// run runs one command and returns its stdout, stderr and exit status.
func (s *docShell) run(cmd string) (string, string, int) {
	s.t.Helper()
	s.n++
	o, e := fmt.Sprintf("%d.out", s.n), fmt.Sprintf("%d.err", s.n)
	s.send(fmt.Sprintf("{ %s\n} >%s/%s 2>%s/%s </dev/null\necho \"::brine-docs-rc $?\"\n", cmd, s.shDir, o, s.shDir, e))
	rc := s.wait(cmd)
	var code int
	if _, err := fmt.Sscan(rc, &code); err != nil {
		s.t.Fatalf("%s: exit status %q", s.name, rc)
	}
	return s.read(o), s.read(e), code
}

// prepare runs a command of the test's own (what the block supposes was done before), failing
// the test if it fails.
func (s *docShell) prepare(cmd string) {
	s.t.Helper()
	if out, errOut, code := s.run(cmd); code != 0 {
		s.t.Fatalf("%s: %s: exit %d\n%s%s", s.name, cmd, code, out, errOut)
	}
}

// start runs a background command; its output goes to a log, read with bgLog.
func (s *docShell) start(cmd string) string {
	s.t.Helper()
	s.n++
	l := fmt.Sprintf("%d.log", s.n)
	s.send(fmt.Sprintf("{ %s\n} >%s/%s 2>&1 </dev/null\necho \"::brine-docs-rc $?\"\n", cmd, s.shDir, l))
	s.wait(cmd)
	s.bgLogs = append(s.bgLogs, l)
	return l
}

// bgLog returns the output so far of the background command started last.
func (s *docShell) bgLog() string {
	if len(s.bgLogs) == 0 {
		return ""
	}
	return s.read(s.bgLogs[len(s.bgLogs)-1])
}

func (s *docShell) read(name string) string {
	b, err := os.ReadFile(filepath.Join(s.outDir, name))
	if err != nil {
		s.t.Fatalf("%s: %v", s.name, err)
	}
	return string(b)
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// installDocBrine puts the test's brine binary in the cluster's shared directory, which hosts
// have on their PATH (testbed.HostSharedDir).
func installDocBrine(t *testing.T, c *testbed.Cluster) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(c.SharedDir(), "brine")); err != nil {
		copyFile(t, brineBin, filepath.Join(c.SharedDir(), "brine"), 0o755)
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// waitDoc polls cond until it holds, failing the test after d.
func waitDoc(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, d)
		}
	}
}

// hostSh runs script in h for the test's own setup and checks, failing on a non-zero exit.
func hostSh(t *testing.T, h *testbed.Host, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, code, err := h.Sh(ctx, "PATH="+testbed.HostSharedDir+":$PATH; "+script)
	if err != nil || code != 0 {
		t.Fatalf("%s: %s: exit %d, %v\n%s", h.Name(), script, code, err, out)
	}
	return out
}

// hostOK says whether script exits 0 in h.
func hostOK(h *testbed.Host, script string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, code, err := h.Sh(ctx, "PATH="+testbed.HostSharedDir+":$PATH; "+script)
	return err == nil && code == 0
}

// The README's quick start: a master on host mst, a minion on host web1, as a person types them
// on each (the minion's line "on every server", the others on the master).
func runDocQuickStart(t *testing.T, b docBlock) {
	c := testbed.NewT(t, "mst", "web1")
	mst, web1 := c.Host("mst"), c.Host("web1")
	sh := map[string]*docShell{
		"mst":  newHostShell(t, c, mst, "/root/brine"),
		"web1": newHostShell(t, c, web1, "/root/brine"),
	}
	var jid string
	jobVars := map[string]string{}
	jidRE := regexp.MustCompile(`job (\S+) sent to 1 minion`)
	steps := []docStep{
		{cmd: "brine master &"},
		{cmd: "brine minion --master 10.0.0.1 --id web1 &", on: "web1", vars: map[string]string{"10.0.0.1": mst.Addr()}},
		{cmd: "brine key list",
			before: func() { // the minion has presented its key
				waitDoc(t, "pending key of web1", time.Minute, func() bool { return hostOK(mst, "brine key list | grep -q '^pending  *web1 '") })
			},
			check: func(out, _ string) {
				if !regexp.MustCompile(`(?m)^pending\s+web1\s+\S+\s+` + regexp.QuoteMeta(web1.Addr()) + `\s`).MatchString(out) {
					t.Fatalf("key list does not show web1 pending from %s:\n%s", web1.Addr(), out)
				}
			}},
		{cmd: "brine key accept web1 --groups app", check: func(out, _ string) {
			if !strings.HasPrefix(out, "accepted web1\n") || !regexp.MustCompile(`(?m)^\s+groups\s+app$`).MatchString(out) {
				t.Fatalf("accept said:\n%s", out)
			}
		}},
		{cmd: "brine key token create --id web1 --groups app", check: func(out, errOut string) {
			if !regexp.MustCompile(`^brn2-[0-9a-z-]+\n$`).MatchString(out) || !strings.Contains(errOut, "id web1") {
				t.Fatalf("token create said:\n%s%s", out, errOut)
			}
		}},
		{cmd: "brine ping '*'",
			before: func() { // the accepted minion has connected again
				waitDoc(t, "web1 connected", time.Minute, func() bool { return hostOK(mst, "brine status web1 | grep -q '^web1  *connected '") })
			},
			check: func(out, _ string) {
				if out != "web1: pong\n1 minion(s): 1 succeeded, 0 failed, 0 no return\n" {
					t.Fatalf("ping said:\n%s", out)
				}
			}},
		{cmd: "brine apply web1 ./site",
			before: func() { // the bundle the person wrote
				hostSh(t, mst, `mkdir -p /root/brine/site && cat > /root/brine/site/main.hcl <<'HCL'
file "/etc/motd" {
  content = "managed by brine on ${minion.id}\n"
}
HCL`)
			},
			check: func(out, errOut string) {
				if !strings.Contains(out, `~ file["/etc/motd"] changed`) || !strings.HasSuffix(out, "1 minion(s): 1 succeeded, 0 failed, 0 no return\n") {
					t.Fatalf("apply said:\n%s", out)
				}
				m := jidRE.FindStringSubmatch(errOut)
				if m == nil {
					t.Fatalf("apply did not say its job id:\n%s", errOut)
				}
				jid = m[1]
				jobVars["JID"] = jid
				if got := hostSh(t, web1, "cat /etc/motd"); got != "managed by brine on web1\n" {
					t.Fatalf("web1's /etc/motd: %q", got)
				}
			}},
		{cmd: "brine jobs list && brine jobs show JID", vars: jobVars, // JID: what apply said
			check: func(out, _ string) {
				if !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(jid)+`\s+apply\s+web1\s+uid 0\s+site@[0-9a-f]+\s+1 ok$`).MatchString(out) ||
					!strings.Contains(out, `~ file["/etc/motd"] changed`) {
					t.Fatalf("jobs list and show of %s said:\n%s", jid, out)
				}
			}},
		{cmd: "brine facts web1", check: func(out, _ string) {
			var facts map[string]map[string]any
			if err := json.Unmarshal([]byte(out), &facts); err != nil {
				t.Fatalf("facts: %v\n%s", err, out)
			}
			if facts["web1"]["hostname"] != "web1" {
				t.Fatalf("facts of web1 say hostname %v:\n%s", facts["web1"]["hostname"], out)
			}
		}},
	}
	runDocSteps(t, b, sh, "mst", steps)
}

// README's testbed block, on this machine: it makes the cluster "dev" (the default name) and
// removes it. `brine testbed clean` is not run: it removes every cluster on the machine.
func runDocTestbed(t *testing.T, b docBlock) {
	if err := testbed.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	if slices.Contains(testbed.List(), "dev") {
		testbed.SkipUnavailable(t, "a testbed cluster named dev is running on this machine: the block would use it")
	}
	t.Cleanup(func() {
		if left := testbed.Leftovers("dev"); len(left) > 0 {
			t.Errorf("cluster dev left %v", left)
			_ = testbed.Down("dev")
		}
	})
	sh := map[string]*docShell{"": newMachineShell(t, "machine")}
	addrs := map[string]string{}
	hostDev := func(name string) *testbed.Host {
		t.Helper()
		c, err := testbed.Attach("dev")
		if err != nil {
			t.Fatal(err)
		}
		return c.Host(name)
	}
	steps := []docStep{
		{cmd: "brine testbed up 3", check: func(out, _ string) {
			m := regexp.MustCompile(`(?m)^  (h[123]) +(10\.213\.\d+\.\d+)$`).FindAllStringSubmatch(out, -1)
			for _, h := range m {
				addrs[h[1]] = h[2]
			}
			if !strings.HasPrefix(out, "cluster dev: bridge 10.213.") || len(addrs) != 3 {
				t.Fatalf("up said:\n%s", out)
			}
		}},
		{cmd: "brine testbed exec h1 -- ip -4 addr", check: func(out, _ string) {
			if !strings.Contains(out, "inet "+addrs["h1"]+"/24") || strings.Contains(out, addrs["h2"]) {
				t.Fatalf("h1's addresses (want %s):\n%s", addrs["h1"], out)
			}
		}},
		{cmd: "brine testbed exec h2 -- apt-get install -y brine-hello", check: func(string, string) {
			if !hostOK(hostDev("h2"), "dpkg -s brine-hello >/dev/null") || hostOK(hostDev("h1"), "dpkg -s brine-hello >/dev/null 2>&1") {
				t.Fatal("brine-hello is not installed in h2 alone")
			}
		}},
		{cmd: "brine testbed ls", check: func(out, _ string) {
			if !slices.Contains(strings.Split(out, "\n"), "dev") {
				t.Fatalf("ls said:\n%s", out)
			}
		}},
		{cmd: "brine testbed down", check: func(out, _ string) {
			if left := testbed.Leftovers("dev"); len(left) > 0 || slices.Contains(testbed.List(), "dev") {
				t.Fatalf("down left %v", left)
			}
		}},
		{cmd: "brine testbed clean", skip: "it removes every cluster on this machine, those of other tests still running included"},
	}
	runDocSteps(t, b, sh, "", steps)
}

// docs/capture.md: capture host web1 (which holds a private key), plan the capture there, apply
// it on host fresh. The working directory is the cluster's shared directory, so ./web1 and the
// secrets file are in both hosts' working directory.
func runDocCapture(t *testing.T, b docBlock) {
	c := testbed.NewT(t, "web1", "fresh")
	web1, fresh := c.Host("web1"), c.Host("fresh")
	hostSh(t, web1, "mkdir -p /etc/ssl/private && openssl genpkey -algorithm ed25519 -out /etc/ssl/private/site.key 2>&1")
	key := hostSh(t, web1, "cat /etc/ssl/private/site.key")
	dir := testbed.HostSharedDir + "/capture"
	sh := map[string]*docShell{
		"web1":  newHostShell(t, c, web1, dir),
		"fresh": newHostShell(t, c, fresh, dir),
	}
	steps := []docStep{
		{cmd: "brine local capture --out ./web1", check: func(out, _ string) {
			if !strings.HasPrefix(out, "Captured web1 into ./web1 in ") || !strings.Contains(out, " 1 secrets,") ||
				!strings.Contains(out, "secret /etc/ssl/private/site.key: not copied") {
				t.Fatalf("capture said:\n%s", out)
			}
			if strings.Contains(hostSh(t, web1, "cat "+dir+"/web1/*.hcl"), "PRIVATE KEY") {
				t.Fatal("the capture holds the private key")
			}
		}},
		{cmd: "brine local plan ./web1 --secrets-file web1-secrets.hcl",
			before: func() { // the secrets file the person writes, in the format the docs give
				hostSh(t, web1, fmt.Sprintf("cat > %s/web1-secrets.hcl <<'EOF'\nsecret \"/etc/ssl/private/site.key\" {\n  value = <<EOT\n%sEOT\n}\nEOF", dir, key))
			},
			check: func(out, _ string) {
				if !regexp.MustCompile(`(?m)^Planned \d+ resources in \S+: \d+ ok, 0 to change, 0 failed, 0 skipped$`).MatchString(out) {
					t.Fatalf("plan on web1 said:\n%s", out)
				}
			}},
		{cmd: "brine local apply ./web1 --secrets-file web1-secrets.hcl", on: "fresh", check: func(out, _ string) {
			if !regexp.MustCompile(`(?m)^Applied \d+ resources in \S+: \d+ ok, [1-9]\d* changed, 0 failed, 0 skipped$`).MatchString(out) ||
				!strings.Contains(out, `file["/etc/ssl/private/site.key"] changed`) {
				t.Fatalf("apply on fresh said:\n%s", out)
			}
			if got := hostSh(t, fresh, "stat -c %a /etc/ssl/private/site.key && cat /etc/ssl/private/site.key"); got != "600\n"+key {
				t.Fatalf("fresh's key: %q, want web1's", got)
			}
		}},
	}
	runDocSteps(t, b, sh, "web1", steps)
}

// docs/cloud.md's simulator, on this machine: sim in one shell, the other commands in another.
func runDocCloudSim(t *testing.T, b docBlock) {
	sh := map[string]*docShell{"sim": newMachineShell(t, "sim"), "": newMachineShell(t, "cli")}
	vars := map[string]string{}
	steps := []docStep{
		{cmd: "brine cloud sim --boot-delay 2s --domain example.com", on: "sim", daemon: true, check: func(string, string) {
			re := regexp.MustCompile(`(?m)^DigitalOcean API simulator listening on http://127\.0\.0\.1:(\d+)/\nexport DIGITALOCEAN_TOKEN=(\S+)\n`)
			var m []string
			waitDoc(t, "the simulator's address and token", time.Minute, func() bool {
				m = re.FindStringSubmatch(sh["sim"].bgLog())
				return m != nil
			})
			vars["PORT"], vars["..."] = m[1], m[2]
		}},
		{cmd: "export DIGITALOCEAN_TOKEN=...", vars: vars},
		{cmd: "brine cloud list --api-url http://127.0.0.1:PORT/", vars: vars, check: func(out, errOut string) {
			if out != "no droplets\n" {
				t.Fatalf("list said:\n%s%s", out, errOut)
			}
		}},
	}
	runDocSteps(t, b, sh, "", steps)
}

// startDocMinions enrols a minion on each of hosts with a token of groups and waits until the
// master on mst says they are connected.
func startDocMinions(t *testing.T, c *testbed.Cluster, mst *testbed.Host, groups string, hosts ...*testbed.Host) {
	t.Helper()
	bin := testbed.HostSharedDir + "/brine"
	for _, h := range hosts {
		token := strings.TrimSpace(hostSh(t, mst, fmt.Sprintf("%s key token create --id %s --groups %s 2>/dev/null", bin, h.Name(), groups)))
		cfg := fmt.Sprintf("master = %q\nid = %q\ntoken = %q\nheartbeat = \"1s\"\nmax_backoff = \"2s\"\n", mst.Addr(), h.Name(), token)
		hostSh(t, h, "mkdir -p /etc/brine && cat > /etc/brine/minion.hcl <<'EOF'\n"+cfg+"EOF")
		if _, err := h.Start("minion", bin, "minion"); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hosts {
		waitDoc(t, h.Name()+" connected", time.Minute, func() bool { return hostOK(mst, "brine status "+h.Name()+" | grep -q '^"+h.Name()+"  *connected '") })
	}
}

// startDocMaster runs `brine master` on h with master.hcl cfg, and waits for its control socket.
func startDocMaster(t *testing.T, c *testbed.Cluster, h *testbed.Host, cfg string) {
	t.Helper()
	installDocBrine(t, c)
	hostSh(t, h, "mkdir -p /etc/brine && cat > /etc/brine/master.hcl <<'EOF'\n"+cfg+"EOF")
	if _, err := h.Start("master", testbed.HostSharedDir+"/brine", "master"); err != nil {
		t.Fatal(err)
	}
	waitDoc(t, "master's control socket", time.Minute, func() bool { return hostOK(h, "brine key list") })
}

// docs/master.md's metrics block, on the master's host: metrics_addr as the docs set it, one
// minion, one ping.
func runDocMetrics(t *testing.T, b docBlock) {
	c := testbed.NewT(t, "mst", "web1")
	mst := c.Host("mst")
	sh := map[string]*docShell{"mst": newHostShell(t, c, mst, "/root")}
	startDocMaster(t, c, mst, "metrics_addr = \"127.0.0.1:9105\"\n")
	startDocMinions(t, c, mst, "web", c.Host("web1"))
	hostSh(t, mst, "brine ping '*'")
	steps := []docStep{
		{cmd: "curl -s http://127.0.0.1:9105/metrics | grep '^brine_'", check: func(out, _ string) {
			for _, want := range []string{"brine_connected_minions 1\n", `brine_jobs_total{kind="ping",outcome="succeeded"} 1` + "\n",
				`brine_return_latency_seconds_count{kind="ping"} 1` + "\n"} {
				if !strings.Contains(out, want) {
					t.Fatalf("metrics lack %q:\n%s", want, out)
				}
			}
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if !strings.HasPrefix(l, "brine_") {
					t.Fatalf("line %q", l)
				}
			}
		}},
	}
	runDocSteps(t, b, sh, "mst", steps)
}

// docs/master.md's run block: three minions on systemd hosts in group web, each running a
// service named nginx (a sleep stands in for the daemon: the block asks systemd about the unit).
func runDocRun(t *testing.T, b docBlock) {
	c := testbed.NewSystemdT(t, "mst", "web1", "web2", "web3")
	mst := c.Host("mst")
	sh := map[string]*docShell{"mst": newHostShell(t, c, mst, "/root")}
	startDocMaster(t, c, mst, "")
	webs := []*testbed.Host{c.Host("web1"), c.Host("web2"), c.Host("web3")}
	for _, h := range webs {
		hostSh(t, h, "printf '[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/nginx.service && systemctl enable --now nginx 2>&1")
	}
	startDocMinions(t, c, mst, "web", webs...)
	steps := []docStep{
		{cmd: "brine run '*' -- uptime", check: func(out, _ string) {
			for _, h := range webs {
				if !regexp.MustCompile(`(?m)^` + h.Name() + `: exit 0 \(.*\)\n.* load average: `).MatchString(out) {
					t.Fatalf("run uptime said nothing of %s:\n%s", h.Name(), out)
				}
			}
		}},
		{cmd: "brine run 'group:web' --timeout 30s --batch 2 -- 'systemctl is-active nginx'", check: func(out, _ string) {
			for _, h := range webs {
				if !regexp.MustCompile(`(?m)^` + h.Name() + `: exit 0 \(.*\)\n\s*active$`).MatchString(out) {
					t.Fatalf("run is-active said nothing of %s:\n%s", h.Name(), out)
				}
			}
		}},
	}
	runDocSteps(t, b, sh, "mst", steps)
}

// docs/cloud.md's `--boot testbed` block, on this machine as written: the simulator in one shell,
// the rest in another, a master on the default ports with its data in /tmp/brine-sim-master.
func runDocCloudBoot(t *testing.T, b docBlock) {
	if err := testbed.SystemdAvailable(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	const cluster, dataDir = "sim1", "/tmp/brine-sim-master"
	if slices.Contains(testbed.List(), cluster) {
		testbed.SkipUnavailable(t, "a testbed cluster named "+cluster+" is running on this machine: the block would use it")
	}
	if _, err := os.Stat(dataDir); err == nil {
		testbed.SkipUnavailable(t, dataDir+" exists on this machine: the block's master would use it")
	}
	for _, port := range []string{"4505", "4506"} { // the block's master listens on the default ports
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			testbed.SkipUnavailable(t, "port "+port+" is taken on this machine: the block's master could not listen: "+err.Error())
		}
		ln.Close()
	}
	t.Cleanup(func() {
		os.RemoveAll(dataDir)
		if left := testbed.Leftovers(cluster); len(left) > 0 {
			t.Errorf("the simulator left %v", left)
			_ = testbed.Down(cluster)
		}
	})
	sh := map[string]*docShell{"sim": newMachineShell(t, "sim"), "": newMachineShell(t, "cli")}
	sh["sim"].timeout = 10 * time.Minute
	vars := map[string]string{}
	steps := []docStep{
		{cmd: "brine cloud sim --boot testbed --boot-delay 0s --cluster sim1", on: "sim", daemon: true, check: func(string, string) {
			re := regexp.MustCompile(`(?s)^DigitalOcean API simulator listening on (http://127\.0\.0\.1:\d+/)\nexport DIGITALOCEAN_TOKEN=(\S+)\n.* they reach this machine at (10\.213\.\d+\.1),`)
			var m []string
			waitDoc(t, "the simulator's address, token and bridge", 2*time.Minute, func() bool {
				m = re.FindStringSubmatch(sh["sim"].bgLog())
				return m != nil
			})
			vars["URL"], vars["TOKEN"], vars["BRIDGE"] = m[1], m[2], m[3]
		}},
		{cmd: "mkdir -p app"},
		{cmd: "printf 'data_dir = \"/tmp/brine-sim-master\"", vars: vars},
		{cmd: "printf 'file \"/etc/motd\""},
		{cmd: "cat > cloud.hcl <<'HCL'", vars: vars},
		{cmd: "brine master -c master.hcl &"},
		{cmd: "DIGITALOCEAN_TOKEN=TOKEN brine cloud create app web-1 --master-config master.hcl", vars: vars,
			before: func() { // the master is up
				waitDoc(t, "the master's control socket", time.Minute, func() bool {
					_, _, code := brine(t, "key", "list", "--socket", dataDir+"/master.sock")
					return code == 0
				})
			},
			check: func(out, errOut string) {
				if !strings.Contains(out, "1 droplet(s) converged") {
					t.Fatalf("create said:\n%s%s", out, errOut)
				}
			}},
		{cmd: "brine testbed exec --name sim1 web-1 -- systemctl status brine-minion", check: func(out, _ string) {
			if !regexp.MustCompile(`(?m)^\s+Active: active \(running\)`).MatchString(out) {
				t.Fatalf("status said:\n%s", out)
			}
			c, err := testbed.Attach(cluster)
			if err != nil {
				t.Fatal(err)
			}
			if got := hostSh(t, c.Host("web-1"), "cat /etc/motd"); got != "converged by brine\n" {
				t.Fatalf("web-1's motd: %q", got)
			}
		}},
	}
	runDocSteps(t, b, sh, "", steps)
}

// firstLines returns the first n lines of s, saying how many more there were.
func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n+1 {
		return s
	}
	return strings.Join(lines[:n], "") + fmt.Sprintf("[%d more lines]\n", len(lines)-n-1)
}

// docs/master.md's PostgreSQL block, on a systemd host running this machine's PostgreSQL server
// (the host's copy of its cluster: what it writes stays in the host).
func runDocPostgres(t *testing.T, b docBlock) {
	if _, err := os.Stat("/usr/bin/pg_lsclusters"); err != nil {
		testbed.SkipUnavailable(t, "PostgreSQL is not installed on this machine (postgresql-common): "+err.Error())
	}
	c := testbed.NewSystemdT(t, "db")
	db := c.Host("db")
	hostSh(t, db, "systemctl start postgresql 2>&1 && pg_lsclusters -h | grep -q online")
	sh := map[string]*docShell{"db": newHostShell(t, c, db, "/tmp")} // a directory user postgres may enter
	steps := []docStep{
		{cmd: "runuser -u postgres -- createuser brine"},
		{cmd: "runuser -u postgres -- createdb -O brine brine", check: func(string, string) {
			got := hostSh(t, db, `runuser -u postgres -- psql -tAc "select datname, pg_get_userbyid(datdba) from pg_database where datname = 'brine'"`)
			if got != "brine|brine\n" {
				t.Fatalf("database brine and its owner: %q", got)
			}
		}},
	}
	runDocSteps(t, b, sh, "db", steps)
}

// docs/master.md's accept-tinc block: minion web1 reports the key of its tinc network ghost, the
// master pins it; the key is made anew and the minion restarted, so that it reports another.
func runDocAcceptTinc(t *testing.T, b docBlock) {
	if _, err := exec.LookPath("tincd"); err != nil {
		testbed.SkipUnavailable(t, "no tincd: "+err.Error())
	}
	c := testbed.NewT(t, "mst", "web1")
	mst, web1 := c.Host("mst"), c.Host("web1")
	sh := map[string]*docShell{"mst": newHostShell(t, c, mst, "/root")}
	newKey := "rm -f /etc/tinc/ghost/rsa_key.priv /etc/tinc/ghost/hosts/web1 && tincd -n ghost -K 2048 </dev/null 2>&1 && cat /etc/tinc/ghost/hosts/web1"
	hostSh(t, web1, "mkdir -p /etc/tinc/ghost/hosts && echo 'Name = web1' > /etc/tinc/ghost/tinc.conf")
	first := hostSh(t, web1, newKey)
	startDocMaster(t, c, mst, "")
	startDocMinions(t, c, mst, "app", web1)
	waitDoc(t, "web1's tinc key pinned", time.Minute, func() bool {
		return hostOK(mst, "brine facts web1 | grep -q 'BEGIN RSA PUBLIC KEY'")
	})
	second := hostSh(t, web1, newKey)
	if first == second {
		t.Fatal("tincd made the same key twice")
	}
	d := web1.Daemons()[0]
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	pending := regexp.MustCompile(`(?m)^\s+tinc key changed \(ghost\): brine key accept-tinc web1$`)
	steps := []docStep{
		{cmd: "brine key list",
			before: func() { // the restarted minion has reported its new key
				waitDoc(t, "the changed key reported", time.Minute, func() bool { return hostOK(mst, "brine key list | grep -q 'tinc key changed'") })
			},
			check: func(out, _ string) {
				if !pending.MatchString(out) {
					t.Fatalf("key list said:\n%s", out)
				}
			}},
		{cmd: "brine key accept-tinc web1", check: func(out, errOut string) {
			if out != "accepted the tinc key of web1\n" {
				t.Fatalf("accept-tinc said:\n%s%s", out, errOut)
			}
			if list := hostSh(t, mst, "brine key list"); pending.MatchString(list) || !strings.Contains(list, "accepted  web1") {
				t.Fatalf("key list after accept-tinc:\n%s", list)
			}
		}},
	}
	runDocSteps(t, b, sh, "mst", steps)
}

// docs/master.md's copy of the master key, from host m1 (whose master has started once) to host
// m2 (not started yet), over Debian's sshd on m2 with root's key of m1 in its authorized_keys.
// m2's master then starts with m1's identity.
func runDocCopyMasterKey(t *testing.T, b docBlock) {
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		testbed.SkipUnavailable(t, "no sshd (openssh-server): "+err.Error())
	}
	c := testbed.NewSystemdT(t, "m1", "m2")
	m1, m2 := c.Host("m1"), c.Host("m2")
	startDocMaster(t, c, m1, "")
	finger := hostSh(t, m1, "brine key finger | head -n 1")
	if !strings.HasPrefix(finger, "master ") {
		t.Fatalf("key finger said %q", finger)
	}
	pub := hostSh(t, m1, "mkdir -p -m 0700 /root/.ssh && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 && cat /root/.ssh/id_ed25519.pub")
	hostKey := hostSh(t, m2, "set -e\nrm -f /etc/ssh/ssh_host_*\nssh-keygen -A >/dev/null\nmkdir -p -m 0700 /root/.ssh /var/lib/brine/master\n"+
		"printf '%s' '"+pub+"' > /root/.ssh/authorized_keys\nsystemctl start ssh.service\ncut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub")
	// m1 knows m2 by name, and m2's host key (checked out of band).
	hostSh(t, m1, fmt.Sprintf("echo '%s m2' >> /etc/hosts && echo 'm2 %s' >> /root/.ssh/known_hosts", m2.Addr(), strings.TrimSpace(hostKey)))
	sh := map[string]*docShell{"m1": newHostShell(t, c, m1, "/root")}
	steps := []docStep{
		{cmd: "scp /var/lib/brine/master/master.key m2:/var/lib/brine/master/master.key", check: func(string, string) {
			if a, b := hostSh(t, m1, "sha256sum /var/lib/brine/master/master.key"), hostSh(t, m2, "stat -c %a /var/lib/brine/master/master.key && sha256sum /var/lib/brine/master/master.key"); "600\n"+a != b {
				t.Fatalf("m2's key %q, m1's %q", b, a)
			}
			startDocMaster(t, c, m2, "")
			if got := hostSh(t, m2, "brine key finger | head -n 1"); got != finger {
				t.Fatalf("m2's master is %q, m1's %q", got, finger)
			}
		}},
	}
	runDocSteps(t, b, sh, "m1", steps)
}

// docs/master.md's opening block: a master on host mst, a minion on host web1 (its id is its
// host name), in separate terminals.
func runDocMasterIntro(t *testing.T, b docBlock) {
	c := testbed.NewT(t, "mst", "web1")
	mst, web1 := c.Host("mst"), c.Host("web1")
	sh := map[string]*docShell{
		"mst":  newHostShell(t, c, mst, "/root"),
		"web1": newHostShell(t, c, web1, "/root"),
	}
	jobVars := map[string]string{}
	steps := []docStep{
		{cmd: "brine master", daemon: true},
		{cmd: "brine minion --master 10.0.0.1", on: "web1", daemon: true, vars: map[string]string{"10.0.0.1": mst.Addr()}},
		{cmd: "brine key list",
			before: func() {
				waitDoc(t, "pending key of web1", time.Minute, func() bool { return hostOK(mst, "brine key list | grep -q '^pending  *web1 '") })
			},
			check: func(out, _ string) {
				if !regexp.MustCompile(`(?m)^pending\s+web1\s+\S+\s+` + regexp.QuoteMeta(web1.Addr()) + `\s`).MatchString(out) {
					t.Fatalf("key list does not show web1 pending from %s:\n%s", web1.Addr(), out)
				}
			}},
		{cmd: "brine key accept web1 --groups app", check: func(out, _ string) {
			if !strings.HasPrefix(out, "accepted web1\n  finger  ") {
				t.Fatalf("accept said:\n%s", out)
			}
		}},
		{cmd: "brine ping 'group:app'",
			before: func() {
				waitDoc(t, "web1 connected", time.Minute, func() bool { return hostOK(mst, "brine status web1 | grep -q '^web1  *connected '") })
			},
			check: func(out, _ string) {
				if out != "web1: pong\n1 minion(s): 1 succeeded, 0 failed, 0 no return\n" {
					t.Fatalf("ping said:\n%s", out)
				}
			}},
		{cmd: "brine apply 'group:app' ./states/app",
			before: func() {
				hostSh(t, mst, "mkdir -p /root/states/app && printf 'file \"/etc/motd\" {\\n  content = \"app\\\\n\"\\n}\\n' > /root/states/app/main.hcl")
			},
			check: func(out, errOut string) {
				m := regexp.MustCompile(`job (\S+) sent to 1 minion`).FindStringSubmatch(errOut)
				if m == nil || !strings.HasSuffix(out, "1 minion(s): 1 succeeded, 0 failed, 0 no return\n") {
					t.Fatalf("apply said:\n%s%s", out, errOut)
				}
				jobVars["JID"] = m[1]
				if got := hostSh(t, web1, "cat /etc/motd"); got != "app\n" {
					t.Fatalf("web1's /etc/motd: %q", got)
				}
			}},
		{cmd: "brine jobs list; brine jobs show JID", vars: jobVars, check: func(out, _ string) {
			if !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(jobVars["JID"])+`\s+apply\s+group:app\s+uid 0\s+app@`).MatchString(out) ||
				!strings.Contains(out, `~ file["/etc/motd"] changed`) {
				t.Fatalf("jobs list and show said:\n%s", out)
			}
		}},
		{cmd: "brine facts 'group:app'", check: func(out, _ string) {
			var facts map[string]map[string]any
			if err := json.Unmarshal([]byte(out), &facts); err != nil || len(facts) != 1 || facts["web1"]["hostname"] != "web1" {
				t.Fatalf("facts: %v\n%s", err, out)
			}
		}},
	}
	runDocSteps(t, b, sh, "mst", steps)
}

// The examples' `brine local plan` blocks, on a testbed host (no master, nothing applied), in a
// copy of the repository's examples/ under the directory where the blocks' paths start (the
// repository itself may sit where the host does not see it: its /tmp is its own).
func runDocExamplePlan(t *testing.T, b docBlock) {
	c := testbed.NewT(t, "h1")
	const top = "/srv/brine-docs"
	if err := os.MkdirAll(filepath.Join(c.Host("h1").Root(), top), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", "../../examples", filepath.Join(c.Host("h1").Root(), top)).CombinedOutput(); err != nil {
		t.Fatalf("copy examples: %v %s", err, out)
	}
	sh := map[string]*docShell{"h1": newHostShell(t, c, c.Host("h1"), top)}
	planned := regexp.MustCompile(`(?m)^Planned \d+ resources in \S+: \d+ ok, [1-9]\d* to change, (\d+) failed, \d+ skipped$`)
	var steps []docStep
	switch b.file {
	case "examples/ghost-pro/README.md":
		// Its defaults name the stand-in packages of the testbed's apt repository.
		repo, err := testbed.DefaultAptRepo()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.EnableApt(ctx, repo); err != nil {
			t.Fatal(err)
		}
		steps = []docStep{{cmd: "brine local plan examples/ghost-pro --group cache", check: func(out, _ string) {
			if m := planned.FindStringSubmatch(out); m == nil || m[1] != "0" || !strings.Contains(out, "~ package.proxy would change") {
				t.Fatalf("plan said:\n%s", out)
			}
		}}}
	case "examples/ghost-pro-real/README.md":
		steps = []docStep{
			{cmd: "printf 'secret \"db_password\""},
			// The README says so: without the packages, the host's checks fail and the plan exits 2.
			{cmd: "brine local plan examples/ghost-pro-real --group db --secrets-file /tmp/secrets.hcl", exit: 2, check: func(out, _ string) {
				if m := planned.FindStringSubmatch(out); m == nil || m[1] == "0" || !strings.Contains(out, "package.mariadb-server failed") {
					t.Fatalf("plan said:\n%s", out)
				}
			}},
		}
	default:
		t.Fatalf("no steps for %s", b.file)
	}
	runDocSteps(t, b, sh, "h1", steps)
}

// docs/capture.md's site capture: minions legacy1 and legacy2 capture themselves through the
// master, whose CLI writes the site, which a dry-run converge finds applied.
func runDocCaptureSite(t *testing.T, b docBlock) {
	c := testbed.NewT(t, "mst", "legacy1", "legacy2")
	mst := c.Host("mst")
	startDocMaster(t, c, mst, "")
	startDocMinions(t, c, mst, "legacy", c.Host("legacy1"), c.Host("legacy2"))
	hostSh(t, c.Host("legacy2"), "echo 'legacy2 only' > /etc/legacy2.conf")
	sh := map[string]*docShell{"mst": newHostShell(t, c, mst, "/root")}
	steps := []docStep{
		{cmd: "brine capture 'legacy*' --out ./site", check: func(out, errOut string) {
			site := hostSh(t, mst, "cd /root/site && cat site.hcl && ls -d common legacy1 legacy2 && grep -l legacy2.conf */files.hcl")
			if !strings.Contains(site, `assign "legacy1,legacy2" { bundles = ["common"] }`) || !strings.HasSuffix(site, "common\nlegacy1\nlegacy2\nlegacy2/files.hcl\n") {
				t.Fatalf("the site written:\n%s\ncapture said:\n%s%s", site, out, errOut)
			}
		}},
		{cmd: "brine converge 'legacy*' --site ./site --dry-run", check: func(out, _ string) {
			for _, h := range []string{"legacy1", "legacy2"} {
				if !regexp.MustCompile(`(?m)^` + h + `:\n(\s.*\n)*\s+Planned \d+ resources in \S+: \d+ ok, 0 to change, 0 failed`).MatchString(out) {
					t.Fatalf("converge --dry-run of %s:\n%s", h, out)
				}
			}
		}},
	}
	runDocSteps(t, b, sh, "mst", steps)
}

// docs/capture.md's capture into an existing site: /etc/brine/states on the master has a group
// pair (by id and by fact) and an assign of its own; legacy1 and legacy2 share a file legacy3
// lacks, which only the site's group makes shared: it lands in group-pair, the site's text
// stays first in the site.hcl written, and the dry-run converge finds all three applied.
func runDocCaptureJoinSite(t *testing.T, b docBlock) {
	c := testbed.NewT(t, "mst", "legacy1", "legacy2", "legacy3")
	mst := c.Host("mst")
	startDocMaster(t, c, mst, "")
	startDocMinions(t, c, mst, "legacy", c.Host("legacy1"), c.Host("legacy2"), c.Host("legacy3"))
	for _, h := range []string{"legacy1", "legacy2"} {
		hostSh(t, c.Host(h), "echo 'the pair' > /etc/pair.conf")
	}
	siteText := "group \"pair\" { target = \"legacy1 or fact:id=legacy2\" }\n\nassign \"group:pair\" { bundles = [\"base\"] }\n"
	hostSh(t, mst, "mkdir -p /etc/brine/states/base && cat > /etc/brine/states/site.hcl <<'EOF'\n"+siteText+"EOF\n"+
		"printf '# Nothing yet.\\n' > /etc/brine/states/base/main.hcl")
	sh := map[string]*docShell{"mst": newHostShell(t, c, mst, "/root")}
	steps := []docStep{
		{cmd: "brine capture 'legacy*' --site /etc/brine/states --out ./states-new", check: func(out, errOut string) {
			site := hostSh(t, mst, "cd /root/states-new && cat site.hcl && ls -d base common group-pair legacy1 legacy2 legacy3 && grep -l pair.conf */files.hcl")
			if !strings.HasPrefix(site, siteText) || !strings.Contains(site, `assign "legacy1,legacy2" { bundles = ["group-pair"] }`) ||
				!strings.HasSuffix(site, "base\ncommon\ngroup-pair\nlegacy1\nlegacy2\nlegacy3\ngroup-pair/files.hcl\n") {
				t.Fatalf("the site written:\n%s\ncapture said:\n%s%s", site, out, errOut)
			}
		}},
		{cmd: "brine converge 'legacy*' --site ./states-new --dry-run", check: func(out, _ string) {
			for _, h := range []string{"legacy1", "legacy2", "legacy3"} {
				if !regexp.MustCompile(`(?m)^` + h + `:\n(\s.*\n)*\s+Planned \d+ resources in \S+: \d+ ok, 0 to change, 0 failed`).MatchString(out) {
					t.Fatalf("converge --dry-run of %s:\n%s", h, out)
				}
			}
		}},
	}
	runDocSteps(t, b, sh, "mst", steps)
}

// docs/capture.md's enrolment over SSH: three systemd hosts running Debian's sshd stand for
// 10.0.0.5, 10.0.0.6 (sshd on port 2222) and 10.0.0.7; root's key on the master's host is in
// their authorized_keys, as the block supposes.
func runDocEnroll(t *testing.T, b docBlock) {
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		testbed.SkipUnavailable(t, "no sshd (openssh-server): "+err.Error())
	}
	c := testbed.NewSystemdT(t, "mst", "old5", "old6", "old7")
	mst, old5, old6, old7 := c.Host("mst"), c.Host("old5"), c.Host("old6"), c.Host("old7")
	startDocMaster(t, c, mst, fmt.Sprintf("bootstrap_addr = \"%s:4580\"\n", mst.Addr())) // enroll needs it
	pub := hostSh(t, mst, "mkdir -p -m 0700 /root/.ssh && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 && cat /root/.ssh/id_ed25519.pub")
	for _, h := range []*testbed.Host{old5, old6, old7} {
		port := ""
		if h == old6 {
			port = "echo 'Port 2222' > /etc/ssh/sshd_config.d/port.conf\n"
		}
		hostSh(t, h, "set -e\nrm -f /etc/ssh/ssh_host_*\nssh-keygen -A >/dev/null\n"+port+
			"mkdir -p -m 0700 /root/.ssh\nprintf '%s' '"+pub+"' > /root/.ssh/authorized_keys\nsystemctl start ssh.service")
	}
	finger := strings.Fields(hostSh(t, old7, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"))[1]
	addrs := map[string]string{"10.0.0.5": old5.Addr(), "10.0.0.6": old6.Addr(), "10.0.0.7": old7.Addr()}
	sh := map[string]*docShell{"mst": newHostShell(t, c, mst, "/root")}
	// The block authenticates with --identity on one line and with the ssh-agent on the other.
	sh["mst"].prepare(`eval "$(ssh-agent -s)" && ssh-add -q`)
	steps := []docStep{
		{cmd: "ssh-keyscan -t ed25519 10.0.0.5 >> ~/.ssh/known_hosts", vars: addrs, check: func(string, string) {
			if kh := hostSh(t, mst, "cat /root/.ssh/known_hosts"); !strings.HasPrefix(kh, old5.Addr()+" ssh-ed25519 ") {
				t.Fatalf("known_hosts: %q", kh)
			}
		}},
		{cmd: "ssh-keyscan -t ed25519 -p 2222 10.0.0.6 >> ~/.ssh/known_hosts", vars: addrs},
		{cmd: "brine enroll ssh://root@10.0.0.5 ssh://root@10.0.0.6:2222 --groups legacy", vars: addrs, check: func(out, _ string) {
			if !strings.Contains(out, "enrolled old5 ") || !strings.Contains(out, "enrolled old6 ") || !strings.Contains(out, "2 enrolled, 0 failed") {
				t.Fatalf("enroll said:\n%s", out)
			}
		}},
		{cmd: "brine enroll 'ssh://root@10.0.0.7?id=db1' --host-key-fingerprint SHA256:... --identity ~/.ssh/id_ed25519",
			vars: map[string]string{"10.0.0.7": old7.Addr(), "SHA256:...": finger}, check: func(out, _ string) {
				if !strings.Contains(out, "enrolled db1 ") || !strings.Contains(out, "1 enrolled, 0 failed") {
					t.Fatalf("enroll said:\n%s", out)
				}
			}},
		{cmd: "brine ping group:legacy", check: func(out, _ string) {
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			slices.Sort(lines) // in the order the returns came
			if !slices.Equal(lines, []string{"2 minion(s): 2 succeeded, 0 failed, 0 no return", "old5: pong", "old6: pong"}) {
				t.Fatalf("ping said:\n%s", out)
			}
		}},
	}
	runDocSteps(t, b, sh, "mst", steps)
}

// A docShell keeps the working directory and exported variables from one command to the next,
// reports each command's exit status and output apart, and runs heredocs and background jobs.
func TestDocShell(t *testing.T) {
	s := newMachineShell(t, "test")
	for _, c := range []struct {
		cmd      string
		out, err string
		code     int
	}{
		{cmd: "mkdir -p sub && cd sub # a comment"},
		{cmd: "export X=carried"},
		{cmd: "cat > f <<'EOF'\n$X stays\nEOF"},
		{cmd: `echo "$X" "$(basename "$PWD")"; cat f; echo oops >&2`, out: "carried sub\n$X stays\n", err: "oops\n"},
		{cmd: "false", code: 1},
	} {
		out, errOut, code := s.run(c.cmd)
		if out != c.out || errOut != c.err || code != c.code {
			t.Fatalf("%q: stdout %q stderr %q exit %d, want %q %q %d", c.cmd, out, errOut, code, c.out, c.err, c.code)
		}
	}
	log := s.start("echo started; sleep 600 &")
	waitDoc(t, "the background job's output", time.Minute, func() bool { return s.read(log) == "started\n" })
}
