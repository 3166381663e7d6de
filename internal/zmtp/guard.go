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
//   - zmq4 waits for the peer's whole 64-byte greeting before it sends its own, while libzmq
//     sends its 10-byte signature and waits for the peer's (ZMTP 3.x, RFC 23/37), so the two
//     never meet. The guard sends the whole greeting first, then reads the peer's in parts.
//   - zmq4 makes a system call for each frame header and each body it writes or reads. The guard
//     writes a message's frames in one writev (write.go) and reads ahead on trusted
//     connections only (ahead.go).
//   - Nothing bounds what unauthenticated peers take together. A listener here has Limits: live
//     connections and pending handshakes in all and per source address, a small message limit
//     until the application trusts the connection (Router.Trust), and a budget of bytes that
//     untrusted connections may have announced and not yet delivered, all connections together.
//
// Endpoints made by Endpoint use a transport registered with zmq4 under a name that encodes the
// limit, so sockets in one process can differ.
package zmtp

import (
	"bytes"
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/transport"
)

// Timeouts of the guard. They are variables so tests can shorten them; change them only before
// any socket is made.
var (
	HandshakeTimeout = 5 * time.Second
	WriteTimeout     = 15 * time.Second
	// FrameTimeout bounds how long an untrusted peer may take to deliver a frame it started
	// (header and body), so that it cannot hold its share of the in-flight budget by sending a
	// header and then a byte now and then.
	FrameTimeout = 10 * time.Second
)

// Limits bound what the peers of one listener may take. A zero field takes its default from
// DefaultLimits.
type Limits struct {
	MaxMsg              int   // largest message (all frames) from a trusted peer, or any peer if PreAuthMsg is 0
	PreAuthMsg          int   // largest message from a peer the application has not trusted (Router.Trust)
	InFlight            int64 // bytes announced by untrusted peers' frames and not yet received, all together
	MaxConns            int   // live connections, handshakes included
	MaxConnsPerSource   int   // live connections from one source address (IPv6: one /64)
	MaxPending          int   // connections that have not finished their handshake
	MaxPendingPerSource int   // the same, from one source address
	// PreAuthRate: messages per second from untrusted peers of one source address, and new
	// connections per second from one source address (bursts: twice that).
	PreAuthRate    int
	SendQueue      int // messages queued per peer; a peer whose queue is full is dropped (Router) or skipped (Pub)
	MaxSubs        int // Pub: subscriptions, all subscribers together
	MaxSubsPerPeer int // Pub: subscriptions of one subscriber
	MaxTopic       int // Pub: bytes of one subscription topic
	// Serial (Router): a peer's next message is read only once the application has called
	// Router.Done for the one before, so that a peer, trusted or not, holds at most one message
	// in the master (one worker, one MaxMsg of memory) and TCP holds back the rest.
	Serial bool
	// TrustedRate (Router): messages per second from the trusted connections of one holder
	// (Router.Trust), bursts of twice that; a connection is not read while its holder is
	// over. 0: no limit.
	TrustedRate int
	// TrustedBytes (Router): bytes per second from the trusted connections of one holder,
	// bursts of twice that or of two MaxMsg messages, whichever is more. 0: no limit.
	TrustedBytes int
}

// DefaultLimits are the limits of a listener whose Limits leave a field zero.
var DefaultLimits = Limits{
	MaxMsg:              1 << 20,
	InFlight:            16 << 20,
	MaxConns:            50000,
	MaxConnsPerSource:   512,
	MaxPending:          4096,
	MaxPendingPerSource: 64,
	PreAuthRate:         50,
	SendQueue:           256,
	MaxSubs:             100000,
	MaxSubsPerPeer:      16,
	MaxTopic:            256,
}

func (l Limits) filled() Limits {
	d := DefaultLimits
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.MaxMsg, d.MaxMsg)
	if l.PreAuthMsg <= 0 || l.PreAuthMsg > l.MaxMsg {
		l.PreAuthMsg = l.MaxMsg
	}
	if l.InFlight <= 0 {
		l.InFlight = d.InFlight
	}
	set(&l.MaxConns, d.MaxConns)
	set(&l.MaxConnsPerSource, d.MaxConnsPerSource)
	set(&l.MaxPending, d.MaxPending)
	set(&l.MaxPendingPerSource, d.MaxPendingPerSource)
	set(&l.PreAuthRate, d.PreAuthRate)
	set(&l.SendQueue, d.SendQueue)
	set(&l.MaxSubs, d.MaxSubs)
	set(&l.MaxSubsPerPeer, d.MaxSubsPerPeer)
	set(&l.MaxTopic, d.MaxTopic)
	return l
}

const (
	greetingLen  = 64
	signatureLen = 10
	maxFrames    = 16 // frames per ZMTP message; brine uses at most 2 (ROUTER id + body)
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
	return newConn(c, nil, g.max, nil), nil
}

func (g *guardTransport) Listen(ctx context.Context, addr string) (net.Listener, error) {
	return listen(addr, Limits{MaxMsg: g.max})
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

// listener accepts raw connections and runs each one's greeting in its own goroutine; only
// connections that completed a plausible ZMTP 3 greeting in time reach zmq4's accept loop.
type listener struct {
	net.Listener
	lim   Limits
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once

	fmu          sync.Mutex   // guards inFlight and reservations; taken with no other lock after it
	inFlight     int64        // bytes announced by untrusted connections and not yet received
	reservations list.List    // of *reservation, oldest first
	AcceptErrors atomic.Int64 // failed Accepts (EMFILE and the like), each retried after a pause
	Shed         atomic.Int64 // connections closed at once because a limit was reached
	Greeted      atomic.Int64 // connections whose greeting and first command the guard took
	Evicted      atomic.Int64 // connections closed to make room for a new one (evict.go)

	mu      sync.Mutex // guards the counts and queues below
	pending int
	conns   int
	// Connections that may be evicted for a new one (evict.go), oldest first, and how many of
	// pending and conns are evicted ones not yet gone.
	pendingQ, untrustedQ           list.List
	evictingPending, evictingConns int
	sources                        map[string]*sourceCount
	idle                           []*sourceCount // sources whose last connection closed, oldest first (see release)
}

// sourceCount is what one source address holds, and its token buckets of untrusted messages
// and of new connections.
type sourceCount struct {
	key            string
	pending, conns int
	tokens         float64
	last           time.Time
	connTokens     float64
	connLast       time.Time
	idleSince      time.Time
}

func listen(addr string, lim Limits) (*listener, error) {
	nl, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &listener{Listener: nl, lim: lim.filled(), ready: make(chan net.Conn), done: make(chan struct{}),
		sources: map[string]*sourceCount{}}
	go l.loop()
	return l, nil
}

// Accept backoff, as net/http does: a failed Accept (out of file descriptors, most often) is
// retried after 5 ms, doubling up to 1 s; the listener stays open until Close.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

func (l *listener) loop() {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.AcceptErrors.Add(1)
			// Out of file descriptors, most often: the oldest connection that has not
			// authenticated gives its own back, so that peers that never authenticate
			// cannot keep the ones that do out.
			closeAll(l.evictForDescriptor())
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			t := time.NewTimer(delay)
			select {
			case <-l.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		src := SourceOf(c.RemoteAddr())
		sl, victims := l.admit(src, c)
		closeAll(victims)
		if sl == nil {
			l.Shed.Add(1)
			c.Close()
			continue
		}
		go l.greet(c, sl)
	}
}

// SourceOf is the source a connection counts against: its IP address, or its /64 for IPv6,
// where one host commonly has a whole /64.
func SourceOf(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// admit counts a new connection c from src as pending and returns its slot, or nil if a limit
// is reached. At the limit of pending handshakes, or of connections, the oldest handshake (or
// the oldest connection not trusted, or else the oldest handshake) is evicted for it: the
// returned victims, to be closed by the caller. A source at its own limits is refused.
func (l *listener) admit(src string, c net.Conn) (*slot, []io.Closer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.sweep(now)
	s := l.sources[src]
	rate := float64(l.lim.PreAuthRate)
	if s == nil {
		s = &sourceCount{key: src, tokens: 2 * rate, last: now, connTokens: 2 * rate, connLast: now}
	}
	if s.pending >= l.lim.MaxPendingPerSource || s.conns >= l.lim.MaxConnsPerSource {
		return nil, nil
	}
	// New connections from a source are rate-limited like its messages: each one costs a
	// handshake (goroutines, a greeting, zmq4's READY), and three addresses that connected,
	// were cut off and connected again, 3,900 times a second, took 0.6 of a core and made a
	// minion's ping 20 times as slow, with every count within its limits.
	s.connTokens = min(s.connTokens+now.Sub(s.connLast).Seconds()*rate, 2*rate)
	s.connLast = now
	if s.connTokens < 1 {
		return nil, nil // s is known (a new one has a full bucket): sweep forgets it in turn
	}
	s.connTokens--
	var victims []io.Closer
	if l.pending-l.evictingPending >= l.lim.MaxPending {
		v := l.evictOldest(&l.pendingQ)
		if v == nil {
			return nil, nil
		}
		victims = append(victims, v)
	}
	if l.conns-l.evictingConns >= l.lim.MaxConns {
		v := l.evictOldest(&l.untrustedQ)
		if v == nil {
			v = l.evictOldest(&l.pendingQ)
		}
		if v == nil {
			return nil, victims
		}
		victims = append(victims, v)
	}
	l.sources[src] = s
	l.pending++
	l.conns++
	s.pending++
	s.conns++
	sl := &slot{src: src, c: c, pending: true}
	sl.elem = l.pendingQ.PushBack(sl)
	sl.queue = &l.pendingQ
	return sl, victims
}

// handshaken moves a connection from pending to live, and not trusted: gc now stands for it.
func (l *listener) handshaken(sl *slot, gc *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending--
	l.sources[sl.src].pending--
	sl.pending = false
	if sl.evicted {
		l.evictingPending-- // and still evicting: conns is counted down at its release
	}
	l.unqueue(sl)
	if !sl.evicted && !sl.released {
		sl.c = gc
		sl.elem = l.untrustedQ.PushBack(sl)
		sl.queue = &l.untrustedQ
	}
}

// release forgets a connection.
func (l *listener) release(sl *slot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sl.released {
		return
	}
	sl.released = true
	l.unqueue(sl)
	s := l.sources[sl.src]
	if sl.pending {
		l.pending--
		s.pending--
		if sl.evicted {
			l.evictingPending--
		}
	}
	if sl.evicted {
		l.evictingConns--
	}
	l.conns--
	s.conns--
	if s.conns == 0 {
		// Kept until its bucket is full again, so that reconnecting does not refill it.
		s.idleSince = time.Now()
		l.idle = append(l.idle, s)
	}
}

// sweep forgets idle sources whose bucket has refilled: O(1) amortised, oldest first.
func (l *listener) sweep(now time.Time) {
	refill := 2 * time.Second // a bucket refills from empty in 2 s (burst = 2 s of PreAuthRate)
	for len(l.idle) > 0 && now.Sub(l.idle[0].idleSince) > refill {
		s := l.idle[0]
		l.idle[0] = nil
		l.idle = l.idle[1:]
		if s.conns == 0 && now.Sub(s.idleSince) > refill && l.sources[s.key] == s {
			delete(l.sources, s.key)
		}
	}
}

// wait takes a token of src's bucket for one message of an untrusted peer, waiting as long as
// the bucket is in debt (messages of a source that sends faster than PreAuthRate wait their
// turn; the connection is not read meanwhile). It returns false if done closes first.
func (l *listener) wait(src string, done <-chan struct{}) bool {
	now := time.Now()
	l.mu.Lock()
	s := l.sources[src]
	if s == nil {
		l.mu.Unlock()
		return true
	}
	rate := float64(l.lim.PreAuthRate)
	s.tokens = min(s.tokens+now.Sub(s.last).Seconds()*rate, 2*rate)
	s.last = now
	s.tokens--
	debt := -s.tokens
	l.mu.Unlock()
	if debt <= 0 {
		return true
	}
	t := time.NewTimer(time.Duration(debt / rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// Counts returns the live connections (handshakes included) and pending handshakes.
func (l *listener) Counts() (conns, pending int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns, l.pending
}

// greet runs the server side of the ZMTP greeting and reads the peer's first command. The
// guard sends its whole greeting first, without waiting for the peer's: a libzmq peer sends
// its 10-byte signature and waits for ours before it sends the rest (RFC 23, "version
// negotiation"), while zmq4 waits for all 64 bytes before it writes a byte. A peer of a later
// ZMTP 3 minor version (libzmq: 3.1) sees our 3.0 and speaks 3.0 with us.
func (l *listener) greet(c net.Conn, sl *slot) {
	ok := false
	defer func() {
		if !ok {
			c.Close()
			l.release(sl)
		}
	}()
	_ = c.SetDeadline(time.Now().Add(HandshakeTimeout))
	if _, err := c.Write(serverGreeting[:]); err != nil {
		return
	}
	var g [greetingLen]byte
	if _, err := io.ReadFull(c, g[:signatureLen]); err != nil || g[0] != 0xff || g[9]&1 == 0 {
		return // not ZMTP 2 or later
	}
	if _, err := io.ReadFull(c, g[signatureLen:signatureLen+1]); err != nil || g[10] < 3 {
		return // ZMTP 1 or 2: brine speaks 3 only
	}
	if _, err := io.ReadFull(c, g[signatureLen+1:]); err != nil {
		return
	}
	if mech := mechanism(g[:]); mech != "NULL" {
		// We announced NULL, so a libzmq peer already knows; say why and hang up.
		_, _ = c.Write(errorCommand("security mechanism " + strconv.Quote(mech) + " not supported: brine speaks NULL"))
		return
	}
	// zmq4 runs the rest of the handshake (it writes its greeting, then reads the peer's READY)
	// inside its accept loop, so a peer that sent a greeting and then went silent would hold
	// every later connection for up to HandshakeTimeout. The guard reads the peer's first
	// command here instead; zmq4 then reads greeting and command from the prefix, and the guard
	// swallows zmq4's own greeting, already sent.
	cmd, err := readCommand(c, min(maxHandshakeCommand, l.lim.PreAuthMsg))
	if err != nil {
		return
	}
	if err := checkFirstCommand(cmd[len(cmd)-commandBody(cmd):]); err != nil {
		_, _ = c.Write(errorCommand(err.Error()))
		return
	}
	_ = c.SetWriteDeadline(time.Time{})
	ok = true
	l.Greeted.Add(1)
	gc := newConn(c, l, l.lim.PreAuthMsg, append(g[:], cmd...))
	gc.slot = sl
	gc.src = sl.src
	gc.swallow = serverGreeting[:]
	l.handshaken(sl, gc)
	select {
	case l.ready <- gc:
	case <-l.done:
		gc.Close()
	case <-time.After(HandshakeTimeout):
		gc.Close() // the accept loop is stuck elsewhere; do not pile up
	}
}

// mechanism is the security mechanism a greeting names.
func mechanism(g []byte) string {
	m := g[12:32]
	if i := bytes.IndexByte(m, 0); i >= 0 {
		m = m[:i]
	}
	return string(m)
}

// errorCommand is a ZMTP ERROR command with reason (at most 255 bytes).
func errorCommand(reason string) []byte {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	body := append([]byte{5}, "ERROR"...)
	body = append(body, byte(len(reason)))
	body = append(body, reason...)
	return append([]byte{flagCommand, byte(len(body))}, body...)
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

// commandBody is the length of the body of the whole command frame f (flags, size, body).
func commandBody(f []byte) int {
	if f[0]&flagLong != 0 {
		return len(f) - 9
	}
	return len(f) - 2
}

// checkFirstCommand checks a peer's first command (its body: name length, name, data) before
// zmq4 decodes it: zmq4's metadata decoder (Metadata.UnmarshalZMTP, v0.17) slices the
// properties of a READY by the lengths they announce without checking them against the
// command, and panics on a property cut short, which takes the whole process with it (75 bytes
// from anyone who can connect). A READY whose properties do not each fit whole is refused.
func checkFirstCommand(body []byte) error {
	if len(body) == 0 || int(body[0]) > len(body)-1 {
		return errors.New("malformed handshake command")
	}
	name, data := string(body[1:1+int(body[0])]), body[1+int(body[0]):]
	if name != "READY" {
		return nil // zmq4 refuses it without decoding its data
	}
	for len(data) > 0 {
		k := int(data[0])
		if len(data) < 1+k+4 {
			return errors.New("malformed READY metadata")
		}
		v := binary.BigEndian.Uint32(data[1+k:])
		data = data[1+k+4:]
		if uint64(v) > uint64(len(data)) {
			return errors.New("malformed READY metadata")
		}
		data = data[v:]
	}
	return nil
}

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

// reservation is one frame's share of a listener's in-flight budget.
type reservation struct {
	n     int64
	owner io.Closer     // the frame's TCP connection: closing it takes no lock of the guard
	elem  *list.Element // in listener.reservations; nil once given back
}

// reserve takes n bytes of the in-flight budget for a frame of owner; nil if n is more than
// the whole budget. When the budget is spent, the frames that have waited longest for their
// bytes give theirs back, and their connections are closed: peers that announce frames and
// never send them (1,200 connections from three addresses held all 16 MiB, reconnecting as
// they were cut off) can no longer keep the frames of a newcomer out, which take a round trip.
func (l *listener) reserve(n int64, owner io.Closer) *reservation {
	if n > l.lim.InFlight {
		return nil
	}
	var victims []io.Closer
	l.fmu.Lock()
	for l.inFlight+n > l.lim.InFlight {
		v := l.reservations.Remove(l.reservations.Front()).(*reservation)
		v.elem = nil
		l.inFlight -= v.n
		victims = append(victims, v.owner)
	}
	r := &reservation{n: n, owner: owner}
	r.elem = l.reservations.PushBack(r)
	l.inFlight += n
	l.fmu.Unlock()
	l.Evicted.Add(int64(len(victims)))
	closeAll(victims)
	return r
}

// unreserve gives r back, unless it was taken back already.
func (l *listener) unreserve(r *reservation) {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	if r.elem != nil {
		l.reservations.Remove(r.elem)
		r.elem = nil
		l.inFlight -= r.n
	}
}

// conn is a guarded connection. Reads pass through a ZMTP frame parser that enforces limits.
// A connection a listener accepted starts untrusted: its messages are limited to PreAuthMsg,
// each frame it starts takes its size from the listener's in-flight budget until the frame is
// in, and must be in within FrameTimeout. trust lifts all three.
type conn struct {
	net.Conn
	l      *listener // nil on the dialing side
	slot   *slot     // its place in l
	src    string
	prefix []byte // greeting and first command already read by the listener
	closed sync.Once

	mu            sync.Mutex // guards the parser state (zmq4 reads from one goroutine, but be safe)
	p             parser
	trusted       bool
	frameDeadline bool // a FrameTimeout read deadline is set

	// Read-ahead of a trusted connection (see ahead.go); used by Read only, which zmq4 calls
	// from one goroutine.
	ahead atomic.Bool     // trusted: Read may read ahead
	raw   syscall.RawConn // of the TCP connection; nil if it has none
	rbuf  *[aheadSize]byte
	roff  int // rbuf[roff:rend] was read from the network and not yet returned by Read
	rend  int
	reads atomic.Int64 // reads from the network that returned data, for tests

	// The write side, guarded by wmu: zmq4 writes from the socket's writer goroutine and, for a
	// PONG, from its reader; Write calls reach the wire in the order they were made.
	wmu     sync.Mutex
	swallow []byte         // what the listener already wrote for zmq4: zmq4's first write, checked and dropped
	w       writeParser    // follows what zmq4 writes, to know when bytes may wait for the rest of a message
	held    *[heldCap]byte // bytes written by zmq4 and not yet sent (see Write); nil when none
	nheld   int
	writes  int // writes to the network (write or writev system calls on TCP), for tests
}

func newConn(c net.Conn, l *listener, max int, prefix []byte) *conn {
	gc := &conn{Conn: c, l: l, prefix: prefix, trusted: l == nil}
	gc.p = parser{max: max, greetLeft: greetingLen}
	gc.w.greetLeft = greetingLen
	gc.ahead.Store(gc.trusted)
	if sc, ok := c.(syscall.Conn); ok {
		gc.raw, _ = sc.SyscallConn()
	}
	if l != nil {
		gc.p.budget = l
		gc.p.maxTrusted = l.lim.MaxMsg
		gc.p.owner = c
	}
	if prefix == nil {
		_ = c.SetReadDeadline(time.Now().Add(HandshakeTimeout))
	}
	return gc
}

// trust lifts the limits of an untrusted connection: the application has authenticated its peer.
func (c *conn) trust() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trusted {
		return
	}
	c.trusted = true
	c.ahead.Store(true)
	c.p.max = c.p.maxTrusted
	c.p.budget = nil
	c.p.release() // a trusted connection holds none of the budget, so none is taken from it
	if c.slot != nil {
		c.l.trustSlot(c.slot, true)
	}
}

// distrust puts the limits of an untrusted connection back: the authentication that made it
// trusted no longer holds (its session ended or moved to another connection). A frame under way
// keeps what it reserved, or not; the next ones are bounded again.
func (c *conn) distrust() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.trusted || c.l == nil {
		return
	}
	c.trusted = false
	c.p.max = c.l.lim.PreAuthMsg
	c.p.budget = c.l
	if c.slot != nil {
		c.l.trustSlot(c.slot, false)
	}
}

func (c *conn) isTrusted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.trusted
}

// errViolation is wrapped around io.EOF so that zmq4 marks the connection closed.
type violation struct{ why string }

func (v *violation) Error() string { return "zmtp guard: " + v.why }
func (v *violation) Unwrap() error { return io.EOF }

func (c *conn) Read(b []byte) (int, error) {
	var n int
	var err error
	switch {
	case len(c.prefix) > 0:
		n = copy(b, c.prefix)
		c.prefix = c.prefix[n:]
	case c.rbuf != nil || c.raw != nil && len(b) < aheadSize && c.ahead.Load():
		n, err = c.readAhead(b)
	default:
		n, err = c.Conn.Read(b)
		if n > 0 {
			c.reads.Add(1)
		}
	}
	c.mu.Lock()
	verr := c.p.feed(b[:n])
	handshaken := c.p.handshaken
	var deadline time.Time
	setDeadline := false
	if handshaken && !c.p.deadlineCleared {
		c.p.deadlineCleared = true
		setDeadline = true
	}
	// An untrusted peer in the middle of a frame has FrameTimeout to finish it, from its start.
	if mid := handshaken && !c.trusted && c.p.midFrame(); mid != c.frameDeadline {
		c.frameDeadline = mid
		setDeadline = true
		if mid {
			deadline = time.Now().Add(FrameTimeout)
		}
	} else if c.frameDeadline {
		setDeadline = false // keep the running frame's deadline
	}
	c.mu.Unlock()
	if verr != nil {
		c.Close()
		return 0, &violation{why: verr.Error()}
	}
	if setDeadline {
		_ = c.Conn.SetReadDeadline(deadline)
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
			return n, &violation{why: "read timeout"}
		}
	}
	return n, err
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() {
		if c.l != nil {
			c.mu.Lock()
			c.p.release()
			c.mu.Unlock()
			if c.slot != nil {
				c.l.release(c.slot)
			}
		}
	})
	return err
}

// parser follows the ZMTP 3 stream: a 64-byte greeting, then frames of flags, a 1- or 8-byte
// size, and a body. It never buffers a body; it only counts.
type parser struct {
	max             int
	maxTrusted      int
	budget          *listener    // in-flight budget to reserve frames from; nil: none
	owner           io.Closer    // the connection, closed if its reservation is taken back
	reserved        *reservation // taken from a budget for the frame being read
	reservedFrom    *listener
	greetLeft       int
	hdr             [9]byte
	hdrHave         int
	bodyLeft        uint64
	msgTotal        uint64
	frames          int
	handshaken      bool   // the peer's first command (READY) has been read
	first           []byte // the body of the peer's first command so far, checked when it ends
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
			if p.inCommand && !p.handshaken {
				p.first = append(p.first, b[:k]...)
			}
			p.bodyLeft -= k
			b = b[k:]
			if p.bodyLeft == 0 {
				if err := p.endFrame(); err != nil {
					return err
				}
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
	if p.inCommand && !p.handshaken && (size > maxHandshakeCommand || flags&flagMore != 0) {
		// The first command is held whole to be checked (checkFirstCommand); a READY is small.
		return fmt.Errorf("handshake command of %d bytes or of several frames", size)
	}
	if flags&flagMore == 0 {
		p.frames, p.msgTotal = 0, 0
	}
	if p.budget != nil && size > 0 {
		r := p.budget.reserve(int64(size), p.owner)
		if r == nil {
			return fmt.Errorf("frame of %d bytes over the in-flight budget of %d", size, p.budget.lim.InFlight)
		}
		p.reserved, p.reservedFrom = r, p.budget
	}
	p.bodyLeft = size
	if size == 0 {
		return p.endFrame()
	}
	return nil
}

// endFrame ends the frame being read; the peer's first command is checked as it ends, before
// the Read that completes it returns, so zmq4 never decodes one that is malformed.
func (p *parser) endFrame() error {
	p.release()
	if p.inCommand && !p.handshaken {
		p.handshaken = true
		first := p.first
		p.first = nil
		return checkFirstCommand(first)
	}
	return nil
}

// release returns the current frame's reservation to its budget.
func (p *parser) release() {
	if p.reservedFrom != nil {
		p.reservedFrom.unreserve(p.reserved)
		p.reserved, p.reservedFrom = nil, nil
	}
}

// midFrame says whether a frame has begun and not ended.
func (p *parser) midFrame() bool { return p.greetLeft == 0 && (p.hdrHave > 0 || p.bodyLeft > 0) }
