package states

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brinecm/brine/testbed"
)

// ---- helpers shared by the network tests (ufw, iptables and tinc in testbed hosts) ----

type netCluster struct {
	t    *testing.T
	c    *testbed.Cluster
	step int
}

func newNetCluster(t *testing.T, hosts ...string) *netCluster {
	t.Helper()
	if err := testbed.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	c := testbed.NewT(t, hosts...)
	testbed.InstallBrine(t, c.SharedDir())
	return &netCluster{t: t, c: c}
}

// run writes the bundle files and runs `brine local <verb> --json ARGS DIR` in host.
func (n *netCluster) run(host, verb string, files map[string]string, args ...string) (*Report, int, string) {
	n.t.Helper()
	n.step++
	rel := fmt.Sprintf("bundles/%s-%d", host, n.step)
	dir := filepath.Join(n.c.SharedDir(), rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		n.t.Fatal(err)
	}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			n.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	argv := append([]string{testbed.HostSharedDir + "/brine", "local", verb, "--json"}, args...)
	argv = append(argv, testbed.HostSharedDir+"/"+rel)
	out, stderr, code, err := n.c.Host(host).Run(ctx, argv...)
	if err != nil {
		n.t.Fatalf("brine local %s: %v\n%s%s", verb, err, out, stderr)
	}
	var rep Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		n.t.Fatalf("%s step %d: exit %d, not a JSON report: %v\nstdout: %s\nstderr: %s", host, n.step, code, err, out, stderr)
	}
	return &rep, code, stderr
}

func (n *netCluster) apply(host, src string, args ...string) *Report {
	n.t.Helper()
	rep, _, _ := n.run(host, "apply", map[string]string{"main.hcl": src}, args...)
	return rep
}

func (n *netCluster) sh(host, script string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, code, err := n.c.Host(host).Sh(ctx, script)
	if err != nil || code != 0 {
		n.t.Fatalf("%s: %q: exit %d %v\n%s", host, script, code, err, out)
	}
	return out
}

// inHostNet runs f on a throwaway OS thread that has joined host's network namespace: sockets f
// opens belong to the host's network.
func inHostNet(h *testbed.Host, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		fd, err := syscall.Open(fmt.Sprintf("/proc/%d/ns/net", h.InitPID()), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer syscall.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// listenIn starts a TCP server on port in host that accepts and closes connections, until the
// test ends.
func listenIn(t *testing.T, h *testbed.Host, port int) {
	t.Helper()
	var ln net.Listener
	err := inHostNet(h, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s:%d: %v", h.Name(), port, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
}

// dialFrom connects from host to addr over TCP and reads the greeting.
func dialFrom(h *testbed.Host, addr string, timeout time.Duration) error {
	return inHostNet(h, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 6)
		_, err = c.Read(buf)
		return err
	})
}

// pingFrom sends one ICMP echo request from host to the IPv4 address ip and waits for the reply.
func pingFrom(h *testbed.Host, ip string, timeout time.Duration) error {
	dst := net.ParseIP(ip).To4()
	if dst == nil {
		return fmt.Errorf("not an IPv4 address: %s", ip)
	}
	return inHostNet(h, func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		id := uint16(os.Getpid()) ^ uint16(time.Now().UnixNano())
		msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'b', 'r', 'i', 'n', 'e'}
		binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		var sa syscall.SockaddrInet4
		copy(sa.Addr[:], dst)
		if err := syscall.Sendto(fd, msg, 0, &sa); err != nil {
			return err
		}
		deadline := time.Now().Add(timeout)
		buf := make([]byte, 1500)
		for time.Now().Before(deadline) {
			tv := syscall.NsecToTimeval(int64(time.Until(deadline)) + 1)
			syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
			n, from, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
					continue
				}
				return err
			}
			f, ok := from.(*syscall.SockaddrInet4)
			if !ok || net.IP(f.Addr[:]).String() != dst.String() || n < 20 {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			if n >= ihl+8 && buf[ihl] == 0 && binary.BigEndian.Uint16(buf[ihl+4:]) == id {
				return nil
			}
		}
		return fmt.Errorf("no echo reply from %s within %s", ip, timeout)
	})
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// mtimes returns the modification time of every file under the given directories of host.
func mtimes(t *testing.T, h *testbed.Host, dirs ...string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, d := range dirs {
		filepath.Walk(filepath.Join(h.Root(), d), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				out[strings.TrimPrefix(p, h.Root())] = fi.ModTime()
			}
			return nil
		})
	}
	return out
}

func netResult(t *testing.T, rep *Report, addr string) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", addr, rep.Results)
	return Result{}
}

// ---- ufw ----

const ufwBundle = `
ufw {
  default_incoming = "deny"
  default_outgoing = "allow"
  default_routed   = "deny"
  logging          = "low"
  enabled          = true
  rule "ssh" {
    action  = "allow"
    port    = "22"
    proto   = "tcp"
    comment = "operators"
  }
  rule "x11" {
    action = "allow"
    port   = "6000:6007"
    proto  = "tcp"
    from   = "10.99.0.0/16"
  }
  rule "smtp-out" {
    action    = "reject"
    port      = "25"
    proto     = "tcp"
    direction = "out"
  }
  rule "ssh-lo" {
    action    = "limit"
    port      = "2222"
    interface = "lo"
  }
}
`

func TestUfwInTestbed(t *testing.T) {
	n := newNetCluster(t, "a", "b")
	a, b := n.c.Host("a"), n.c.Host("b")
	listenIn(t, a, 22)
	listenIn(t, a, 8080)
	for _, port := range []int{22, 8080} {
		if err := dialFrom(b, fmt.Sprintf("%s:%d", a.Addr(), port), 3*time.Second); err != nil {
			t.Fatalf("before ufw, b cannot reach a:%d: %v", port, err)
		}
	}

	rep := n.apply("a", ufwBundle)
	wantCounts(t, rep, 1, 0)
	if err := dialFrom(b, a.Addr()+":22", 3*time.Second); err != nil {
		t.Errorf("ufw allows ssh but b cannot reach a:22: %v", err)
	}
	if err := dialFrom(b, a.Addr()+":8080", time.Second); err == nil {
		t.Errorf("ufw denies incoming but b reached a:8080")
	}
	status := n.sh("a", "ufw status verbose")
	for _, want := range []string{"Status: active", "Logging: on (low)", "Default: deny (incoming), allow (outgoing)",
		"22/tcp                     ALLOW IN    Anywhere                   # operators", "6000:6007/tcp              ALLOW IN    10.99.0.0/16",
		"25/tcp                     REJECT OUT  Anywhere", "2222 on lo                 LIMIT IN    Anywhere"} {
		if !strings.Contains(status, want) {
			t.Errorf("ufw status lacks %q:\n%s", want, status)
		}
	}

	// Routed shows as "disabled" while the host does not forward; the policy is in the file.
	if d := n.sh("a", "cat /etc/default/ufw"); !strings.Contains(d, `DEFAULT_FORWARD_POLICY="DROP"`) {
		t.Errorf("routed policy not set:\n%s", d)
	}

	// The second apply changes nothing and touches none of ufw's files.
	before := mtimes(t, a, "/etc/ufw", "/lib/ufw", "/etc/default/ufw")
	time.Sleep(20 * time.Millisecond)
	rep = n.apply("a", ufwBundle)
	wantCounts(t, rep, 0, 0)
	after := mtimes(t, a, "/etc/ufw", "/lib/ufw", "/etc/default/ufw")
	if len(before) == 0 || fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("a no-change apply touched ufw's files:\nbefore %v\nafter  %v", before, after)
	}

	// A rule added by hand is removed, a changed rule replaced, order kept.
	n.sh("a", "ufw allow 9999/udp && ufw delete allow 6000:6007/tcp >/dev/null 2>&1; ufw allow from 10.99.0.0/16 to any port 6000:6007 proto udp")
	rep = n.apply("a", ufwBundle)
	wantCounts(t, rep, 1, 0)
	wantCounts(t, n.apply("a", ufwBundle), 0, 0)
	if s := n.sh("a", "ufw status"); strings.Contains(s, "9999") || strings.Contains(s, "6000:6007/udp") {
		t.Errorf("undeclared rules survived:\n%s", s)
	}
}

func TestUfwLockoutGuard(t *testing.T) {
	n := newNetCluster(t, "a")
	n.sh("a", "mkdir -p /etc/ssh/sshd_config.d && echo 'Port 2200' > /etc/ssh/sshd_config.d/brine-test.conf")
	noSSH := `
ufw {
  default_incoming = "deny"
  enabled          = true
  rule "web" {
    port  = "22"
    proto = "tcp"
  }
}
`
	plan, code, _ := n.run("a", "plan", map[string]string{"main.hcl": noSSH})
	if r := netResult(t, plan, "ufw"); !strings.Contains(r.Diff, "WARNING") || !strings.Contains(r.Diff, "2200") {
		t.Errorf("plan (exit %d) does not warn about port 2200:\n%s", code, r.Diff)
	}
	rep := n.apply("a", noSSH)
	r := netResult(t, rep, "ufw")
	if r.Status != StatusFailed || !strings.Contains(r.Error, "refusing") || !strings.Contains(r.Error, "allow_lockout") {
		t.Fatalf("apply of a bundle that locks out sshd: %s %s", r.Status, r.Error)
	}
	if s := n.sh("a", "ufw status"); !strings.Contains(s, "inactive") {
		t.Errorf("the refused apply changed ufw:\n%s", s)
	}
	// Allowing sshd's port is enough; so is saying the lockout is intended.
	withSSH := strings.Replace(noSSH, `port  = "22"`, `port  = "2200"`, 1)
	wantCounts(t, n.apply("a", withSSH), 1, 0)
	intended := strings.Replace(noSSH, `enabled          = true`, "enabled = true\n  allow_lockout = true", 1)
	wantCounts(t, n.apply("a", intended), 1, 0)
}

func TestUfwDecode(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`ufw { default_incoming = "drop" }`, `default_incoming = "drop" is not valid`},
		{"ufw {\n rule \"x\" {\n port = \"1:2\"\n }\n}", "needs proto"},
		{"ufw {\n rule \"x\" {\n action = \"permit\"\n }\n}", "use allow, deny, reject or limit"},
		{"ufw {\n rule \"x\" {\n from = \"10.0.0.1\"\n to = \"::1\"\n }\n}", "Mixed address families"},
		{"ufw {\n rule \"x\" {\n prot = \"tcp\"\n }\n}", "Did you mean"},
		{"ufw {\n deny \"x\" {\n action = \"allow\"\n }\n}", "Conflicting ufw rule action"},
	} {
		b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(tc.src)}}
		_, diags := Compile(b, Options{})
		if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%s: diagnostics %q, want one containing %q", tc.src, diags.Error(), tc.want)
		}
	}
	// Shorthand blocks keep their place among rule blocks.
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(`ufw {
  allow "ssh" {
    port  = 22
    proto = "tcp"
  }
  rule "x" {
    action = "deny"
    port   = "23"
  }
  limit "y" {
    port = "2222"
  }
}`)}}
	g, diags := Compile(b, Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var got []string
	for _, u := range g.nodes[0].res.(*ufwRes).rules {
		got = append(got, u.name+"="+u.action+":"+u.port)
	}
	if strings.Join(got, " ") != "ssh=allow:22 x=deny:23 y=limit:2222" {
		t.Errorf("rules in order: %v", got)
	}
	u, _, _ := decodeUfwRule(ufwRuleBlock{Name: "n", Port: "22", Proto: "tcp", From: "10.1.2.3/8", Comment: "hi"}, nil, nil)
	if got, want := u.tuple(false), "allow tcp 22 0.0.0.0/0 any 10.0.0.0/8 in comment=6869"; got != want || u.v6 {
		t.Errorf("tuple = %q (v6 %t); want %q, v4 only", got, u.v6, want)
	}
}

// ufw refuses quotes in comments with its usage text; the bundle says so first, with a position.
func TestUfwCommentWithQuoteIsABundleError(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(`ufw {
  rule "tinc" {
    port    = "655"
    comment = "the mesh's transport"
  }
}`)}}
	_, diags := Compile(b, Options{})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "Invalid comment") {
		t.Fatalf("a quote in a comment was accepted: %v", diags)
	}
}

func TestReadableTuple(t *testing.T) {
	got := readableTuple("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=" + hex.EncodeToString([]byte("operators")))
	if got != `allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment="operators"` {
		t.Fatal(got)
	}
	if got := readableTuple("allow any 655 0.0.0.0/0 any 0.0.0.0/0 in"); got != "allow any 655 0.0.0.0/0 any 0.0.0.0/0 in" {
		t.Fatal(got)
	}
}
