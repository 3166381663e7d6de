package enroll

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
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

// scriptedServe serves SSH on ln with hostKey: each exec gets answer on stdout, then behave
// runs with the channel (it reads stdin, exits, or hangs).
func scriptedServe(t *testing.T, ln net.Listener, hostKey ssh.Signer, answer string, behave func(ch ssh.Channel)) {
	t.Helper()
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hostKey)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
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
							if req.Type == "exec" {
								_, _ = io.WriteString(ch, answer)
								behave(ch)
								return
							}
						}
					}()
				}
			}()
		}
	}()
}

func exitStatus(ch ssh.Channel, code uint32) {
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{code}))
}

// What the host answers before anything is sent is checked: an unknown decompressor fails the
// host at inspect with no token made.
func TestEnrollBadDecompressor(t *testing.T) {
	ln := listen(t)
	hostKey := testSigner(t)
	scriptedServe(t, ln, hostKey, "h1\nx86_64\nsystemd\n-\nsh -c 'rm -rf /'\n", func(ch ssh.Channel) {
		_, _ = io.Copy(io.Discard, ch)
		exitStatus(ch, 0)
	})
	m := &fakeMaster{}
	opts := testOptions(t, m, ssh.FingerprintSHA256(hostKey.PublicKey()))
	res, err := Enroll(context.Background(), []Target{target(t, ln)}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.OK || r.Stage != StageInspect || !strings.Contains(r.Error, "decompressor") || m.tokens != 0 {
		t.Fatalf("%+v, %d tokens", r, m.tokens)
	}
}

// The host gets the verdict, minion.hcl with the token and the binary packed as it asked, on
// stdin; a host that takes it all and exits 0 without saying the binary is installed fails at
// upload; one that stops reading and never exits is cut off at the command timeout.
func TestEnrollInstallStream(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := readBinary(exe)
	if err != nil {
		t.Fatal(err)
	}
	answer := "h1\n" + bin.arch + "\nsystemd\n-\n"
	for _, format := range []string{formatZstd, formatGzip} {
		ln := listen(t)
		hostKey := testSigner(t)
		got := make(chan []byte, 1)
		scriptedServe(t, ln, hostKey, answer+format+"\n", func(ch ssh.Channel) {
			in, _ := io.ReadAll(io.LimitReader(ch, 256<<20))
			got <- in
			exitStatus(ch, 0)
		})
		m := &fakeMaster{}
		res, err := Enroll(context.Background(), []Target{target(t, ln)}, testOptions(t, m, ssh.FingerprintSHA256(hostKey.PublicKey())), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := res[0]; r.OK || r.Stage != StageUpload || !strings.Contains(r.Error, "did not report the binary installed") || r.Uploaded {
			t.Fatalf("%s: %+v", format, r)
		}
		in := <-got
		verb, rest, _ := bytes.Cut(in, []byte("\n"))
		var n int
		var f string
		if _, err := fmt.Sscanf(string(verb), "install %d %s", &n, &f); err != nil || f != format || n > len(rest) {
			t.Fatalf("%s: verdict %q: %v", format, verb, err)
		}
		if conf := string(rest[:n]); !regexp.MustCompile(`(?m)^token +=  *"brn2-test"$`).MatchString(conf) || !regexp.MustCompile(`(?m)^id +=  *"h1"$`).MatchString(conf) {
			t.Fatalf("%s: minion.hcl:\n%s", format, conf)
		}
		var unpacked []byte
		if format == formatZstd {
			d, err := zstd.NewReader(nil)
			if err != nil {
				t.Fatal(err)
			}
			unpacked, err = d.DecodeAll(rest[n:], nil)
			d.Close()
			if err != nil {
				t.Fatal(err)
			}
		} else {
			r, err := gzip.NewReader(bytes.NewReader(rest[n:]))
			if err != nil {
				t.Fatal(err)
			}
			if unpacked, err = io.ReadAll(r); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(unpacked, bin.data) || len(rest[n:]) >= len(bin.data) {
			t.Fatalf("%s: %d bytes sent for a %d-byte binary, unpacked to %d bytes (equal: %v)", format, len(rest[n:]), len(bin.data), len(unpacked), bytes.Equal(unpacked, bin.data))
		}
	}

	ln := listen(t)
	hostKey := testSigner(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	scriptedServe(t, ln, hostKey, answer+formatGzip+"\n", func(ch ssh.Channel) {
		_, _ = io.ReadFull(ch, make([]byte, 10))
		<-release // reads no more, never exits
	})
	opts := testOptions(t, &fakeMaster{}, ssh.FingerprintSHA256(hostKey.PublicKey()))
	opts.CommandTimeout = time.Second
	res, err := Enroll(context.Background(), []Target{target(t, ln)}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.OK || r.Stage != StageUpload || !strings.Contains(r.Error, "no answer within 1s") {
		t.Fatalf("a host that stops reading: %+v", res[0])
	}
}
