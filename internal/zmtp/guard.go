// Package zmtp wraps github.com/go-zeromq/zmq4's TCP transport with the limits that zmq4 lacks
// for a port open to the network:
//
//   - zmq4 allocates a frame body of whatever size the peer announces (up to 2^63 bytes), so one
//     header could make the master run out of memory. The guard parses the ZMTP stream as it
//     passes and drops a connection whose frame or message exceeds the limit before zmq4 sees it.
//   - zmq4 performs the handshake inside its accept loop with no deadline, so a peer that
//     connects and says nothing (or stops halfway through the handshake) would stop every later
//     connection. The guard runs the peer's side of the handshake that zmq4 would wait for (its
//     greeting and first command) concurrently, outside the accept loop, with a deadline, and
//     hands zmq4 only connections whose handshake bytes have all arrived.
//   - zmq4 writes to a subscriber with no deadline, so one subscriber that stops reading would
//     stall the PUB socket for everyone. The guard puts a deadline on every write and closes a
//     connection that misses it.
//
// Endpoints made by Endpoint use a transport registered with zmq4 under a name that encodes the
// limit, so sockets in one process can differ.
package zmtp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/transport"
)

// Timeouts of the guard. They are variables so tests can shorten them; change them only before
// any socket is made.
var (
	HandshakeTimeout = 5 * time.Second
	WriteTimeout     = 15 * time.Second
)

// MaxPendingHandshakes bounds connections that have not finished their greeting, per listener.
// Each costs a goroutine and 64 bytes for at most HandshakeTimeout. It is well above the
// number of minions that reconnect at once after a master restart on a big fleet: at 256, the
// 5,000-minion swarm had most of its connection attempts shed (29,730 for 5,000 sessions).
const MaxPendingHandshakes = 4096

// MaxConns bounds the live connections per listener.
const MaxConns = 50000

const (
	greetingLen = 64
	maxFrames   = 16 // frames per ZMTP message; brine uses at most 2 (ROUTER id + body)
)

var (
	regMu      sync.Mutex
	registered = map[int]string{}
)

// Endpoint returns a zmq4 endpoint for the TCP address addr ("host:port") whose connections are
// guarded with maxMsg as the largest ZMTP message (all frames together) accepted from the peer.
func Endpoint(addr string, maxMsg int) string {
	regMu.Lock()
	defer regMu.Unlock()
	name, ok := registered[maxMsg]
	if !ok {
		name = "brine" + strconv.Itoa(maxMsg)
		if err := zmq4.RegisterTransport(name, &guardTransport{max: maxMsg}); err != nil {
			panic(err) // only on a duplicate name, which the map prevents
		}
		registered[maxMsg] = name
	}
	return name + "://" + addr
}

type guardTransport struct {
	max int
}

func (g *guardTransport) Dial(ctx context.Context, d transport.Dialer, addr string) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newConn(c, g.max, nil, nil), nil
}

func (g *guardTransport) Listen(ctx context.Context, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	gl := &listener{Listener: l, max: g.max, ready: make(chan net.Conn), done: make(chan struct{}), sem: make(chan struct{}, MaxPendingHandshakes)}
	go gl.loop()
	return gl, nil
}

func (g *guardTransport) Addr(ep string) (string, error) {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return "", err
	}
	if port == "*" || port == "" {
		port = "0"
	}
	if host == "*" {
		host = ""
	}
	return net.JoinHostPort(host, port), nil
}

// listener accepts raw connections and reads each one's greeting in its own goroutine; only
// connections that sent a plausible ZMTP 3 greeting in time reach zmq4's accept loop.
type listener struct {
	net.Listener
	max   int
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	sem   chan struct{} // pending handshakes
	live  atomic.Int64
}

func (l *listener) loop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.Close()
			return
		}
		select {
		case l.sem <- struct{}{}:
		default:
			c.Close() // too many half-open connections: shed load
			continue
		}
		if l.live.Load() >= MaxConns {
			<-l.sem
			c.Close()
			continue
		}
		go l.greet(c)
	}
}

func (l *listener) greet(c net.Conn) {
	defer func() { <-l.sem }()
	_ = c.SetReadDeadline(time.Now().Add(HandshakeTimeout))
	var g [greetingLen]byte
	if _, err := io.ReadFull(c, g[:]); err != nil || !plausibleGreeting(g[:]) {
		c.Close()
		return
	}
	// zmq4 runs the rest of the handshake (it writes its greeting, then reads the peer's READY)
	// inside its accept loop, so a peer that sent a greeting and then went silent would hold
	// every later connection for up to HandshakeTimeout. The guard does that part here instead:
	// it sends the greeting zmq4 would send and reads the peer's first command; zmq4 then reads
	// both from the prefix and the guard swallows its greeting, so its accept loop never waits
	// on a peer.
	_ = c.SetWriteDeadline(time.Now().Add(HandshakeTimeout))
	if _, err := c.Write(serverGreeting[:]); err != nil {
		c.Close()
		return
	}
	cmd, err := readCommand(c, min(maxHandshakeCommand, l.max))
	if err != nil {
		c.Close()
		return
	}
	l.live.Add(1)
	gc := newConn(c, l.max, append(g[:], cmd...), func() { l.live.Add(-1) })
	gc.swallow = serverGreeting[:]
	select {
	case l.ready <- gc:
	case <-l.done:
		gc.Close()
	case <-time.After(HandshakeTimeout):
		gc.Close() // zmq4's accept loop is stuck elsewhere; do not pile up
	}
}

// plausibleGreeting checks the ZMTP 3.x signature and version and the NULL mechanism (the only
// one brine speaks); zmq4 checks the rest.
func plausibleGreeting(g []byte) bool {
	return len(g) == greetingLen && g[0] == 0xff && g[9] == 0x7f && g[10] == 3 &&
		string(g[12:17]) == "NULL\x00"
}

// serverGreeting is, byte for byte, the greeting zmq4 v0.17 sends as a NULL-mechanism server
// (ZMTP 3.0, as-server 0). The guard sends it for zmq4 and checks that zmq4's own write of it
// matches before swallowing it.
var serverGreeting = func() (g [greetingLen]byte) {
	g[0], g[9], g[10], g[11] = 0xff, 0x7f, 3, 0
	copy(g[12:], "NULL")
	return g
}()

// maxHandshakeCommand bounds the peer's first command (READY with its metadata: socket type
// and an identity of at most 255 bytes).
const maxHandshakeCommand = 1024

// readCommand reads one whole ZMTP command frame (flags, size, body) from c and returns its
// bytes as they came.
func readCommand(c net.Conn, max int) ([]byte, error) {
	hdr := make([]byte, 2, 9)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	flags := hdr[0]
	if flags&flagCommand == 0 || flags&^(flagLong|flagCommand) != 0 {
		return nil, fmt.Errorf("first frame is not a command (flags %#x)", flags)
	}
	size := uint64(hdr[1])
	if flags&flagLong != 0 {
		hdr = hdr[:9]
		if _, err := io.ReadFull(c, hdr[2:]); err != nil {
			return nil, err
		}
		size = binary.BigEndian.Uint64(hdr[1:9])
	}
	if size > uint64(max) {
		return nil, fmt.Errorf("handshake command of %d bytes", size)
	}
	frame := make([]byte, len(hdr)+int(size))
	copy(frame, hdr)
	if _, err := io.ReadFull(c, frame[len(hdr):]); err != nil {
		return nil, err
	}
	return frame, nil
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

// conn is a guarded connection. Reads pass through a ZMTP frame parser that enforces limits.
type conn struct {
	net.Conn
	max     int
	prefix  []byte // greeting and first command already read by the listener
	swallow []byte // what the listener already wrote for zmq4: zmq4's first write, checked and dropped
	onClose func()
	closed  sync.Once

	mu sync.Mutex // guards swallow and the parser state (zmq4 reads from one goroutine, but be safe)
	p  parser
}

func newConn(c net.Conn, max int, prefix []byte, onClose func()) *conn {
	gc := &conn{Conn: c, max: max, prefix: prefix, onClose: onClose}
	gc.p = parser{max: max, greetLeft: greetingLen}
	if prefix == nil {
		_ = c.SetReadDeadline(time.Now().Add(HandshakeTimeout))
	}
	return gc
}

// errViolation is wrapped around io.EOF so that zmq4 marks the connection closed.
type violation struct{ why string }

func (v *violation) Error() string { return "zmtp guard: " + v.why }
func (v *violation) Unwrap() error { return io.EOF }

func (c *conn) Read(b []byte) (int, error) {
	var n int
	var err error
	if len(c.prefix) > 0 {
		n = copy(b, c.prefix)
		c.prefix = c.prefix[n:]
	} else {
		n, err = c.Conn.Read(b)
	}
	c.mu.Lock()
	verr := c.p.feed(b[:n])
	handshaken := c.p.handshaken
	c.mu.Unlock()
	if verr != nil {
		c.Close()
		return 0, &violation{why: verr.Error()}
	}
	if handshaken {
		c.mu.Lock()
		if !c.p.deadlineCleared {
			c.p.deadlineCleared = true
			_ = c.Conn.SetReadDeadline(time.Time{})
		}
		c.mu.Unlock()
	}
	if err != nil && !handshaken {
		// zmq4 leaks the connection when its handshake fails on the dialing side (socket.Dial
		// returns without closing it): close it here, or a reconnect storm runs out of fds.
		c.Close()
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// zmq4 does not treat a timeout as fatal; it is, here.
			c.Close()
			return n, &violation{why: "handshake timeout"}
		}
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	k := min(len(b), len(c.swallow))
	same := bytes.Equal(b[:k], c.swallow[:k])
	c.swallow = c.swallow[k:]
	c.mu.Unlock()
	if !same {
		c.Close()
		return 0, &violation{why: "zmq4's greeting differs from the one the guard sent"}
	}
	if k == len(b) {
		return k, nil
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(WriteTimeout))
	n, err := c.Conn.Write(b[k:])
	if err != nil {
		c.Close()
		return k + n, &violation{why: "write: " + err.Error()}
	}
	return k + n, nil
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// parser follows the ZMTP 3 stream: a 64-byte greeting, then frames of flags, a 1- or 8-byte
// size, and a body. It never buffers a body; it only counts.
type parser struct {
	max             int
	greetLeft       int
	hdr             [9]byte
	hdrHave         int
	bodyLeft        uint64
	msgTotal        uint64
	frames          int
	handshaken      bool // the peer's first command (READY) has been read
	deadlineCleared bool
	inCommand       bool
}

const (
	flagMore    = 0x01
	flagLong    = 0x02
	flagCommand = 0x04
)

func (p *parser) feed(b []byte) error {
	for len(b) > 0 {
		switch {
		case p.greetLeft > 0:
			k := min(p.greetLeft, len(b))
			p.greetLeft -= k
			b = b[k:]
		case p.bodyLeft > 0:
			k := uint64(len(b))
			if k > p.bodyLeft {
				k = p.bodyLeft
			}
			p.bodyLeft -= k
			b = b[k:]
			if p.bodyLeft == 0 {
				p.endFrame()
			}
		default:
			p.hdr[p.hdrHave] = b[0]
			p.hdrHave++
			b = b[1:]
			if err := p.header(); err != nil {
				return err
			}
		}
	}
	return nil
}

// header consumes a (possibly partial) frame header in p.hdr.
func (p *parser) header() error {
	flags := p.hdr[0]
	if flags&^(flagMore|flagLong|flagCommand) != 0 {
		return fmt.Errorf("reserved frame flags %#x", flags)
	}
	need := 2
	if flags&flagLong != 0 {
		need = 9
	}
	if p.hdrHave < need {
		return nil
	}
	var size uint64
	if need == 2 {
		size = uint64(p.hdr[1])
	} else {
		size = binary.BigEndian.Uint64(p.hdr[1:9])
	}
	p.hdrHave = 0
	p.frames++
	p.msgTotal += size
	if size > uint64(p.max) || p.msgTotal > uint64(p.max) {
		return fmt.Errorf("message of more than %d bytes", p.max)
	}
	if p.frames > maxFrames {
		return fmt.Errorf("message of more than %d frames", maxFrames)
	}
	p.inCommand = flags&flagCommand != 0
	if flags&flagMore == 0 {
		p.frames, p.msgTotal = 0, 0
	}
	p.bodyLeft = size
	if size == 0 {
		p.endFrame()
	}
	return nil
}

func (p *parser) endFrame() {
	if p.inCommand {
		p.handshaken = true
	}
}
