package zmtp

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// readyBody is a READY command's body with the given metadata bytes.
func readyBody(meta []byte) []byte {
	return append(append([]byte{5}, "READY"...), meta...)
}

// commandFrame is one short ZMTP command frame.
func commandFrame(body []byte) []byte {
	return append([]byte{flagCommand, byte(len(body))}, body...)
}

// malformedReadies are READY metadata that zmq4 v0.17's decoder (Metadata.UnmarshalZMTP) cut
// out of range: a panic in the goroutine that runs the handshake, which ended the process.
var malformedReadies = map[string][]byte{
	"name length only":          {0},
	"name cut short":            {11, 'S', 'o', 'c'},
	"name, no value length":     append([]byte{11}, "Socket-Type"...),
	"value length cut short":    append(append([]byte{11}, "Socket-Type"...), 0, 0),
	"name length is all of it":  {1},
	"second property cut short": append(append(append([]byte{11}, "Socket-Type"...), 0, 0, 0, 6), append([]byte("DEALER"), 8, 'I')...),
}

// A peer whose READY carries metadata cut short is refused by the guard before zmq4 decodes
// it, on a listening socket and on a dialing one (a hostile master, or one in the middle, would
// otherwise crash minions): the process survives and legitimate peers still get through.
func TestMalformedReadyRefused(t *testing.T) {
	g := make([]byte, 64)
	g[0], g[9], g[10] = 0xff, 0x7f, 3
	copy(g[12:], "NULL")
	t.Run("listening", func(t *testing.T) {
		r, err := ListenRouter("127.0.0.1:0", Limits{MaxMsg: 1 << 14})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		p, err := ListenPub("127.0.0.1:0", Limits{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		for name, meta := range malformedReadies {
			for _, addr := range []string{r.Addr().String(), p.Addr().String()} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.Write(append(append([]byte{}, g...), commandFrame(readyBody(meta))...))
				// The guard answers with its greeting, an ERROR and closes; a panic would
				// have ended the test binary instead.
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, c); err != nil {
					t.Errorf("%s to %s: not closed: %v", name, addr, err)
				}
				c.Close()
			}
		}
		d := zmq4.NewDealer(context.Background(), quiet(), zmq4.WithDialerMaxRetries(0))
		defer d.Close()
		if err := d.Dial(Endpoint(r.Addr().String(), 1<<20)); err != nil {
			t.Fatal(err)
		}
		if err := d.Send(zmq4.NewMsg([]byte("ok"))); err != nil {
			t.Fatal(err)
		}
		if !recvWithin(t, r, 5*time.Second) {
			t.Fatal("a legitimate dealer after the malformed READYs: nothing received")
		}
	})
	t.Run("dialing", func(t *testing.T) {
		for name, meta := range malformedReadies {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.Write(append(append([]byte{}, g...), commandFrame(readyBody(meta))...))
				io.Copy(io.Discard, c)
			}()
			d := zmq4.NewDealer(context.Background(), quiet(), zmq4.WithDialerMaxRetries(0))
			if err := d.Dial(Endpoint(ln.Addr().String(), 1<<20)); err == nil {
				t.Errorf("%s: the dial succeeded", name)
			}
			d.Close()
			ln.Close()
		}
	})
}

// The guard's check of a first command, and zmq4's decoder after it: whatever the check lets
// through, zmq4 decodes without a panic.
func FuzzFirstCommand(f *testing.F) {
	f.Add(readyBody(nil))
	f.Add(readyBody(append(append([]byte{11}, "Socket-Type"...), 0, 0, 0, 6, 'D', 'E', 'A', 'L', 'E', 'R')))
	for _, meta := range malformedReadies {
		f.Add(readyBody(meta))
	}
	f.Add(binary.BigEndian.AppendUint32(readyBody([]byte{0}), 1<<31))
	f.Fuzz(func(t *testing.T, body []byte) {
		if checkFirstCommand(body) != nil {
			return
		}
		if n := int(body[0]); string(body[1:1+n]) == "READY" {
			md := zmq4.Metadata{}
			_ = md.UnmarshalZMTP(body[1+n:])
		}
	})
}
