// Package restest holds what the tests of the state engine and the resource types share: a testbed cluster that runs
// bundles with the brine binary (`brine local`) in its hosts, and probes of their network
// (listen, dial, ping from inside a host). Only tests import it.
package restest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/icmp"
	"github.com/brinecm/brine/testbed"
	"github.com/hashicorp/hcl/v2"
	"golang.org/x/sys/unix"
)

// NetCluster is a testbed cluster whose hosts run bundles with the brine binary.
type NetCluster struct {
	T    *testing.T
	C    *testbed.Cluster
	step int
}

// NewNetCluster starts a testbed cluster of hosts with the brine binary in their shared directory;
// it skips where the testbed cannot run.
func NewNetCluster(t *testing.T, hosts ...string) *NetCluster {
	t.Helper()
	if err := testbed.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	c := testbed.NewT(t, hosts...)
	testbed.InstallBrine(t, c.SharedDir())
	return &NetCluster{T: t, C: c}
}

// Run writes the bundle files and runs `brine local <verb> --json ARGS DIR` in host.
func (n *NetCluster) Run(host, verb string, files map[string]string, args ...string) (*states.Report, int, string) {
	n.T.Helper()
	n.step++
	rel := fmt.Sprintf("bundles/%s-%d", host, n.step)
	dir := filepath.Join(n.C.SharedDir(), rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		n.T.Fatal(err)
	}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			n.T.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	argv := append([]string{testbed.HostSharedDir + "/brine", "local", verb, "--json"}, args...)
	argv = append(argv, testbed.HostSharedDir+"/"+rel)
	out, stderr, code, err := n.C.Host(host).Run(ctx, argv...)
	if err != nil {
		n.T.Fatalf("brine local %s: %v\n%s%s", verb, err, out, stderr)
	}
	var rep states.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		n.T.Fatalf("%s step %d: exit %d, not a JSON report: %v\nstdout: %s\nstderr: %s", host, n.step, code, err, out, stderr)
	}
	return &rep, code, stderr
}

// Apply runs `brine local apply` of the one-file bundle src in host.
func (n *NetCluster) Apply(host, src string, args ...string) *states.Report {
	n.T.Helper()
	rep, _, _ := n.Run(host, "apply", map[string]string{"main.hcl": src}, args...)
	return rep
}

// Sh runs script in host and fails the test unless it exits 0.
func (n *NetCluster) Sh(host, script string) string {
	n.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, code, err := n.C.Host(host).Sh(ctx, script)
	if err != nil || code != 0 {
		n.T.Fatalf("%s: %q: exit %d %v\n%s", host, script, code, err, out)
	}
	return out
}

// InHostNet runs f on a throwaway OS thread that has joined host's network namespace: sockets f
// opens belong to the host's network.
func InHostNet(h *testbed.Host, f func() error) error {
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

// ListenIn starts a TCP server on port in host that accepts and closes connections, until the
// test ends.
func ListenIn(t *testing.T, h *testbed.Host, port int) {
	t.Helper()
	var ln net.Listener
	err := InHostNet(h, func() (err error) {
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

// DialFrom connects from host to addr over TCP and reads the greeting.
func DialFrom(h *testbed.Host, addr string, timeout time.Duration) error {
	return InHostNet(h, func() error {
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

// PingFrom sends one ICMP echo request from host to the IPv4 address ip and waits for the reply.
func PingFrom(h *testbed.Host, ip string, timeout time.Duration) error {
	dst, err := netip.ParseAddr(ip)
	if err != nil || !dst.Is4() {
		return fmt.Errorf("not an IPv4 address: %s", ip)
	}
	return InHostNet(h, func() error {
		p, err := icmp.New(true)
		if err != nil {
			return err
		}
		defer p.Close()
		pending := map[netip.Addr]string{dst: ip}
		p.Send(dst)
		if p.Await(pending, timeout); len(pending) > 0 {
			return fmt.Errorf("no echo reply from %s within %s", ip, timeout)
		}
		return nil
	})
}

// Mtimes returns the modification time of every file under the given directories of host.
func Mtimes(t *testing.T, h *testbed.Host, dirs ...string) map[string]time.Time {
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

// Result is the result of the resource at addr in rep.
func Result(t *testing.T, rep *states.Report, addr string) states.Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", addr, rep.Results)
	return states.Result{}
}

// WantCounts fails t unless rep has changed changed and failed failed resources.
func WantCounts(t *testing.T, rep *states.Report, changed, failed int) {
	t.Helper()
	c := rep.Counts()
	if c[states.StatusChanged] != changed || c[states.StatusFailed] != failed {
		for _, r := range rep.Results {
			t.Logf("%s: %s %s\n%s", r.Address, r.Status, r.Error, r.Diff)
		}
		t.Fatalf("changed=%d failed=%d; want changed=%d failed=%d", c[states.StatusChanged], c[states.StatusFailed], changed, failed)
	}
}

// RunHCL compiles src as a bundle's main.hcl against types and applies (or plans) it in process.
func RunHCL(t *testing.T, types *states.Registry, src string, dryRun bool) *states.Report {
	t.Helper()
	g, diags := Compile(&states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, types, states.Options{})
	if diags.HasErrors() {
		t.Fatalf("compile: %s", diags.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return states.Run(ctx, g, dryRun)
}

// WantStatus fails t unless the resource at addr ended in want; it returns its result.
func WantStatus(t *testing.T, rep *states.Report, addr string, want states.Status) states.Result {
	t.Helper()
	r := Result(t, rep, addr)
	if r.Status != want {
		t.Fatalf("%s: status %s, want %s (diff %q, error %q)", addr, r.Status, want, r.Diff, r.Error)
	}
	return r
}

// WantCompileError compiles src as a bundle's main.hcl against types and fails t unless that is
// an error whose subject, summary or detail contains want.
func WantCompileError(t *testing.T, types *states.Registry, src, want string) {
	t.Helper()
	_, diags := Compile(&states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, types, states.Options{})
	var all strings.Builder
	for _, d := range diags {
		fmt.Fprintf(&all, "%s: %s: %s\n", d.Subject, d.Summary, d.Detail)
	}
	if !diags.HasErrors() || !strings.Contains(all.String(), want) {
		t.Errorf("%s: diags %s, want %q", src, all.String(), want)
	}
}

// Must fails t with err when it is not nil.
func Must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Exists reports whether p exists (a dangling symlink does).
func Exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// Statuses is the status of every resource of rep, by address.
func Statuses(rep *states.Report) map[string]states.Status {
	m := map[string]states.Status{}
	for _, res := range rep.Results {
		m[res.Address] = res.Status
	}
	return m
}

// WriteTree writes files (slash paths) under a new directory and reads it as a bundle.
func WriteTree(t *testing.T, files map[string]string) (*states.Bundle, string) {
	t.Helper()
	dir := t.TempDir()
	for n, c := range files {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := states.ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b, dir
}

// AllDiags is every diagnostic of diags, one a line.
func AllDiags(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		b.WriteString(d.Error() + "\n")
	}
	return b.String()
}

// TincKey is a new tinc public key (RSA, 1024 bits: quick to make).
func TincKey(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	Must(t, err)
	return strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})))
}

// Compile loads b against types and compiles it for opts: Load and Compile as a minion runs them.
func Compile(b *states.Bundle, types *states.Registry, opts states.Options) (*states.Graph, hcl.Diagnostics) {
	m, diags := states.Load(b, types)
	if diags.HasErrors() {
		return nil, diags
	}
	g, d := states.Compile(m, opts)
	return g, append(diags, d...)
}

// Check loads b against types and checks it, as the CLI does before it sends a bundle.
func Check(b *states.Bundle, types *states.Registry, opts states.Options) hcl.Diagnostics {
	m, diags := states.Load(b, types)
	if diags.HasErrors() {
		return diags
	}
	return append(diags, states.Check(m, opts)...)
}
