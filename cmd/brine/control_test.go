package main

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/brinecm/brine/control"
)

// Hostile local clients against a real master process: three times the connection bound in
// connections that send nothing do not keep `brine ping` out (the master closes the silent ones
// to make room), and an oversized request gets a clear error while the master carries on.
func TestControlSocketHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master and a minion")
	}
	sock := cluster(t, 1)
	var idle []net.Conn
	for range 3 * control.DefaultMaxConns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	out, stderr, code := brine(t, "ping", "r1", "--socket", sock, "--timeout", "20s")
	if code != 0 || !strings.Contains(out, "r1: pong") {
		t.Fatalf("ping with %d idle connections: exit %d\n%s%s", len(idle), code, out, stderr)
	}
	// The first silent connection was closed to make room (io.ReadAll returns once it is).
	if got, err := io.ReadAll(idle[0]); err != nil || len(got) != 0 {
		t.Fatalf("the first idle connection: %q %v", got, err)
	}
	for _, c := range idle {
		c.Close()
	}

	// A request larger than its op takes: refused before it is read whole, with the reason.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.Write([]byte(`{"op":"ping","body":{"target":"`))
		chunk := []byte(strings.Repeat("a", 1<<20))
		for range control.DefaultMaxRequest/len(chunk) + 2 {
			if _, err := c.Write(chunk); err != nil {
				return // the master hung up
			}
		}
	}()
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, `"kind":"error"`) || !strings.Contains(line, "control request too large: more than 4194304 bytes") {
		t.Fatalf("oversized request: %q", line)
	}
	out, stderr, code = brine(t, "ping", "r1", "--socket", sock, "--timeout", "20s")
	if code != 0 || !strings.Contains(out, "r1: pong") {
		t.Fatalf("ping after the oversized request: exit %d\n%s%s", code, out, stderr)
	}
}
