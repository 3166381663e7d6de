package minion

import (
	"context"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// blackholedPort listens on loopback with a full accept queue: the kernel drops the SYNs of any
// further connection, as a blackhole on the path does, so a dial there waits until it gives up.
func blackholedPort(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue (a backlog of 0 holds one connection), never accepted.
	for i := 0; i < 1; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	probe, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		probe.Close()
		t.Skip("this kernel accepted a connection past a full accept queue; no blackhole to test with")
	}
	return addr
}

// A master port that drops SYNs holds a session for dialTimeout, not zmq4's 5 minutes (or the
// kernel's two of SYN retries): the minion then goes on to the next master.
func TestDialGivesUpOnABlackholedPort(t *testing.T) {
	addr := blackholedPort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := dial(ctx, &Minion{}, masterAddr{req: addr})
	took := time.Since(start)
	if err == nil {
		s.close()
		t.Fatalf("dial of a blackholed port %s succeeded", addr)
	}
	if took > dialTimeout+5*time.Second {
		t.Fatalf("dial of a blackholed port gave up after %s, want about %s", took.Round(time.Second), dialTimeout)
	}
	t.Logf("gave up after %s: %v", took.Round(100*time.Millisecond), err)
}
