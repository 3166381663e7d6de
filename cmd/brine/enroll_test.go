package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/brinecm/brine/enroll"
	"github.com/brinecm/brine/testbed"
)

// startSSHD gives h fresh host keys of its own (the lower layer holds the machine's), lets
// clientKey in as root and starts the real sshd (Debian's ssh.service); it returns h's
// ed25519 host key, read out of band as an operator would.
func startSSHD(t testing.TB, h *testbed.Host, clientKey ssh.PublicKey) ssh.PublicKey {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := fmt.Sprintf(`set -e
rm -f /etc/ssh/ssh_host_*
ssh-keygen -A >/dev/null
mkdir -p /root/.ssh && chmod 0700 /root/.ssh
printf '%%s\n' %q > /root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys
systemctl start ssh.service
cat /etc/ssh/ssh_host_ed25519_key.pub`, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(clientKey))))
	out, code, err := h.Sh(ctx, script)
	if err != nil || code != 0 {
		t.Fatalf("sshd in %s: exit %d %v\n%s", h.Name(), code, err, out)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out))
	if err != nil {
		t.Fatalf("host key of %s: %v: %q", h.Name(), err, out)
	}
	return k
}

// The enrol test, for real: a real master in testbed host "mst", two systemd hosts
// running Debian's sshd that brine never touched. A server whose host key differs from
// known_hosts, one absent from it and one with the wrong fingerprint are refused, and nothing
// reaches them (no binary, no minion.hcl, no key on the master). The right key enrols old1:
// the binary is installed with its sha256, minion.hcl is 0600, the unit runs, `brine ping`
// answers, and the token is in no output. Enrolling it again (through ssh-agent) is refused:
// its key is accepted.
func TestEnrollOverSSH(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	c := testbed.NewSystemdT(t, "mst", "old1", "old2")
	mst, sock := startTestbedMaster(t, c, c.Host("mst"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	identity, clientKey := clientIdentity(t)
	dir := filepath.Dir(identity)
	old1, old2 := c.Host("old1"), c.Host("old2")
	key1 := startSSHD(t, old1, clientKey)
	key2 := startSSHD(t, old2, clientKey)
	if ssh.FingerprintSHA256(key1) == ssh.FingerprintSHA256(key2) {
		t.Fatal("the two hosts share a host key: the mismatch below would prove nothing")
	}
	addr1, addr2 := old1.Addr()+":22", old2.Addr()+":22"
	// known_hosts: old1 with its own key, old2 with old1's (a server that changed, or a man in
	// the middle).
	kh := filepath.Join(dir, "known_hosts")
	lines := knownhosts.Line([]string{addr1}, key1) + "\n" + knownhosts.Line([]string{addr2}, key1) + "\n"
	if err := os.WriteFile(kh, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	onlyOld1 := filepath.Join(dir, "known_hosts.1")
	if err := os.WriteFile(onlyOld1, []byte(knownhosts.Line([]string{addr1}, key1)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// No --binary: enroll sends brine-minion from beside its own binary (minionBin).
	common := []string{"--socket", sock, "--identity", identity, "--groups", "legacy",
		"--connect-timeout", "10s", "--command-timeout", "1m", "--enroll-timeout", "1m"}
	untouched := func(why string) {
		t.Helper()
		out, _, _ := old2.Sh(ctx, "ls /usr/bin/brine /usr/bin/brine-minion /usr/bin/.brine* /etc/brine/minion.hcl /etc/systemd/system/brine-minion.service 2>/dev/null; true")
		if strings.TrimSpace(out) != "" {
			t.Fatalf("%s: something reached old2:\n%s", why, out)
		}
		keys, _, _ := brine(t, "key", "list", "--socket", sock)
		if strings.Contains(keys, "old2") {
			t.Fatalf("%s: old2 has a key on the master:\n%s", why, keys)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"mismatch", []string{"ssh://root@" + old2.Addr(), "--known-hosts", kh}, "does not match " + kh + ":2"},
		{"unknown", []string{"ssh://root@" + old2.Addr(), "--known-hosts", onlyOld1}, "is not in " + onlyOld1},
		{"fingerprint", []string{"ssh://root@" + old2.Addr(), "--host-key-fingerprint", ssh.FingerprintSHA256(key1)}, "want " + ssh.FingerprintSHA256(key1)},
	} {
		out, stderr, code := brine(t, append(append([]string{"enroll"}, tc.args...), common...)...)
		if code != 2 || !strings.Contains(out, "FAILED") || !strings.Contains(out, "host key verification failed") || !strings.Contains(out, tc.want) {
			t.Fatalf("%s: exit %d, want 2 and %q\n%s%s", tc.name, code, tc.want, out, stderr)
		}
		untouched(tc.name)
	}

	// Both at once: old1 (the right key) enrols, in group legacy, and answers a ping; old2 (a
	// changed key) fails on its own line, untouched, and the exit status says so.
	out, stderr, code := brine(t, append([]string{"enroll", "ssh://root@" + old1.Addr(), "ssh://root@" + old2.Addr(), "--known-hosts", kh, "--json"}, common...)...)
	var res enroll.Result
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r enroll.Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("enroll --json: %v: %q", err, line)
		}
		if r.Target == "ssh://root@"+old1.Addr() {
			res = r
		} else if r.OK || r.Stage != enroll.StageConnect || !strings.Contains(r.Error, "host key verification failed") {
			t.Fatalf("old2 in the same run: %+v", r)
		}
	}
	untouched("in a run with old1")
	if code != 2 || !res.OK || res.ID != "old1" || !res.Uploaded || res.Stage != enroll.StageEnrolled {
		s, _, _ := old1.Sh(ctx, "journalctl -u brine-minion --no-pager -n 30")
		t.Fatalf("enroll old1: exit %d\n%s%s\nminion:\n%s\nmaster:\n%s", code, out, stderr, s, mst.Log())
	}
	t.Logf("enrolled old1 in %s: %v", res.Duration, res.Stages)
	got, _, err := old1.Sh(ctx, "sha256sum /usr/bin/brine-minion | cut -d' ' -f1; stat -c %a /etc/brine/minion.hcl; systemctl is-active brine-minion; systemctl is-enabled brine-minion; grep -c token /etc/brine/minion.hcl")
	want := fileSHA(t, minionBin) + "\n600\nactive\nenabled\n1\n"
	if err != nil || got != want {
		t.Fatalf("old1 after enroll: %q, want %q (%v)", got, want, err)
	}
	tok, _, _ := old1.Sh(ctx, `sed -n 's/^token *= *"\(.*\)"$/\1/p' /etc/brine/minion.hcl`)
	if tok = strings.TrimSpace(tok); tok == "" || strings.Contains(out+stderr+mst.Log(), tok) {
		t.Fatalf("the token is missing from minion.hcl or shows in the output or the master's log (%q)", tok)
	}
	out, stderr, code = brine(t, "ping", "group:legacy", "--socket", sock, "--timeout", "30s")
	if code != 0 || !strings.Contains(out, "old1") {
		t.Fatalf("ping group:legacy: exit %d\n%s%s", code, out, stderr)
	}

	// Again, authenticating through a real ssh-agent this time (no --identity): the master has
	// old1's key accepted, so a token could not replace it: refused after the login, before any
	// upload, and the minion keeps running.
	agentSock := filepath.Join(dir, "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", agentSock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	t.Setenv("SSH_AUTH_SOCK", agentSock)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if o, err := exec.Command("ssh-add", identity).CombinedOutput(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("ssh-add: %v %s", err, o)
		}
	}
	out, _, code = brine(t, "enroll", "ssh://root@"+old1.Addr(), "--known-hosts", kh, "--socket", sock, "--binary", brineBin)
	if code != 2 || !strings.Contains(out, "at token") || !strings.Contains(out, "already has a key for old1 (accepted)") {
		t.Fatalf("second enroll of old1: exit %d\n%s", code, out)
	}
	if got, _, _ := old1.Sh(ctx, "systemctl is-active brine-minion"); got != "active\n" {
		t.Fatalf("the minion of old1 after the refused enroll: %q", got)
	}
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// clientIdentity writes a fresh unencrypted ed25519 key for --identity into a temp dir.
func clientIdentity(t testing.TB) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	identity := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(identity, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	clientKey, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return identity, clientKey
}

// BenchmarkEnrollTestbed times `brine enroll` of 1 and 20 systemd testbed hosts running sshd
// (upload of the 36 MB binary, configure, start, wait until enrolled) through a real master,
// --parallel 10, and reports the mean time of each stage per host (--json). Between iterations (not timed) the hosts are reset: minion stopped, binary,
// config and keys removed. Run as root:
//
//	go test -count=1 -run '^$' -bench EnrollTestbed -benchtime 2x ./cmd/brine/
func BenchmarkEnrollTestbed(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			names := []string{"mst"}
			for i := 1; i <= n; i++ {
				names = append(names, fmt.Sprintf("e%d", i))
			}
			c := testbed.NewSystemdT(b, names...)
			_, sock := startTestbedMaster(b, c, c.Host("mst"))
			identity, clientKey := clientIdentity(b)
			var kh strings.Builder
			args := []string{"enroll", "--socket", sock, "--identity", identity, "--binary", minionBin, "--parallel", "20", "--json"}
			for _, name := range names[1:] {
				h := c.Host(name)
				kh.WriteString(knownhosts.Line([]string{h.Addr() + ":22"}, startSSHD(b, h, clientKey)) + "\n")
				args = append(args, "ssh://root@"+h.Addr())
			}
			khFile := filepath.Join(b.TempDir(), "known_hosts")
			if err := os.WriteFile(khFile, []byte(kh.String()), 0o600); err != nil {
				b.Fatal(err)
			}
			args = append(args, "--known-hosts", khFile)
			ctx := context.Background()
			stages := map[string]time.Duration{} // summed over hosts and iterations
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i > 0 {
					b.StopTimer()
					for _, name := range names[1:] {
						if out, code, err := c.Host(name).Sh(ctx, "systemctl stop brine-minion; rm -rf /usr/bin/brine-minion /etc/brine /var/lib/brine"); err != nil || code != 0 {
							b.Fatalf("reset %s: %v %s", name, err, out)
						}
						brine(b, "key", "delete", name, "--socket", sock)
					}
					b.StartTimer()
				}
				cmd := exec.Command(brineBin, args...)
				out, err := cmd.Output()
				if err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
				for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					var r enroll.Result
					if err := json.Unmarshal([]byte(line), &r); err != nil {
						b.Fatalf("enroll --json: %v: %q", err, line)
					}
					for st, d := range r.Stages {
						stages[st] += d
					}
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/enroll")
			// Where one host's time goes, on average: the stages of enroll.Result.
			for st, d := range stages {
				b.ReportMetric(d.Seconds()/float64(b.N*n), "s/host-"+st)
			}
		})
	}
}
