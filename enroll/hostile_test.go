package enroll

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/brinecm/brine/cloud"
)

// fakeMaster is the master's side for tests of what a hostile server can do; it counts
// tokens so that a test can assert none was made.
type fakeMaster struct {
	mu     sync.Mutex
	tokens int
}

func (m *fakeMaster) CreateToken(context.Context, string, []string, time.Duration) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens++
	return "brn2-test", nil
}

func (m *fakeMaster) Bootstrap(context.Context) (cloud.BootstrapInfo, error) {
	return cloud.BootstrapInfo{MasterAddr: "127.0.0.1", MasterFingerprint: "aa:bb"}, nil
}
func (m *fakeMaster) WaitEnrolled(context.Context, string) error { return nil }
func (m *fakeMaster) KeyState(context.Context, string) (string, error) {
	return "", nil
}

func testSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testOptions(t *testing.T, m Master, fingerprint string) Options {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Options{Master: m, Binary: exe, HostKeys: HostKeys{Fingerprint: fingerprint},
		Auth: []ssh.AuthMethod{ssh.PublicKeys(testSigner(t))}, ConnectTimeout: 300 * time.Millisecond,
		CommandTimeout: 5 * time.Second, EnrollTimeout: time.Second}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func target(t *testing.T, ln net.Listener) Target {
	t.Helper()
	tg, err := ParseTarget("ssh://root@" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// A server that accepts and never speaks cannot hold enroll: the handshake is bounded by the
// connect timeout, and the server fails at connect with nothing asked of the master.
func TestEnrollSilentServer(t *testing.T) {
	ln := listen(t)
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	m := &fakeMaster{}
	res, err := Enroll(context.Background(), []Target{target(t, ln)}, testOptions(t, m, ssh.FingerprintSHA256(testSigner(t).PublicKey())), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.OK || r.Stage != StageConnect || !strings.Contains(r.Error, "no answer within") || m.tokens != 0 {
		t.Fatalf("%+v, %d tokens", r, m.tokens)
	}
}

// A server with the right host key that answers every command with 64 MiB of output: enroll
// keeps 16 KiB of it (maxOutput), fails at inspect quoting a short part, and makes no token.
func TestEnrollFloodingServer(t *testing.T) {
	ln := listen(t)
	hostKey := testSigner(t)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hostKey)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go floodServe(c, cfg)
		}
	}()
	m := &fakeMaster{}
	res, err := Enroll(context.Background(), []Target{target(t, ln)}, testOptions(t, m, ssh.FingerprintSHA256(hostKey.PublicKey())), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if r.OK || r.Stage != StageInspect || !strings.Contains(r.Error, "(16384 bytes)") || len(r.Error) > 1024 || m.tokens != 0 {
		t.Fatalf("stage %s, %d bytes of error, %d tokens", r.Stage, len(r.Error), m.tokens)
	}
}

// floodServe answers each exec with 64 MiB of output on stdout, then exit status 0.
func floodServe(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range creqs {
				req.Reply(req.Type == "exec", nil)
				if req.Type != "exec" {
					continue
				}
				chunk := []byte(strings.Repeat("A", 1<<20))
				for i := 0; i < 64; i++ {
					if _, err := ch.Write(chunk); err != nil {
						return
					}
				}
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
				return
			}
		}()
	}
	_, _ = io.Copy(io.Discard, c)
}
