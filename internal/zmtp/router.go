package zmtp

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// Router is a ZeroMQ ROUTER socket (ZMTP 3, NULL security) that scales to thousands of peers,
// where zmq4's does not: zmq4's ROUTER finds the peer of every outgoing message by scanning all
// connections (a map lookup and an allocation each) under one mutex held across the write, so
// replies to N minions cost O(N^2) and go out one at a time; and it runs every handshake inside
// its accept loop. Here a peer is found in a map, writes to different peers run concurrently,
// and each handshake runs in its own goroutine behind the guard (deadlines and size limits).
//
// Identities are assigned by the Router (8 bytes, never reused); an identity a peer announces
// is ignored, so a peer cannot take over another's replies. It speaks to zmq4 DEALER sockets.
type Router struct {
	l    *listener
	in   chan zmq4.Msg
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu    sync.Mutex // guards peers and next
	peers map[string]*routerPeer
	next  uint64
}

type routerPeer struct {
	mu sync.Mutex // serialises writes: a message's frames must not interleave with another's
	c  *zmq4.Conn
}

// ListenRouter binds a Router to the TCP address addr ("host:port"), accepting messages of at
// most maxMsg bytes from each peer.
func ListenRouter(addr string, maxMsg int) (*Router, error) {
	nl, err := (&guardTransport{max: maxMsg}).Listen(context.Background(), addr)
	if err != nil {
		return nil, err
	}
	r := &Router{l: nl.(*listener), in: make(chan zmq4.Msg, 1024), done: make(chan struct{}), peers: map[string]*routerPeer{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the bound address.
func (r *Router) Addr() net.Addr { return r.l.Addr() }

func (r *Router) accept() {
	defer r.wg.Done()
	for {
		c, err := r.l.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.serve(c) }()
	}
}

// serve runs one peer: the handshake, then its messages into r.in with its identity first.
func (r *Router) serve(nc net.Conn) {
	zc, err := zmq4.Open(nc, null.Security(), zmq4.Router, zmq4.SocketIdentity(""), true, nil)
	if err != nil {
		nc.Close()
		return
	}
	defer zc.Close()
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
	r.peers[id] = &routerPeer{c: zc}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.peers, id)
		r.mu.Unlock()
	}()
	// Close the connection when the Router closes, so that RecvMsg returns.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-r.done:
			zc.Close()
		case <-stop:
		}
	}()
	for {
		msg, err := zc.RecvMsg()
		if err != nil {
			return
		}
		if msg.Type == zmq4.CmdMsg || len(msg.Frames) == 0 {
			continue // PING/PONG and the like
		}
		frames := make([][]byte, 0, len(msg.Frames)+1)
		frames = append(frames, idb[:])
		frames = append(frames, msg.Frames...)
		select {
		case r.in <- zmq4.NewMsgFrom(frames...):
		case <-r.done:
			return
		}
	}
}

// ErrRouterClosed is returned by Recv and Send after Close.
var ErrRouterClosed = errors.New("zmtp: router closed")

// Recv returns the next message from any peer; Frames[0] is the peer's identity.
func (r *Router) Recv() (zmq4.Msg, error) {
	select {
	case m := <-r.in:
		return m, nil
	case <-r.done:
		return zmq4.Msg{}, ErrRouterClosed
	}
}

// Send sends msg.Frames[1:] to the peer whose identity is msg.Frames[0]. A message for a peer
// that is gone is dropped, as ZeroMQ's ROUTER does. It blocks only on that peer's connection
// (bounded by WriteTimeout), never on others.
func (r *Router) Send(msg zmq4.Msg) error {
	if len(msg.Frames) < 2 {
		return errors.New("zmtp: router message without identity and body")
	}
	r.mu.Lock()
	p := r.peers[string(msg.Frames[0])]
	r.mu.Unlock()
	if p == nil {
		select {
		case <-r.done:
			return ErrRouterClosed
		default:
			return nil
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.c.SendMsg(zmq4.NewMsgFrom(msg.Frames[1:]...)); err != nil {
		p.c.Close()
		return err
	}
	return nil
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
	})
	r.wg.Wait()
	return nil
}
