package enroll

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in, addr, id, err string
	}{
		{in: "ssh://root@10.0.0.5", addr: "10.0.0.5:22"},
		{in: "ssh://root@web1.example.com:2222", addr: "web1.example.com:2222"},
		{in: "ssh://root@[fd00::5]:2222?id=db1", addr: "[fd00::5]:2222", id: "db1"},
		{in: "ssh://admin@10.0.0.5", err: "must be root"},
		{in: "ssh://10.0.0.5", err: "must be root"},
		{in: "ssh://root:pw@10.0.0.5", err: "no passwords"},
		{in: "http://root@10.0.0.5", err: "want ssh://"},
		{in: "root@10.0.0.5", err: "want ssh://"},
		{in: "ssh://root@10.0.0.5:0", err: "bad port"},
		{in: "ssh://root@10.0.0.5:99999", err: "bad port"},
		{in: "ssh://root@10.0.0.5/etc", err: "no path"},
		{in: "ssh://root@10.0.0.5?id=../x", err: "invalid minion id"},
		{in: "ssh://root@10.0.0.5?id=a&id=b", err: "repeated"},
		{in: "ssh://root@10.0.0.5?user=x", err: "unknown"},
	} {
		got, err := ParseTarget(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.Addr() != tc.addr || got.ID != tc.id || got.User != "root" {
			t.Errorf("%s: %+v %v", tc.in, got, err)
		}
	}
}

func newKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The host key checks, on their own: the real refusal through sshd is in cmd/brine's
// TestEnrollOverSSH.
func TestHostKeys(t *testing.T) {
	good, other := newKey(t), newKey(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	lines := knownhosts.Line([]string{"10.0.0.5:22"}, good) + "\n" + knownhosts.Line([]string{"10.0.0.6:2222"}, good) + "\n"
	if err := os.WriteFile(kh, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	remote := &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 22}
	for _, tc := range []struct {
		hk   HostKeys
		addr string
		key  ssh.PublicKey
		err  string
	}{
		{HostKeys{KnownHosts: kh}, "10.0.0.5:22", good, ""},
		{HostKeys{KnownHosts: kh}, "10.0.0.6:2222", good, ""},
		{HostKeys{KnownHosts: kh}, "10.0.0.5:22", other, "does not match " + kh + ":1"},
		{HostKeys{KnownHosts: kh}, "10.0.0.6:22", good, "is not in " + kh},
		{HostKeys{Fingerprint: ssh.FingerprintSHA256(good)}, "10.0.0.5:22", good, ""},
		{HostKeys{Fingerprint: ssh.FingerprintSHA256(good)}, "10.0.0.5:22", other, "want " + ssh.FingerprintSHA256(good)},
	} {
		v, err := tc.hk.verifier(tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		err = v.callback(tc.addr, remote, tc.key)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.addr, err)
		case tc.err != "" && (err == nil || !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.addr, err, tc.err)
		}
		if tc.hk.KnownHosts != "" && tc.addr != "10.0.0.6:22" && (len(v.algos) != 1 || v.algos[0] != ssh.KeyAlgoED25519) {
			t.Errorf("%s: offered algorithms %v, want the known key's", tc.addr, v.algos)
		}
		// A fingerprint names no key type: the server must show its ed25519 key when it has one.
		if tc.hk.Fingerprint != "" && (len(v.algos) == 0 || v.algos[0] != ssh.KeyAlgoED25519) {
			t.Errorf("%s: offered algorithms %v, want ed25519 first", tc.addr, v.algos)
		}
	}
	for _, hk := range []HostKeys{{}, {KnownHosts: kh, Fingerprint: ssh.FingerprintSHA256(good)}, {Fingerprint: "MD5:aa"}} {
		if _, err := hk.verifier("10.0.0.5:22"); err == nil {
			t.Errorf("%+v: no error", hk)
		}
	}
}
