package zmtp

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// Router is a ZeroMQ ROUTER socket (ZMTP 3, NULL security) that scales to thousands of peers,
// where zmq4's does not: zmq4's ROUTER finds the peer of every outgoing message by scanning all
// connections (a map lookup and an allocation each) under one mutex held across the write, so
// replies to N minions cost O(N^2) and go out one at a time; and it runs every handshake inside
// its accept loop. Here a peer is found in a map, each peer has its own bounded send queue and
// writer goroutine, so Send never waits on a peer, and each handshake runs in its own goroutine
// behind the guard (deadlines, size limits, per-source limits).
//
// A peer starts untrusted, with Limits.PreAuthMsg as its message limit and a share of the
// in-flight budget; the application calls Trust once the peer has authenticated.
//
// Identities are assigned by the Router (8 bytes, never reused); an identity a peer announces
// is ignored, so a peer cannot take over another's replies. It speaks to zmq4 DEALER sockets
// and to libzmq's.
type Router struct {
	l    *listener
	in   chan zmq4.Msg // from trusted peers
	inU  chan zmq4.Msg // from untrusted peers: Recv takes these only when in is empty
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	// Dropped counts peers disconnected because their send queue was full: they did not read.
	Dropped atomic.Int64
	// Throttled counts messages of trusted peers that waited for Limits.TrustedRate or
	// Limits.TrustedBytes.
	Throttled atomic.Int64

	mu    sync.Mutex // guards peers and next
	peers map[string]*routerPeer
	next  uint64
}

type routerPeer struct {
	c    *zmq4.Conn
	gc   *conn
	q    *sendQueue    // replies for the writer goroutine
	turn chan struct{} // Limits.Serial: full while one of its messages waits for Done
}

// ListenRouter binds a Router to the TCP address addr ("host:port") with the limits lim.
func ListenRouter(addr string, lim Limits) (*Router, error) {
	l, err := listen(addr, lim)
	if err != nil {
		return nil, err
	}
	r := &Router{l: l, in: make(chan zmq4.Msg, 1024), inU: make(chan zmq4.Msg, 256), done: make(chan struct{}), peers: map[string]*routerPeer{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the bound address.
func (r *Router) Addr() net.Addr { return r.l.Addr() }

// AcceptErrors counts failed Accepts (out of file descriptors, most often), each retried.
func (r *Router) AcceptErrors() int64 { return r.l.AcceptErrors.Load() }

// Conns returns the live connections (handshakes included) and the pending handshakes.
func (r *Router) Conns() (conns, pending int) { return r.l.Counts() }

func (r *Router) accept() {
	defer r.wg.Done()
	for {
		c, err := r.l.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.serve(c.(*conn)) }()
	}
}

// serve runs one peer: the handshake, its writer, then its messages into r.in with its
// identity first.
func (r *Router) serve(gc *conn) {
	zc, err := zmq4.Open(gc, null.Security(), zmq4.Router, zmq4.SocketIdentity(""), true, nil)
	if err != nil {
		gc.Close()
		return
	}
	defer zc.Close()
	p := &routerPeer{c: zc, gc: gc, q: newSendQueue(r.l.lim.SendQueue), turn: make(chan struct{}, 1)}
	r.mu.Lock()
	select {
	case <-r.done:
		r.mu.Unlock()
		return
	default:
	}
	r.next++
	var idb [8]byte
	binary.BigEndian.PutUint64(idb[:], r.next)
	id := string(idb[:])
	r.peers[id] = p
	r.mu.Unlock()
	// This connection's buckets, while trusted (Limits.TrustedRate, Limits.TrustedBytes).
	var msgs, octets *tokenBucket
	if lim := r.l.lim; lim.TrustedRate > 0 {
		msgs = newTokenBucket(float64(lim.TrustedRate), float64(2*lim.TrustedRate))
	}
	if lim := r.l.lim; lim.TrustedBytes > 0 {
		octets = newTokenBucket(float64(lim.TrustedBytes), float64(max(2*lim.TrustedBytes, 2*lim.MaxMsg)))
	}
	stop := make(chan struct{})
	writer := make(chan struct{})
	go func() { defer close(writer); r.write(p, stop) }()
	defer func() {
		r.mu.Lock()
		delete(r.peers, id)
		r.mu.Unlock()
		close(stop)
		zc.Close()
		<-writer
	}()
	for {
		if r.l.lim.Serial {
			// The previous message is handled (Done) before the next is read: however fast
			// a peer sends, and however large its messages, it holds one in the application.
			select {
			case p.turn <- struct{}{}:
			case <-r.done:
				return
			}
		}
		msg, err := zc.RecvMsg()
		if err != nil {
			return
		}
		if msg.Type == zmq4.CmdMsg || len(msg.Frames) == 0 {
			r.done1(p)
			continue // PING/PONG and the like
		}
		frames := make([][]byte, 0, len(msg.Frames)+1)
		frames = append(frames, idb[:])
		frames = append(frames, msg.Frames...)
		in := r.in
		if gc.isTrusted() {
			now := time.Now()
			var d time.Duration
			if msgs != nil {
				d = msgs.take(now, 1)
			}
			if octets != nil {
				n := 0
				for _, f := range msg.Frames {
					n += len(f)
				}
				d = max(d, octets.take(now, float64(n)))
			}
			if d > 0 {
				r.Throttled.Add(1)
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-r.done:
					t.Stop()
					return
				}
			}
		}
		if !gc.isTrusted() {
			if !r.l.wait(gc.src, r.done) {
				return
			}
			in = r.inU
		}
		select {
		case in <- zmq4.NewMsgFrom(frames...):
		case <-r.done:
			return
		}
	}
}

// write sends p's queue until stop or a write error (which closes the connection). A write
// waits at most WriteTimeout (the guard's deadline).
func (r *Router) write(p *routerPeer, stop <-chan struct{}) {
	for {
		select {
		case <-p.q.ready:
		case <-stop:
			return
		}
		for _, m := range p.q.take() {
			select {
			case <-stop:
				return
			default:
			}
			if err := p.c.SendMsg(m); err != nil {
				p.c.Close()
				return
			}
			p.q.written()
		}
	}
}

// tokenBucket is one connection's bucket (of messages or bytes): rate a second, up to burst.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func newTokenBucket(rate, burst float64) *tokenBucket {
	return &tokenBucket{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

// take takes n tokens and returns how long to wait until the bucket is out of debt (0: none).
func (b *tokenBucket) take(now time.Time, n float64) time.Duration {
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.rate, b.burst)
	b.last = now
	b.tokens -= n
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// ErrRouterClosed is returned by Recv and Send after Close.
var ErrRouterClosed = errors.New("zmtp: router closed")

// ErrPeerNotReading is returned by Send for a peer whose send queue was full; it is disconnected.
var ErrPeerNotReading = errors.New("zmtp: peer does not read its replies; disconnected")

// Recv returns the next message from any peer; Frames[0] is the peer's identity. Messages of
// trusted peers come first: a flood of unauthenticated ones does not delay them.
func (r *Router) Recv() (zmq4.Msg, error) {
	select {
	case m := <-r.in:
		return m, nil
	default:
	}
	select {
	case m := <-r.in:
		return m, nil
	case m := <-r.inU:
		return m, nil
	case <-r.done:
		return zmq4.Msg{}, ErrRouterClosed
	}
}

// RecvTrusted returns the next message of a trusted peer only; untrusted ones wait for Recv.
// Workers that call it cannot be taken by a flood of unauthenticated messages.
func (r *Router) RecvTrusted() (zmq4.Msg, error) {
	select {
	case m := <-r.in:
		return m, nil
	case <-r.done:
		return zmq4.Msg{}, ErrRouterClosed
	}
}

func (r *Router) peer(id []byte) *routerPeer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peers[string(id)]
}

// Send queues msg.Frames[1:] for the peer whose identity is msg.Frames[0] and returns at once.
// A message for a peer that is gone is dropped, as ZeroMQ's ROUTER does; a peer whose queue is
// full (it does not read) is disconnected, and its queue dropped.
func (r *Router) Send(msg zmq4.Msg) error {
	if len(msg.Frames) < 2 {
		return errors.New("zmtp: router message without identity and body")
	}
	p := r.peer(msg.Frames[0])
	if p == nil {
		select {
		case <-r.done:
			return ErrRouterClosed
		default:
			return nil
		}
	}
	if p.q.push(zmq4.NewMsgFrom(msg.Frames[1:]...)) {
		return nil
	}
	r.Dropped.Add(1)
	p.c.Close()
	return ErrPeerNotReading
}

// Done says that the application has handled the message of peer id that Recv returned, so
// that, with Limits.Serial, the peer's next message is read. Call it once per message; it does
// nothing for a peer that is gone, or without Limits.Serial.
func (r *Router) Done(id []byte) {
	if p := r.peer(id); p != nil {
		r.done1(p)
	}
}

func (r *Router) done1(p *routerPeer) {
	select {
	case <-p.turn:
	default:
	}
}

// Trust lifts the pre-authentication limits of the peer id: the application has verified that
// the peer holds an accepted key. It does nothing for a peer that is gone.
func (r *Router) Trust(id []byte) {
	if p := r.peer(id); p != nil {
		p.gc.trust()
	}
}

// Distrust puts the pre-authentication limits of the peer id back: what the application
// trusted it for has ended. It does nothing for a peer that is gone.
func (r *Router) Distrust(id []byte) {
	if p := r.peer(id); p != nil {
		p.gc.distrust()
	}
}

// Trusted says whether the peer id was trusted (false for a peer that is gone).
func (r *Router) Trusted(id []byte) bool {
	p := r.peer(id)
	return p != nil && p.gc.isTrusted()
}

// Source returns the source address the peer id counts against ("" for a peer that is gone).
func (r *Router) Source(id []byte) string {
	if p := r.peer(id); p != nil {
		return p.gc.src
	}
	return ""
}

// RemoteAddr returns the address that the peer with identity id (Frames[0] of a message from
// Recv) connects from, as the kernel saw it: not something the peer says. ok is false once the
// peer is gone.
func (r *Router) RemoteAddr(id []byte) (addr netip.Addr, ok bool) {
	p := r.peer(id)
	if p == nil {
		return netip.Addr{}, false
	}
	ta, ok := p.gc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	return ta.AddrPort().Addr().Unmap(), true
}

// Peers returns the number of connected peers.
func (r *Router) Peers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.peers)
}

// Close stops accepting, closes every connection and waits for the Router's goroutines.
func (r *Router) Close() error {
	if r == nil {
		return nil // never bound: Master.Close after a failed Start
	}
	r.once.Do(func() {
		close(r.done)
		r.l.Close()
		r.mu.Lock()
		for _, p := range r.peers {
			p.c.Close() // so that RecvMsg returns
		}
		r.mu.Unlock()
	})
	r.wg.Wait()
	return nil
}
