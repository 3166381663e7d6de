package master_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// A peer without a key sends a ZMTP greeting and a READY whose metadata is cut short (75
// bytes in all) to each port of a real master: zmq4's metadata decoder panicked on it in the
// goroutine of the handshake and took the master down. Now the guard refuses it, and the
// master goes on serving its minions.
func TestMalformedReadyDoesNotCrashMaster(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "steady", nil)
	ready := append(append([]byte{5}, "READY"...), append([]byte{11}, "Socket-Type"...)...)
	for _, addr := range []string{m.RequestAddr(), m.PublishAddr()} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(append(append(zmtpGreeting(), 0x04, byte(len(ready))), ready...))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("the malformed READY to %s: connection not closed: %v", addr, err)
		}
		c.Close()
	}
	if res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "steady", Timeout: 30 * time.Second}); res.Failed() || len(res.Returns) != 1 {
		t.Fatalf("ping after the malformed READYs: %+v", res)
	}
}
