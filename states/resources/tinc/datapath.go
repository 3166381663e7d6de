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
// So after a start, restart or reload, the members this host holds a meta connection with are
// pinged over the mesh until each has answered, for dataPathFor. A restart of either end gives
// both fresh keys; the end whose name sorts first restarts at once, the other only if the
// pair is still broken at the end of a second wait (the first end may not be applying).
// Members without an authenticated meta connection to this host (down, reached through others,
// or not holding this host's key yet) are not judged: a member that is down, or one that a first
// apply has not given the keys yet, must not cost its peers a restart.
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
// answer over the mesh, once at most; it returns what it did, for the log, or "".
func (n *tincNet) healDataPath(ctx context.Context, restart func() error) (string, error) {
	if !n.addr.IsValid() {
		return "", nil
	}
	deaf := n.unanswered(ctx, dataPathFor)
	if len(deaf) == 0 {
		return "", nil
	}
	first := false
	for _, m := range deaf {
		first = first || n.self < m
	}
	if !first {
		if deaf = n.unanswered(ctx, 2*dataPathFor); len(deaf) == 0 {
			return "", nil
		}
	}
	if err := restart(); err != nil {
		return "", err
	}
	if still := n.unanswered(ctx, 2*dataPathFor); len(still) > 0 {
		return fmt.Sprintf("members %v do not answer over the mesh, also after a restart of tincd", still), nil
	}
	return fmt.Sprintf("restarted tincd: members %v did not answer over the mesh (tinc 1.0's key race)", deaf), nil
}

// unanswered pings, over the mesh, every member this host holds a meta connection with, for up to
// d, and returns the names of those that never answered, sorted; nil when every one did or
// when this host cannot tell (no ICMP socket, no socket diagnostics).
func (n *tincNet) unanswered(ctx context.Context, d time.Duration) []string {
	pending := map[netip.Addr]string{}
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
	peers, err := metaPeers(uint16(n.port), pub)
	if err != nil {
		return nil
	}
	for ip := range peers {
		for _, m := range byPub[ip] {
			pending[m.vpn] = m.name
		}
	}
	if len(pending) == 0 {
		return nil
	}
	p, err := icmp.New(n.addr.Addr().Is4())
	if err != nil {
		return nil
	}
	defer p.Close()
	daemon.Await(ctx, d, func() bool {
		for ip := range pending {
			p.Send(ip)
		}
		p.Await(pending, 200*time.Millisecond)
		return len(pending) == 0
	})
	var out []string
	for _, name := range pending {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// metaPeers returns those of the addresses given that this host holds an established TCP
// connection with on the tinc port (either end's), on which both ends have authenticated.
func metaPeers(port uint16, addrs []netip.Addr) (map[netip.Addr]bool, error) {
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	out := map[netip.Addr]bool{}
	err := eachEstablished(func(d tcpDial) {
		authed := d.received >= 2*authedBytes && d.acked > authedBytes
		if authed && want[d.remote.Addr()] && (d.remote.Port() == port || d.localPort == port) {
			out[d.remote.Addr()] = true
		}
	})
	return out, err
}
