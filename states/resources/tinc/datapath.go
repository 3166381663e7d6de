package tinc

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/brinecm/brine/states/resources/internal/daemon"
	"github.com/brinecm/brine/states/resources/internal/icmp"
)

// tinc 1.0 can leave two members of a forming mesh with different packet keys, and then the one
// whose key is stale loses every packet it sends the other over UDP ("Got unauthenticated packet"
// in the other's log, at debug level 5) while their meta connection stays up. When a node
// becomes reachable and tincd holds a direct connection to it, it sends the node a fresh key
// unasked, by the node's next hop (graph.c); that can be another member, when the direct
// connection is up but its reverse edge has not arrived yet. If the node asks for the key
// directly a moment later, it gets a second fresh key by the direct connection, before the
// first, which then arrives by the longer path and replaces it. Every member's reload after a
// change of members tears the meta connections down and builds them again at the same moment,
// which is when that happens; tincd itself notices only after its PingInterval (60 s) and then
// sends everything to that member over TCP until its keys expire, an hour later.
//
// So after a start, restart or reload, every member this host holds an authenticated meta
// connection with is pinged over the mesh until it has answered, for dataPathFor after its
// connection authenticated (plus 8 round trips of it, for members far away: the first packet
// waits for a key exchange). Connections still authenticating are waited for, for dataPathFor.
// A restart of either end gives both fresh keys; the end whose name sorts first restarts at
// once, the other only if the pair is still broken at the end of a second wait (the first end
// may not be applying). Members without an authenticated meta connection to this host (down,
// reached through others, or not holding this host's key yet) are not judged: a member that
// is down, or one that a first apply has not given the keys yet, must not cost its peers a
// restart.
//
// A working pair answers within milliseconds: in 70 checks of the demo's applies, 61 were
// answered in 0.2-5.4 ms, one in 226 ms, and the 8 that never were had hit the key race.
const dataPathFor = time.Second

// authedBytes is what each end of a tinc 1.0 meta connection has sent once both have
// authenticated: an end answers the other's ID line with its METAKEY only when it holds the
// other's public key, and a METAKEY is the session key encrypted to the other's RSA key, in hex:
// 512 characters for this host's key of 2048 bits or more (key_size), 256 for a member's key of
// 1024 bits. A connection that carried less either way is still authenticating, or is one that
// a member without this host's key tarpitted (kept open and silent): its data path cannot work
// yet and is not judged.
const authedBytes = 256

// healDataPath restarts tincd (restart) when a member it holds a meta connection with does not
// answer over the mesh, maxRestarts times at most; it returns what it did, for the log, or "".
func (n *tincNet) healDataPath(ctx context.Context, restart func() error) (string, error) {
	if !n.addr.IsValid() {
		return "", nil
	}
	// The checks' own bound; restart keeps the apply's context, so that the deadline never
	// falls between a stop and a start and leaves tincd down.
	check, cancel := context.WithTimeout(ctx, healFor)
	defer cancel()
	deaf := n.unanswered(check, nil, dataPathFor)
	if len(deaf) == 0 {
		return "", nil
	}
	first := false
	for _, m := range deaf {
		first = first || n.self < m
	}
	if !first {
		if deaf = n.unanswered(check, deaf, 2*dataPathFor); len(deaf) == 0 {
			return "", nil
		}
	}
	// A restart makes this node unreachable and then reachable again, which is when the race
	// happens: it can happen again. The other end may not be applying, so this one tries again.
	still := deaf
	for i := 1; i <= maxRestarts; i++ {
		if check.Err() != nil {
			return fmt.Sprintf("members %v do not answer over the mesh; stopped after %d restarts of tincd and %s", still, i-1, healFor), nil
		}
		if err := restart(); err != nil {
			return "", err
		}
		if still = n.unanswered(check, still, 2*dataPathFor); len(still) == 0 {
			if check.Err() != nil {
				return fmt.Sprintf("restarted tincd %d times for members %v; stopped checking after %s", i, deaf, healFor), nil
			}
			return fmt.Sprintf("restarted tincd (%d of at most %d times): members %v did not answer over the mesh (tinc 1.0's key race)", i, maxRestarts, deaf), nil
		}
	}
	return fmt.Sprintf("members %v do not answer over the mesh, also after %d restarts of tincd", still, maxRestarts), nil
}

// healFor bounds the checks of one apply (the restarts come on top: each stops and starts tincd).
const healFor = 20 * time.Second

// maxRestarts bounds the restarts of tincd one apply makes for members that do not answer.
const maxRestarts = 3

// unanswered pings, over the mesh, the members this host holds an authenticated meta connection
// with, each until it answers or for window after its connection was found authenticated (plus 8
// of its round trips), and returns the names of those that never answered, sorted. For window
// it also waits for connections still authenticating, and for the members named in expect
// (those whose tincd, or ours, was just restarted) to connect. It returns nil when this host
// cannot tell (no ICMP socket, no socket diagnostics).
func (n *tincNet) unanswered(ctx context.Context, expect []string, window time.Duration) []string {
	var pub []netip.Addr
	byPub := map[netip.Addr][]tincMember{}
	for _, m := range n.members {
		ip, err := netip.ParseAddr(m.address)
		if m.name == n.self || err != nil || !m.vpn.IsValid() || m.vpn.Is4() != n.addr.Addr().Is4() {
			continue
		}
		pub = append(pub, ip.Unmap())
		byPub[ip.Unmap()] = append(byPub[ip.Unmap()], m)
	}
	if len(pub) == 0 {
		return nil
	}
	p, err := icmp.New(n.addr.Addr().Is4())
	if err != nil {
		return nil
	}
	defer p.Close()
	expected := map[string]bool{}
	for _, name := range expect {
		expected[name] = true
	}
	start := time.Now()
	judged := map[netip.Addr]time.Time{}    // a member's mesh address: when its connection was found authenticated
	limit := map[netip.Addr]time.Duration{} // how long it has to answer from then
	pending := map[netip.Addr]string{}      // judged, not answered yet
	var deaf []string
	unknown := false // socket diagnostics failed: this host cannot tell
	daemon.Await(ctx, 2*window+8*maxRTT, func() bool {
		now := time.Now()
		waiting := false
		if now.Sub(start) < window {
			authed, authenticating, err := metaPeers(uint16(n.port), pub)
			if err != nil {
				unknown = true
				return true
			}
			for ip, rtt := range authed {
				for _, m := range byPub[ip] {
					if _, ok := judged[m.vpn]; !ok {
						judged[m.vpn], limit[m.vpn], pending[m.vpn] = now, window+8*min(rtt, maxRTT), m.name
						delete(expected, m.name)
					}
				}
			}
			for ip := range authenticating {
				for _, m := range byPub[ip] {
					_, ok := judged[m.vpn]
					waiting = waiting || !ok
				}
			}
			waiting = waiting || len(expected) > 0
		}
		for ip, name := range pending {
			if now.Sub(judged[ip]) >= limit[ip] {
				deaf = append(deaf, name)
				delete(pending, ip)
			}
		}
		for ip := range pending {
			p.Send(ip)
		}
		p.Await(pending, 200*time.Millisecond)
		return len(pending) == 0 && !waiting
	})
	if unknown || ctx.Err() != nil {
		return nil // not judged: no restart for what this check could not finish
	}
	for _, name := range pending {
		deaf = append(deaf, name)
	}
	sort.Strings(deaf)
	return deaf
}

// maxRTT bounds the round trip that lengthens a member's time to answer (8 of them: 2 s).
const maxRTT = 250 * time.Millisecond

// metaPeers looks at the established TCP connections on the tinc port (either end's) with the
// addresses given: authed holds those on which both ends have authenticated, with the
// connection's round-trip time (the longest, if several); authenticating those on which both
// ends have sent something (their ID lines) and that have not authenticated yet. A connection
// one end tarpits (nothing sent by it) is in neither.
func metaPeers(port uint16, addrs []netip.Addr) (authed map[netip.Addr]time.Duration, authenticating map[netip.Addr]bool, err error) {
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	authed, authenticating = map[netip.Addr]time.Duration{}, map[netip.Addr]bool{}
	err = eachEstablished(func(d tcpDial) {
		ip := d.remote.Addr()
		if !want[ip] || (d.remote.Port() != port && d.localPort != port) {
			return
		}
		switch {
		case d.received >= 2*authedBytes && d.acked > authedBytes:
			authed[ip] = max(authed[ip], d.rtt)
		case d.received > 0 && d.acked > 1:
			authenticating[ip] = true
		}
	})
	return authed, authenticating, err
}
