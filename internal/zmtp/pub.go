package zmtp

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// Pub is a ZeroMQ PUB socket (ZMTP 3, NULL security) for thousands of subscribers, where
// zmq4's falls over: zmq4's PUB sends every message from one goroutine to every connection in
// turn, checking each one's subscriptions, so a message costs O(subscribers) however few it is
// for, and one subscriber that reads slowly holds up everyone behind it (up to WriteTimeout
// each). Here subscriptions are indexed by topic, so a message reaches its subscribers in
// O(len(topic) + matches); each subscriber has its own writer goroutine and queue, and a
// subscriber whose queue is full loses the message (ZeroMQ's high-water-mark rule) instead of
// stalling the others. brine's minions recover a lost job through their heartbeat.
//
// Subscriptions are bounded: Limits.MaxTopic bytes each, Limits.MaxSubsPerPeer per subscriber
// and Limits.MaxSubs in all; a subscriber that asks for more is disconnected.
//
// With an Admission, a subscriber receives nothing until it has proved who it is (see
// Admission), and may then subscribe only to what that proof allows.
type Pub struct {
	l    *listener
	adm  *Admission
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu      sync.RWMutex // guards subs, peers, holders and the peers' topics
	subs    map[string]map[*pubPeer]struct{}
	peers   map[*pubPeer]struct{}
	holders map[string]*pubPeer // admitted subscribers by holder
	nsubs   int                 // subscriptions of all peers
	Dropped atomic.Int64        // messages not queued for a subscriber because its queue was full
	Refused atomic.Int64        // subscribers disconnected for a subscription over the limits or not admitted
	// Unadmitted counts subscribers disconnected for not proving who they were in time.
	Unadmitted atomic.Int64
}

// Admission decides who may subscribe. A subscriber's subscriptions wait (at most
// Limits.MaxSubsPerPeer of them) until one of them is a credential (Credential) that Admit
// accepts; until then the subscriber is sent nothing, and after Timeout it is disconnected.
// Admit returns the holder the credential proves (one subscriber per holder: the first one
// admitted keeps it until it disconnects or Evict) and the topics the holder may subscribe to;
// a false credential, a holder that is taken, or a subscription to any other topic
// disconnects the subscriber.
//
// Live, if set, says whether holder still stands; it is asked once the subscriber is registered as the
// holder's, so that a holder ended (and Evict called) while Admit was deciding does not leave a
// subscriber behind: either Evict finds it, or Live says no.
//
// Ready, if set, is called once for an admitted subscriber, when it has subscribed to every
// topic Admit allowed it: what is published to those topics from then on reaches it, and what
// was published before may not have (a holder's first messages can be published before its
// subscriptions arrive).
type Admission struct {
	Credential func(topic []byte) bool
	Admit      func(topic []byte) (holder string, topics []string, ok bool)
	Live       func(holder string) bool
	Ready      func(holder string)
	Timeout    time.Duration
}

type pubPeer struct {
	c       *zmq4.Conn
	gc      *conn // the guarded connection under c; nil if it is not one
	q       *sendQueue
	topics  map[string]struct{} // guarded by Pub.mu
	holder  string              // set once admitted; guarded by Pub.mu
	allowed map[string]bool     // the topics the holder may subscribe to; nil before admission
	ready   bool                // subscribed to all of allowed (Admission.Ready called); guarded by Pub.mu
	early   []string            // subscriptions made before admission, applied at admission
}

// ListenPub binds a Pub to the TCP address addr with the limits lim; adm, if not nil, admits
// subscribers. Messages from subscribers (subscriptions) are limited to MaxTopic+1 bytes,
// whatever lim.MaxMsg says.
func ListenPub(addr string, lim Limits, adm *Admission) (*Pub, error) {
	lim = lim.filled()
	lim.MaxMsg = lim.MaxTopic + 1
	lim.PreAuthMsg = lim.MaxMsg
	l, err := listen(addr, lim)
	if err != nil {
		return nil, err
	}
	p := &Pub{l: l, adm: adm, done: make(chan struct{}), subs: map[string]map[*pubPeer]struct{}{},
		peers: map[*pubPeer]struct{}{}, holders: map[string]*pubPeer{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the bound address.
func (p *Pub) Addr() net.Addr { return p.l.Addr() }

func (p *Pub) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.serve(c) }()
	}
}

// serve runs one subscriber: the handshake, a writer, and its subscriptions as they come.
func (p *Pub) serve(nc net.Conn) {
	zc, err := zmq4.Open(nc, null.Security(), zmq4.Pub, zmq4.SocketIdentity(""), true, nil)
	if err != nil {
		nc.Close()
		return
	}
	gc, _ := nc.(*conn)
	peer := &pubPeer{c: zc, gc: gc, q: newSendQueue(p.l.lim.SendQueue), topics: map[string]struct{}{}}
	if p.adm == nil {
		peer.trust() // no admission: nothing to prove
	}
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		zc.Close()
		return
	default:
	}
	p.peers[peer] = struct{}{}
	p.mu.Unlock()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.write(peer, stop) }()
	if p.adm != nil {
		t := time.AfterFunc(p.adm.Timeout, func() {
			p.mu.RLock()
			admitted := peer.allowed != nil
			p.mu.RUnlock()
			if !admitted {
				p.Unadmitted.Add(1)
				zc.Close()
			}
		})
		defer t.Stop()
	}
	defer func() {
		p.mu.Lock()
		delete(p.peers, peer)
		if peer.holder != "" && p.holders[peer.holder] == peer {
			delete(p.holders, peer.holder)
		}
		p.nsubs -= len(peer.topics)
		for t := range peer.topics {
			if s := p.subs[t]; s != nil {
				delete(s, peer)
				if len(s) == 0 {
					delete(p.subs, t)
				}
			}
		}
		p.mu.Unlock()
		close(stop)
		zc.Close()
		wg.Wait()
	}()
	// What a subscriber sends (subscriptions, cancels, PINGs that zmq4 answers) is read at
	// Limits.PreAuthRate: from its source's bucket until it is admitted, then from its own
	// (bursts of twice that), so that a churn of subscriptions cannot take the CPU or Pub.mu,
	// which every Send needs.
	own := newTokenBucket(float64(p.l.lim.PreAuthRate), float64(2*p.l.lim.PreAuthRate), time.Now())
	for {
		msg, err := zc.RecvMsg()
		if err != nil {
			return
		}
		if gc != nil && !gc.isTrusted() {
			if !p.l.wait(gc.src, p.done) {
				return
			}
		} else {
			own.refill(time.Now())
			own.tokens--
			if d := own.debt(); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-p.done:
					t.Stop()
					return
				}
			}
		}
		if msg.Type == zmq4.CmdMsg || len(msg.Frames) != 1 || len(msg.Frames[0]) == 0 {
			continue
		}
		f := msg.Frames[0]
		if !p.subscribe(peer, f[0], f[1:]) {
			p.Refused.Add(1)
			return
		}
	}
}

// subscribe applies a (un)subscription of peer, through the admission if there is one; false
// if the peer is to be disconnected.
func (p *Pub) subscribe(peer *pubPeer, op byte, topic []byte) bool {
	if p.adm == nil {
		return p.apply(peer, op, string(topic))
	}
	p.mu.RLock()
	admitted := peer.allowed != nil
	p.mu.RUnlock()
	if admitted {
		if op == 1 && p.adm.Credential(topic) {
			return true // zmq4 sends every subscription again on a reconnection: nothing new
		}
		return (op != 1 || peer.allowed[string(topic)]) && p.apply(peer, op, string(topic))
	}
	if op != 1 || !p.adm.Credential(topic) {
		return p.hold(peer, op, string(topic))
	}
	holder, topics, ok := p.adm.Admit(topic)
	if !ok {
		return false
	}
	allowed := make(map[string]bool, len(topics))
	for _, t := range topics {
		allowed[t] = true
	}
	p.mu.Lock()
	if _, taken := p.holders[holder]; taken {
		p.mu.Unlock()
		return false
	}
	p.holders[holder] = peer
	peer.holder, peer.allowed = holder, allowed
	early := peer.early
	peer.early = nil
	p.mu.Unlock()
	if p.adm.Live != nil && !p.adm.Live(holder) {
		return false
	}
	peer.trust() // admitted: never evicted for a newcomer
	for _, t := range early {
		if !allowed[t] || !p.apply(peer, 1, t) {
			return false
		}
	}
	return true
}

func (peer *pubPeer) trust() {
	if peer.gc != nil {
		peer.gc.trust()
	}
}

// hold keeps a subscription of a peer not yet admitted, within the per-peer limits.
func (p *Pub) hold(peer *pubPeer, op byte, topic string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, t := range peer.early {
		if t == topic {
			if op == 0 {
				peer.early = append(peer.early[:i], peer.early[i+1:]...)
			}
			return true
		}
	}
	if op != 1 {
		return true
	}
	if len(topic) > p.l.lim.MaxTopic || len(peer.early) >= p.l.lim.MaxSubsPerPeer {
		return false
	}
	peer.early = append(peer.early, topic)
	return true
}

// Evict disconnects the subscriber admitted as holder, if any: what admitted it (a session)
// has ended.
func (p *Pub) Evict(holder string) {
	p.mu.RLock()
	peer := p.holders[holder]
	p.mu.RUnlock()
	if peer != nil {
		peer.c.Close()
	}
}

// apply applies a (un)subscription of peer; false if it is over the limits.
func (p *Pub) apply(peer *pubPeer, op byte, topic string) bool {
	ok, ready := p.applyLocked(peer, op, topic)
	if ready != "" && p.adm != nil && p.adm.Ready != nil {
		p.adm.Ready(ready)
	}
	return ok
}

// applyLocked is apply under Pub.mu; ready is the holder whose subscriptions this one completed.
func (p *Pub) applyLocked(peer *pubPeer, op byte, topic string) (ok bool, ready string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() {
		if ok && op == 1 && peer.allowed != nil && !peer.ready && len(peer.topics) == len(peer.allowed) {
			peer.ready, ready = true, peer.holder
		}
	}()
	switch op {
	case 1:
		if _, dup := peer.topics[topic]; dup {
			return true, ""
		}
		if len(topic) > p.l.lim.MaxTopic || len(peer.topics) >= p.l.lim.MaxSubsPerPeer || p.nsubs >= p.l.lim.MaxSubs {
			return false, ""
		}
		p.nsubs++
		peer.topics[topic] = struct{}{}
		s := p.subs[topic]
		if s == nil {
			s = map[*pubPeer]struct{}{}
			p.subs[topic] = s
		}
		s[peer] = struct{}{}
	case 0:
		if _, ok := peer.topics[topic]; !ok {
			return true, ""
		}
		p.nsubs--
		delete(peer.topics, topic)
		if s := p.subs[topic]; s != nil {
			delete(s, peer)
			if len(s) == 0 {
				delete(p.subs, topic)
			}
		}
	}
	return true, ""
}

// write sends peer's queue until stop or a write error (which closes the connection).
func (p *Pub) write(peer *pubPeer, stop <-chan struct{}) {
	for {
		select {
		case <-peer.q.ready:
		case <-stop:
			return
		case <-p.done:
			peer.c.Close()
			return
		}
		for _, m := range peer.q.take() {
			select {
			case <-stop:
				return
			case <-p.done:
				peer.c.Close()
				return
			default:
			}
			if err := peer.c.SendMsg(m); err != nil {
				peer.c.Close()
				return
			}
			peer.q.written()
		}
	}
}

// ErrPubClosed is returned by Send after Close.
var ErrPubClosed = errors.New("zmtp: pub closed")

// Send queues msg for every subscriber with a subscription that is a prefix of msg.Frames[0]
// (the topic), as ZeroMQ matches. It never blocks on a subscriber.
func (p *Pub) Send(msg zmq4.Msg) error {
	select {
	case <-p.done:
		return ErrPubClosed
	default:
	}
	if len(msg.Frames) == 0 {
		return errors.New("zmtp: empty message")
	}
	topic := string(msg.Frames[0])
	p.mu.RLock()
	defer p.mu.RUnlock()
	seen := map[*pubPeer]struct{}(nil)
	for i := 0; i <= len(topic); i++ {
		s := p.subs[topic[:i]]
		for peer := range s {
			if len(peer.topics) > 1 { // subscribed to several prefixes of this topic: send once
				if seen == nil {
					seen = map[*pubPeer]struct{}{}
				}
				if _, dup := seen[peer]; dup {
					continue
				}
				seen[peer] = struct{}{}
			}
			if !peer.q.push(msg) {
				p.Dropped.Add(1)
			}
		}
	}
	return nil
}

// Subscriptions returns the number of subscriptions of all subscribers.
func (p *Pub) Subscriptions() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.nsubs
}

// AcceptErrors counts failed Accepts (out of file descriptors, most often), each retried.
func (p *Pub) AcceptErrors() int64 { return p.l.AcceptErrors.Load() }

// Evicted counts connections closed to make room for a new one (evict.go).
func (p *Pub) Evicted() int64 { return p.l.Evicted.Load() }

// Handshakes counts the connections that completed a ZMTP handshake.
func (p *Pub) Handshakes() int64 { return p.l.Greeted.Load() }

// Subscribers returns the number of connected subscribers.
func (p *Pub) Subscribers() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.peers)
}

// Close stops accepting, closes every connection and waits for the Pub's goroutines.
func (p *Pub) Close() error {
	if p == nil {
		return nil // never bound: Master.Close after a failed Start
	}
	p.once.Do(func() {
		close(p.done)
		p.l.Close()
		p.mu.RLock()
		for peer := range p.peers {
			peer.c.Close() // unblocks a writer stuck on a subscriber that does not read
		}
		p.mu.RUnlock()
	})
	p.wg.Wait()
	return nil
}

// Conns returns the live connections (handshakes included) and the pending handshakes.
func (p *Pub) Conns() (conns, pending int) { return p.l.Counts() }
