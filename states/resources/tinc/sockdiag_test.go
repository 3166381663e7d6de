package tinc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"golang.org/x/sys/unix"
)

// A member with our key answers our ID; one without keeps the connection open and silent (tinc
// 1.0's tarpit). tcpDials tells the two apart, and destroying the silent dial makes its owner
// read an error at once.
func TestTCPDialsTellsAnsweredFromTarpitted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("destroying a socket needs CAP_NET_ADMIN")
	}
	listen := func(answer bool) net.Listener {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil || !answer {
				io.Copy(io.Discard, c) // silent until the dialler is gone
				return
			}
			c.Write([]byte("0 member 17\n"))
			io.Copy(io.Discard, c)
		}()
		return ln
	}
	good, pit := listen(true), listen(false)
	dial := func(ln net.Listener) (net.Conn, netip.AddrPort) {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("0 me 17\n")); err != nil {
			t.Fatal(err)
		}
		return c, netip.MustParseAddrPort(ln.Addr().String())
	}
	goodConn, goodAddr := dial(good)
	pitConn, pitAddr := dial(pit)
	if line, err := bufio.NewReader(goodConn).ReadString('\n'); err != nil || line != "0 member 17\n" {
		t.Fatalf("the answering member: %q %v", line, err)
	}

	var dials map[netip.AddrPort][]tcpDial
	tb.WaitFor(t, 10*time.Second, "both dials acknowledged", func() bool {
		var err error
		if dials, err = tcpDials([]netip.AddrPort{goodAddr, pitAddr}); err != nil {
			t.Fatal(err)
		}
		return len(dials[goodAddr]) == 1 && len(dials[pitAddr]) == 1 && dials[pitAddr][0].acked > 1
	})
	if len(dials) != 2 {
		t.Fatalf("dials to other ends returned: %v", dials)
	}
	if d := dials[goodAddr][0]; d.received != uint64(len("0 member 17\n")) {
		t.Errorf("the answered dial received %d bytes, want %d", d.received, len("0 member 17\n"))
	}
	if d := dials[pitAddr][0]; d.received != 0 || d.acked != uint64(len("0 me 17\n"))+1 {
		t.Errorf("the tarpitted dial: received %d, acked %d; want 0 and %d", d.received, d.acked, len("0 me 17\n")+1)
	}

	if err := dials[pitAddr][0].destroy(); err != nil {
		t.Fatal(err)
	}
	pitConn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang guard
	if _, err := pitConn.Read(make([]byte, 1)); !errors.Is(err, unix.ECONNABORTED) {
		t.Errorf("read on the destroyed dial: %v, want ECONNABORTED", err)
	}
	after, err := tcpDials([]netip.AddrPort{goodAddr, pitAddr})
	if err != nil {
		t.Fatal(err)
	}
	if len(after[pitAddr]) != 0 || len(after[goodAddr]) != 1 {
		t.Errorf("after destroying the tarpitted dial: %v", after)
	}
}

// A short or malformed inet_diag message (a kernel's answer, never a peer's) is skipped, never
// read past its end.
func TestParseDiagMsgBounds(t *testing.T) {
	full := make([]byte, sizeofInetDiagMsg+4+tcpInfoBytesReceived+8)
	full[0] = unix.AF_INET
	binary.NativeEndian.PutUint16(full[sizeofInetDiagMsg:], uint16(4+tcpInfoBytesReceived+8))
	binary.NativeEndian.PutUint16(full[sizeofInetDiagMsg+2:], inetDiagInfo)
	if _, ok := parseDiagMsg(full); !ok {
		t.Fatal("a whole message was not read")
	}
	for n := 0; n < len(full); n++ {
		if _, ok := parseDiagMsg(full[:n]); ok {
			t.Errorf("a message cut at %d bytes was read", n)
		}
	}
	bad := append([]byte(nil), full...)
	binary.NativeEndian.PutUint16(bad[sizeofInetDiagMsg:], 0xffff) // an attribute longer than the message
	if _, ok := parseDiagMsg(bad); ok {
		t.Error("an attribute running past the message was read")
	}
	if _, ok := parseDiagMsg(full[:sizeofInetDiagMsg]); ok {
		t.Error("a message without tcp_info was read")
	}
	other := append([]byte(nil), full...)
	other[0] = 99 // not an address family of ours
	if _, ok := parseDiagMsg(other); ok {
		t.Error("a message of another address family was read")
	}
}
