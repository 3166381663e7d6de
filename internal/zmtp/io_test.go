package zmtp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// header is a ZMTP frame header for a body of size bytes, as zmq4 writes it.
func header(flags byte, size int) []byte {
	if size > 255 {
		return binary.BigEndian.AppendUint64([]byte{flags | flagLong}, uint64(size))
	}
	return []byte{flags, byte(size)}
}

// zmq4Writes are the Write calls zmq4's Conn.send makes for the frames of one message (each
// frame a header, then its body, even an empty one), with the MORE flag on all but the last.
func zmq4Writes(command bool, frames ...[]byte) [][]byte {
	var ws [][]byte
	for i, f := range frames {
		var flags byte
		if i < len(frames)-1 {
			flags |= flagMore
		}
		if command {
			flags |= flagCommand
		}
		ws = append(ws, header(flags, len(f)), f)
	}
	return ws
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// The guard's Write sends what zmq4 writes byte for byte, in order, and in as few system calls
// as the rules in Write's comment allow: one per message whose frames before the last are
// small, nothing at all for zmq4's empty body writes.
func TestWriteCoalescesFramesOfAMessage(t *testing.T) {
	ready := append([]byte{5}, "READY"...)
	ready = append(ready, 11)
	ready = append(ready, "Socket-Type"...)
	ready = append(ready, 0, 0, 0, 3)
	ready = append(ready, "PUB"...)
	cases := []struct {
		name    string
		command bool
		frames  [][]byte
		writes  int // to the network
	}{
		{"topic and body", false, [][]byte{[]byte("job.minion-1"), fill(100, 'b')}, 1},
		{"one frame", false, [][]byte{fill(40, 'r')}, 1},
		{"command", true, [][]byte{ready}, 1},
		{"long frame", false, [][]byte{fill(300, 'l')}, 1},
		{"topic and a large body (no copy)", false, [][]byte{[]byte("t"), fill(1<<20, 'L')}, 1},
		{"empty last frame", false, [][]byte{[]byte("t"), {}}, 1},
		{"empty frames only", false, [][]byte{{}, {}, {}}, 1},
		{"empty first frame", false, [][]byte{{}, fill(7, 'e')}, 1},
		// A first frame above smallFrame is sent when written; the next goes with its header.
		{"large first frame", false, [][]byte{fill(smallFrame+1, 'a'), fill(5, 'b')}, 2},
		{"first frame of smallFrame bytes", false, [][]byte{fill(smallFrame, 'a'), fill(5, 'b')}, 1},
		// Held bytes stay within heldCap: 2+200, 2+200, 2 are held; the third body goes with
		// them (606 > 512), then 2+200, 2 are held and go with the last body.
		{"small frames beyond heldCap", false, [][]byte{fill(200, '1'), fill(200, '2'), fill(200, '3'), fill(200, '4'), fill(10, '5')}, 2},
	}
	for _, swallow := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/swallow=%v", tc.name, swallow), func(t *testing.T) {
				cl, sv := tcpPair(t)
				gc := newConn(cl, nil, 1<<20, nil)
				greeting := serverGreeting[:]
				writes := append([][]byte{greeting}, zmq4Writes(tc.command, tc.frames...)...)
				var want []byte
				for i, w := range writes {
					if i > 0 || !swallow {
						want = append(want, w...)
					}
				}
				if swallow {
					gc.swallow = greeting // as the listener does: zmq4's greeting was sent already
				}
				wantWrites := tc.writes
				if !swallow {
					wantWrites++ // the greeting, sent at once
				}
				got := make([]byte, len(want))
				read := make(chan error, 1)
				go func() { _, err := io.ReadFull(sv, got); read <- err }()
				for _, w := range writes {
					n, err := gc.Write(w)
					if err != nil || n != len(w) {
						t.Fatalf("Write(%d bytes) = %d, %v", len(w), n, err)
					}
				}
				if err := <-read; err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("bytes on the wire differ from the bytes written:\n got %x\nwant %x", got[:min(len(got), 200)], want[:min(len(want), 200)])
				}
				gc.wmu.Lock()
				n, nheld := gc.writes, gc.nheld
				gc.wmu.Unlock()
				if n != wantWrites || nheld != 0 {
					t.Fatalf("%d writes to the network, %d bytes held; want %d, 0", n, nheld, wantWrites)
				}
			})
		}
	}
}

// Through zmq4 itself: SendMsg of a two-frame message over a guarded connection is one write to
// the network, and a stock zmq4 peer reads the frames as sent.
func TestZmq4SendMsgIsOneWrite(t *testing.T) {
	cl, sv := tcpPair(t)
	peer := make(chan *zmq4.Conn, 1)
	go func() {
		zc, err := zmq4.Open(sv, null.Security(), zmq4.Sub, zmq4.SocketIdentity(""), true, nil)
		if err != nil {
			t.Error(err)
		}
		peer <- zc
	}()
	gc := newConn(cl, nil, 1<<20, nil)
	zc, err := zmq4.Open(gc, null.Security(), zmq4.Pub, zmq4.SocketIdentity(""), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub := <-peer
	if sub == nil {
		t.FailNow()
	}
	for _, frames := range [][][]byte{
		{[]byte("job"), []byte("body")},
		{[]byte("job"), fill(70000, 'x')},
		{[]byte("job"), {}},
	} {
		gc.wmu.Lock()
		before := gc.writes
		gc.wmu.Unlock()
		if err := zc.SendMsg(zmq4.NewMsgFrom(frames...)); err != nil {
			t.Fatal(err)
		}
		gc.wmu.Lock()
		writes := gc.writes - before
		gc.wmu.Unlock()
		if writes != 1 {
			t.Errorf("SendMsg of frames of %d and %d bytes: %d writes to the network, want 1", len(frames[0]), len(frames[1]), writes)
		}
		m, err := sub.RecvMsg()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Frames) != 2 || !bytes.Equal(m.Frames[0], frames[0]) || !bytes.Equal(m.Frames[1], frames[1]) {
			t.Fatalf("received %d frames, not the ones sent", len(m.Frames))
		}
	}
}

// readyCommand is a READY command announcing sockType, as a peer sends it.
func readyCommand(sockType string) []byte {
	body := append([]byte{5}, "READY"...)
	body = append(body, 11)
	body = append(body, "Socket-Type"...)
	body = binary.BigEndian.AppendUint32(body, uint32(len(sockType)))
	body = append(body, sockType...)
	return append([]byte{flagCommand, byte(len(body))}, body...)
}

// message is the bytes of a ZMTP message of frames.
func message(frames ...[]byte) []byte {
	var b []byte
	for _, w := range zmq4Writes(false, frames...) {
		b = append(b, w...)
	}
	return b
}

// A trusted connection (here the dialing side, trusted from the start) reads ahead: a greeting,
// a READY and three messages of topic and body that arrived together are one read from the
// network, where zmq4 made 1 + 2 + 3*4 reads.
func TestReadAheadDialingSide(t *testing.T) {
	cl, sv := tcpPair(t)
	in := append(serverGreeting[:], readyCommand("PUB")...)
	var msgs [][][]byte
	for i := range 3 {
		m := [][]byte{[]byte("job"), fill(100+i, byte('a'+i))}
		msgs = append(msgs, m)
		in = append(in, message(m...)...)
	}
	if _, err := sv.Write(in); err != nil { // all there before zmq4 reads a byte
		t.Fatal(err)
	}
	gc := newConn(cl, nil, 1<<20, nil)
	zc, err := zmq4.Open(gc, null.Security(), zmq4.Sub, zmq4.SocketIdentity(""), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range msgs {
		m, err := zc.RecvMsg()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Frames) != 2 || !bytes.Equal(m.Frames[0], want[0]) || !bytes.Equal(m.Frames[1], want[1]) {
			t.Fatalf("received %q, want %q", m.Frames, want)
		}
	}
	if n := gc.reads.Load(); n != 1 {
		t.Fatalf("%d reads from the network, want 1", n)
	}
	if gc.rbuf != nil {
		t.Fatal("a read-ahead buffer is held with nothing left in it")
	}
}

// An untrusted peer's connection reads only what zmq4 asks for, as before (a read per header and
// per body); once trusted, it reads ahead.
func TestReadAheadOnlyOnceTrusted(t *testing.T) {
	r, err := ListenRouter("127.0.0.1:0", Limits{MaxMsg: 1 << 20, PreAuthMsg: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c := rawPeer(t, r.Addr().String(), "DEALER")
	three := func() []byte {
		var b []byte
		for i := range 3 {
			b = append(b, message(fill(50+i, 'm'))...)
		}
		return b
	}
	recv3 := func() []byte {
		var id []byte
		for range 3 {
			m, err := r.Recv()
			if err != nil {
				t.Fatal(err)
			}
			id = m.Frames[0]
		}
		return id
	}
	if _, err := c.Write(three()); err != nil {
		t.Fatal(err)
	}
	id := recv3()
	p := r.peer(id)
	if n := p.gc.reads.Load(); n != 6 {
		t.Fatalf("untrusted: %d reads from the network for 3 messages, want 6 (header, body)", n)
	}
	r.Trust(id, "peer")
	if _, err := c.Write(three()); err != nil {
		t.Fatal(err)
	}
	recv3()
	// The reader may have been waiting in a plain read (for 2 bytes) when Trust came: then the
	// rest is a second read.
	if n := p.gc.reads.Load() - 6; n > 2 {
		t.Fatalf("trusted: %d reads from the network for 3 messages that came together, want at most 2", n)
	}
}

// captureConn records what is written to it.
type captureConn struct {
	net.Conn // nil: only Write and SetWriteDeadline are called
	out      []byte
}

func (c *captureConn) Write(b []byte) (int, error)      { c.out = append(c.out, b...); return len(b), nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }

// Whatever the stream and however it is cut into writes, the guard sends the bytes written, in
// order, holding back only what its rules allow (at most heldCap bytes, and only where the
// stream stands before more of a message).
func FuzzWriteStream(f *testing.F) {
	f.Add(message([]byte("job"), fill(300, 'x')), []byte{2, 3, 2, 100})
	f.Add(append(readyCommand("PUB"), message([]byte{}, []byte("a"))...), []byte{1, 1, 5})
	f.Add(message(fill(200, 'a'), fill(200, 'b'), fill(200, 'c'), []byte("d")), []byte{2, 200})
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		cc := &captureConn{}
		gc := newConn(cc, nil, 1<<20, nil)
		all := append(serverGreeting[:], stream...)
		rest := all
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(cuts) > 0 {
				n = min(int(cuts[i%len(cuts)]), len(rest))
			}
			if n == 0 { // an empty write (zmq4 makes them for empty bodies), then a byte
				if _, err := gc.Write(rest[:0]); err != nil {
					t.Fatal(err)
				}
				n = 1
			}
			if _, err := gc.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
			if gc.nheld > heldCap || (gc.nheld > 0 && !gc.w.wait()) {
				t.Fatalf("%d bytes held where the stream stands at %+v", gc.nheld, gc.w)
			}
			if want := all[:len(all)-len(rest)-gc.nheld]; !bytes.Equal(cc.out, want) {
				t.Fatalf("sent %x, want %x", cc.out, want)
			}
		}
	})
}
