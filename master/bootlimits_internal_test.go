package master

import (
	"io"
	"net"
	"testing"
	"time"
)

// A full bootstrap endpoint never refuses a newcomer for want of a victim: silent connections,
// however young, give their places to a droplet that asks for the binary, and its download
// goes through while they are renewed. (Young places were spared: an attacker that renewed its
// silent connections once a second kept every droplet out.)
func TestBootstrapYoungSilentPlacesEvicted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const places = 4
	l := newLimitListener(ln, places, 2*places)
	defer l.Close()
	go func() { // a client that asks gets 256 KiB, and the connection stays until it closes
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					c.Write(make([]byte, 256<<10))
					io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	silent := func() {
		for range places {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
	}
	silent()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		n := l.n
		l.mu.Unlock()
		if n == places {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d places taken, want %d", n, places)
		}
	}
	droplet, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer droplet.Close()
	droplet.Write([]byte("G"))
	// Once the droplet is receiving, the silent connections are renewed: they evict each
	// other (one the droplet's arrival, four the renewal), not the droplet.
	for deadline := time.Now().Add(5 * time.Second); !receiving(l); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the droplet's download never started")
		}
	}
	silent()
	for deadline := time.Now().Add(5 * time.Second); l.Evicted.Load() < places+1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("evicted %d connections, want %d", l.Evicted.Load(), places+1)
		}
	}
	if !receiving(l) {
		t.Error("the droplet's connection was evicted")
	}
	droplet.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.ReadFull(droplet, make([]byte, 256<<10)); err != nil {
		t.Fatalf("the droplet got %d bytes: %v (evicted %d)", n, err, l.Evicted.Load())
	}
}

// receiving reports whether a connection of l has been sent anything.
func receiving(l *limitListener) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		if c.sent.Load() > 0 {
			return true
		}
	}
	return false
}
