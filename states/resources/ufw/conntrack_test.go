package ufw

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/states/resources/restest"
	"github.com/brinecm/brine/testbed"
	"golang.org/x/sys/unix"
)

func TestParseProcAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0100007F:0016", "127.0.0.1:22"},
		{"0301D50A:1199", "10.213.1.3:4505"},
		{"00000000000000000000000000000000:0016", "[::]:22"},
		{"B80D0120000000000000000001000000:01BB", "[2001:db8::1]:443"},
		{"0000000000000000FFFF00000301D50A:C350", "10.213.1.3:50000"}, // v4-mapped: an IPv4 flow
	} {
		got, err := parseProcAddr(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007:0016", "0100007F:10000", "zz00007F:0016", "0100007F:"} {
		if _, err := parseProcAddr(bad); err == nil {
			t.Errorf("parseProcAddr(%q) accepted", bad)
		}
	}
}

func TestReadSocketTable(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0301D50A:0016 0201D50A:D431 01 00000000:00000000 02:00000000 00000000     0        0 2 1 0000000000000000 20 4 1 10 -1
   2: 0301D50A:C350 0201D50A:1199 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 1 10 -1
`
	var rows []string
	err := readSocketTable(strings.NewReader(table), func(l, r netip.AddrPort, st string) {
		rows = append(rows, fmt.Sprintf("%s %s %s", l, r, st))
	})
	want := []string{"0.0.0.0:22 0.0.0.0:0 0A", "10.213.1.3:22 10.213.1.2:54321 01", "10.213.1.3:50000 10.213.1.2:4505 01"}
	if err != nil || strings.Join(rows, "|") != strings.Join(want, "|") {
		t.Fatalf("rows %q, err %v; want %q", rows, err, want)
	}
	if err := readSocketTable(strings.NewReader("header\n 0: nonsense 00000000:0000 01\n"), func(netip.AddrPort, netip.AddrPort, string) {}); err == nil {
		t.Error("a malformed row was accepted")
	}
}

// TestUfwEnableKeepsOpenConnections enables ufw (deny incoming, allow ssh) on a host that has
// connections open: one it opened and only reads from, one it accepted on the allowed port and
// one it accepted on a denied port. After the enable, the peer sends on each. The first two must
// carry on (the outgoing one with a megabyte, larger than any unscaled TCP window); the one to the
// denied port must not: incoming connections are judged by the new rules.
func TestUfwEnableKeepsOpenConnections(t *testing.T) {
	n := restest.NewNetCluster(t, "a", "b")
	a, b := n.C.Host("a"), n.C.Host("b")

	// b serves on 7000: each accepted connection is handed to the test.
	var ln7000 net.Listener
	if err := restest.InHostNet(b, func() (err error) { ln7000, err = net.Listen("tcp", ":7000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln7000.Close()
	// a listens on 22 (allowed by the rules) and 8080 (denied).
	lns := map[int]net.Listener{}
	for _, port := range []int{22, 8080} {
		var ln net.Listener
		if err := restest.InHostNet(a, func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		lns[port] = ln
	}
	// dial connects from host h to addr with TCP keepalive off: keepalive probes are traffic
	// from the host that would heal an untracked connection after 15 s and hide the fault.
	dial := func(h *testbed.Host, addr string) net.Conn {
		t.Helper()
		var c net.Conn
		if err := restest.InHostNet(h, func() (err error) {
			c, err = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}).Dial("tcp", addr)
			return err
		}); err != nil {
			t.Fatalf("dial %s from %s: %v", addr, h.Name(), err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	accept := func(ln net.Listener) net.Conn {
		t.Helper()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetKeepAlive(false)
		t.Cleanup(func() { c.Close() })
		return c
	}
	outA := dial(a, b.Addr()+":7000") // a opened it and only reads
	outB := accept(ln7000)
	pickedA := dial(a, b.Addr()+":7000") // the same, but tracked as picked up from b's side
	pickedB := accept(ln7000)
	sshB := dial(b, a.Addr()+":22")
	sshA := accept(lns[22])
	deniedB := dial(b, a.Addr()+":8080")
	deniedA := accept(lns[8080])
	// Traffic both ways on each before the enable, as on a connection in use.
	for _, p := range [][2]net.Conn{{outA, outB}, {outB, outA}, {pickedA, pickedB}, {pickedB, pickedA}, {sshA, sshB}, {sshB, sshA}, {deniedA, deniedB}, {deniedB, deniedA}} {
		expectRead(t, p[0], p[1], []byte("before\n"), 10*time.Second)
	}
	if !strings.Contains(n.Sh("a", "ufw status"), "inactive") {
		t.Fatal("ufw is already active on a fresh host")
	}
	trackFromPeer(t, a, pickedA)

	rep := n.Apply("a", `
ufw {
  default_incoming = "deny"
  default_outgoing = "allow"
  enabled          = true
  allow "ssh" {
    port  = "22"
    proto = "tcp"
  }
}
`)
	restest.WantCounts(t, rep, 1, 0)

	big := make([]byte, 1<<20)
	rand.Read(big)
	// Generous bounds: these arrive in milliseconds; an untracked connection gets nothing at all
	// (keepalive is off, and a only reads).
	expectRead(t, outB, outA, big, 30*time.Second)
	expectRead(t, sshB, sshA, []byte("still here\n"), 30*time.Second)
	expectRead(t, outA, outB, []byte("and back\n"), 30*time.Second)
	expectRead(t, pickedB, pickedA, []byte("picked up from b's side\n"), 30*time.Second)
	if _, err := deniedB.Write([]byte("let me in\n")); err != nil {
		t.Fatal(err)
	}
	deniedA.SetReadDeadline(time.Now().Add(3 * time.Second))
	if got, err := deniedA.Read(make([]byte, 64)); err == nil {
		t.Errorf("a connection to a port the firewall denies outlived the enable: a read %d bytes", got)
	}
}

// trackFromPeer records c, a connection that host h opened, in h's connection tracking table
// the way the kernel records a flow it picks up mid-stream from a packet of the peer's while
// ufw registers tracking for a moment (see ctNewMsg): the peer as the side that opened it, and
// no answer from h seen.
func trackFromPeer(t *testing.T, h *testbed.Host, c net.Conn) {
	t.Helper()
	local, remote := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	fl := tcpFlow{local: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()), remote: netip.AddrPortFrom(local.Addr().Unmap(), local.Port())}
	err := restest.InHostNet(h, func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		if err := unix.Sendto(fd, ctNewMsg(fl, 300, 1, false), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		if errno, err := nlAck(fd, make([]byte, 8192), 1); err != nil || errno != 0 {
			return fmt.Errorf("%v %w", err, errno)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("tracking %s -> %s from %s's side: %v", fl.local, fl.remote, h.Name(), err)
	}
}

// expectRead writes msg on w and reads it in full from r within d.
func expectRead(t *testing.T, w, r net.Conn, msg []byte, d time.Duration) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { _, err := w.Write(msg); errc <- err }()
	start := time.Now()
	r.SetReadDeadline(start.Add(d))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("%s -> %s: %d bytes not received within %s: %v", w.LocalAddr(), r.LocalAddr(), len(msg), d, err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("%s -> %s: received other bytes than sent", w.LocalAddr(), r.LocalAddr())
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(msg) > 64 {
		t.Logf("%s -> %s: %d bytes in %s", w.LocalAddr(), r.LocalAddr(), len(msg), time.Since(start).Round(time.Millisecond))
	}
}
