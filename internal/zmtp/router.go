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
	// Throttled counts the waits of trusted peers for their holder's Limits.TrustedRate or
	// Limits.TrustedBytes.
	Throttled atomic.Int64

	mu    sync.Mutex // guards peers, next and rates
	peers map[string]*routerPeer
	next  uint64
	rates rateTable // by holder (Trust)
}

type routerPeer struct {
	c    *zmq4.Conn
	gc   *conn
	q    *sendQueue                // replies for the writer goroutine
	turn chan struct{}             // Limits.Serial: full while one of its messages waits for Done
	rate atomic.Pointer[rateState] // the rates it is held to while trusted (Trust's holder); nil: none
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

// Evicted counts connections closed to make room for a new one (evict.go).
func (r *Router) Evicted() int64 { return r.l.Evicted.Load() }

// Handshakes counts the connections that completed a ZMTP handshake.
func (r *Router) Handshakes() int64 { return r.l.Greeted.Load() }

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
	stop := make(chan struct{})
	writer := make(chan struct{})
	go func() { defer close(writer); r.write(p, stop) }()
	defer func() {
		r.mu.Lock()
		delete(r.peers, id)
		r.rates.leave(p.rate.Swap(nil), time.Now())
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
		// A trusted peer over its rates is not read until it is within them again: nothing
		// of it is held meanwhile but the connection.
		if rs := p.rate.Load(); rs != nil {
			if d := rs.debt(time.Now()); d > 0 {
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
		msg, err := zc.RecvMsg()
		if err != nil {
			return
		}
		// Every message counts against the rates, commands too: zmq4 answers a PING with a
		// PONG before it returns, and 8 peers sending nothing but PINGs made the master
		// answer 900,000 a second, a core's worth, while a minion's ping took 50 times as long.
		trusted := gc.isTrusted()
		if rs := p.rate.Load(); rs != nil && trusted {
			n := 0
			for _, f := range msg.Frames {
				n += len(f)
			}
			rs.take(time.Now(), n)
		}
		if !trusted && !r.l.wait(gc.src, r.done) {
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
		if !trusted {
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

// tokenBucket is a bucket of messages or bytes: rate a second, up to burst.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func newTokenBucket(rate, burst float64, now time.Time) *tokenBucket {
	return &tokenBucket{rate: rate, burst: burst, tokens: burst, last: now}
}

func (b *tokenBucket) refill(now time.Time) {
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.rate, b.burst)
	b.last = now
}

// debt is how long until the bucket holds no debt.
func (b *tokenBucket) debt() time.Duration {
	if b == nil || b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// full is when the bucket will be full again.
func (b *tokenBucket) full() time.Time {
	return b.last.Add(time.Duration((b.burst - b.tokens) / b.rate * float64(time.Second)))
}

// rateState is what one holder's trusted connections may send: messages and bytes.
type rateState struct {
	holder string
	mu     sync.Mutex
	msgs   *tokenBucket // nil: no limit
	octets *tokenBucket
	users  int       // connections trusted for holder; guarded by Router.mu
	idle   time.Time // when users fell to 0; guarded by Router.mu
}

// take counts one message of n bytes.
func (rs *rateState) take(now time.Time, n int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.msgs != nil {
		rs.msgs.refill(now)
		rs.msgs.tokens--
	}
	if rs.octets != nil {
		rs.octets.refill(now)
		rs.octets.tokens -= float64(n)
	}
}

// debt is how long until the holder is within its rates again.
func (rs *rateState) debt(now time.Time) time.Duration {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var d time.Duration
	for _, b := range []*tokenBucket{rs.msgs, rs.octets} {
		if b != nil {
			b.refill(now)
			d = max(d, b.debt())
		}
	}
	return d
}

// rateTable holds the rates of holders with trusted connections, and of those whose last one
// went until their buckets are full again (so that connecting again gives no new burst).
// Guarded by Router.mu.
type rateTable struct {
	by   map[string]*rateState
	idle []*rateState // holders with no connection, oldest first
}

// join returns holder's rates for one more connection.
func (t *rateTable) join(holder string, lim Limits, now time.Time) *rateState {
	t.sweep(now)
	if t.by == nil {
		t.by = map[string]*rateState{}
	}
	rs := t.by[holder]
	if rs == nil {
		rs = &rateState{holder: holder}
		if lim.TrustedRate > 0 {
			rs.msgs = newTokenBucket(float64(lim.TrustedRate), float64(2*lim.TrustedRate), now)
		}
		if lim.TrustedBytes > 0 {
			rs.octets = newTokenBucket(float64(lim.TrustedBytes), float64(max(2*lim.TrustedBytes, 2*lim.MaxMsg)), now)
		}
		t.by[holder] = rs
	}
	rs.users++
	return rs
}

// leave gives back one connection of rs (nil: none).
func (t *rateTable) leave(rs *rateState, now time.Time) {
	if rs == nil {
		return
	}
	if rs.users--; rs.users == 0 {
		rs.idle = now
		t.idle = append(t.idle, rs)
	}
}

// sweep forgets holders without connections whose buckets are full again: O(1) amortised.
func (t *rateTable) sweep(now time.Time) {
	for len(t.idle) > 0 {
		rs := t.idle[0]
		if rs.users == 0 && !rs.fullBy(now) {
			return // the oldest idle one is not full yet; later ones wait their turn
		}
		t.idle[0] = nil
		t.idle = t.idle[1:]
		if rs.users == 0 && t.by[rs.holder] == rs {
			delete(t.by, rs.holder)
		}
	}
}

// fullBy says whether both buckets are full at now.
func (rs *rateState) fullBy(now time.Time) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, b := range []*tokenBucket{rs.msgs, rs.octets} {
		if b != nil && b.full().After(now) {
			return false
		}
	}
	return true
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
// the peer holds an accepted key, of holder. The peer's messages then count against holder's
// rates (Limits.TrustedRate, Limits.TrustedBytes), which every connection trusted for holder
// shares and which outlive them until they are full again: a holder that connects again does
// not start with a new burst. It does nothing for a peer that is gone.
func (r *Router) Trust(id []byte, holder string) {
	r.mu.Lock()
	p := r.peers[string(id)]
	if p != nil && (r.l.lim.TrustedRate > 0 || r.l.lim.TrustedBytes > 0) {
		now := time.Now()
		r.rates.leave(p.rate.Swap(r.rates.join(holder, r.l.lim, now)), now)
	}
	r.mu.Unlock()
	if p != nil {
		p.gc.trust()
	}
}

// Distrust puts the pre-authentication limits of the peer id back: what the application
// trusted it for has ended. It does nothing for a peer that is gone.
func (r *Router) Distrust(id []byte) {
	r.mu.Lock()
	p := r.peers[string(id)]
	if p != nil {
		r.rates.leave(p.rate.Swap(nil), time.Now())
	}
	r.mu.Unlock()
	if p != nil {
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
