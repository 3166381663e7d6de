package zmtp

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// Write sends what zmq4 writes, with a deadline (WriteTimeout), and closes the connection if a
// write fails. zmq4 writes each frame as two calls, its header (2 or 9 bytes) and then its body,
// and each frame of a message in turn: a PUB message of topic and body was four write system
// calls, each one also running the receiver's TCP path and waking it. Write follows the frames
// zmq4 writes and keeps back (copies, at most heldCap bytes) what is certain to be followed at
// once by more of the same message from the same SendMsg call:
//
//   - a frame header whose body is not empty (zmq4 writes the body next), and
//   - a whole frame of at most smallFrame bytes with the MORE flag (a topic, an identity): zmq4
//     writes the next frame of the message next.
//
// The rest goes out with what was kept in one writev: a message of frames up to the last one's
// body is one system call. Everything else is sent at once: the greeting, a frame or command
// with nothing after it, a frame's body written in parts. The bytes on the wire are exactly the
// bytes written, in order; only the number of system calls changes. A write zmq4 makes with an
// empty body writes nothing.
func (c *conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	k := min(len(b), len(c.swallow))
	if !bytes.Equal(b[:k], c.swallow[:k]) {
		c.Close()
		return 0, &violation{why: "zmq4's greeting differs from the one the guard sent"}
	}
	c.swallow = c.swallow[k:]
	c.w.feed(b) // the swallowed greeting included: the parser follows all zmq4 writes
	out := b[k:]
	if len(out) == 0 {
		return len(b), nil
	}
	if c.w.wait() && c.nheld+len(out) <= heldCap {
		if c.held == nil {
			c.held = heldPool.Get().(*[heldCap]byte)
		}
		c.nheld += copy(c.held[c.nheld:], out)
		return len(b), nil
	}
	n, err := c.send(out)
	if err != nil {
		c.Close()
		return k + n, &violation{why: "write: " + err.Error()}
	}
	return len(b), nil
}

// send writes what is held and then out, in one system call where the connection allows
// (writev on TCP), and returns how many bytes of out were written.
func (c *conn) send(out []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(WriteTimeout))
	c.writes++
	if c.held == nil {
		return c.Conn.Write(out)
	}
	h := c.nheld
	bufs := net.Buffers{c.held[:h], out}
	n, err := bufs.WriteTo(c.Conn)
	heldPool.Put(c.held)
	c.held, c.nheld = nil, 0
	return int(max(n-int64(h), 0)), err
}

// Bounds of what Write keeps back: a frame of at most smallFrame bytes with the MORE flag, and
// heldCap bytes in all (a topic frame and the next frame's header fit with room to spare).
const (
	smallFrame = 256
	heldCap    = 512
)

// heldPool holds the buffers of bytes Write keeps back: one is taken only for the length of a
// SendMsg, so idle connections hold none.
var heldPool = sync.Pool{New: func() any { return new([heldCap]byte) }}

// writeParser follows the ZMTP stream zmq4 writes (greeting, then frames) to say where it is.
type writeParser struct {
	greetLeft int
	hdr       [9]byte
	hdrHave   int
	flags     byte   // of the current (or last) frame
	size      uint64 // of the current (or last) frame's body
	bodyLeft  uint64
}

func (w *writeParser) feed(b []byte) {
	for len(b) > 0 {
		switch {
		case w.greetLeft > 0:
			k := min(w.greetLeft, len(b))
			w.greetLeft -= k
			b = b[k:]
		case w.bodyLeft > 0:
			k := min(w.bodyLeft, uint64(len(b)))
			w.bodyLeft -= k
			b = b[k:]
		default:
			w.hdr[w.hdrHave] = b[0]
			w.hdrHave++
			b = b[1:]
			need := 2
			if w.hdr[0]&flagLong != 0 {
				need = 9
			}
			if w.hdrHave < need {
				continue
			}
			w.flags = w.hdr[0]
			if need == 2 {
				w.size = uint64(w.hdr[1])
			} else {
				w.size = binary.BigEndian.Uint64(w.hdr[1:9])
			}
			w.hdrHave = 0
			w.bodyLeft = w.size
		}
	}
}

// wait says whether the stream stands where more of the same message is certain to follow at
// once: right after a frame header whose body is not empty, or right after a whole small
// frame (not a command) with the MORE flag.
func (w *writeParser) wait() bool {
	if w.greetLeft > 0 || w.hdrHave > 0 {
		return false
	}
	if w.bodyLeft > 0 {
		return w.bodyLeft == w.size // nothing of the body written yet
	}
	return w.flags&flagMore != 0 && w.flags&flagCommand == 0 && w.size <= smallFrame
}
