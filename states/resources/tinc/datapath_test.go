package tinc

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/states/resources/restest"
)

// A member whose packets the other end of a meta connection no longer accepts over UDP (as after
// tinc 1.0's key race, here a firewall that drops the UDP from b on a, once their path MTU
// is known) is found by the apply that reloads tincd, which restarts it: the restarted tincd
// and its peer learn afresh what reaches whom, and the pair answers over the mesh at once
// rather than after tincd's own check a minute or more later.
func TestDataPathHealedByRestart(t *testing.T) {
	n, vpn, apply := meshPair(t)
	time.Sleep(2 * time.Second) // a burst of path MTU probes has been answered: b sends a UDP
	n.Sh("a", "iptables -I INPUT -p udp --dport 655 -s "+n.C.Host("b").Addr()+" -j DROP")
	pollPing(t, n, "a", vpn["b"], false, 10*time.Second)
	if t.Failed() {
		t.FailNow()
	}

	// A change of members (c's VPN address) reloads a's tincd; b does not answer over the mesh.
	vpn["c"] = "10.8.0.9"
	diff, stderr := apply("a")
	if !strings.Contains(diff, "reload") {
		t.Fatalf("changing a member did not reload tincd:\n%s", diff)
	}
	if !strings.Contains(stderr, "restarted tincd (1 of at most 3 times): members [b] did not answer") {
		t.Errorf("the apply did not restart tincd for b (stderr):\n%s", stderr)
	}
	pollPing(t, n, "a", vpn["b"], true, 5*time.Second)
	pollPing(t, n, "b", vpn["a"], true, 5*time.Second)
}

// A member whose meta connection has not authenticated (one still exchanging keys, one that does
// not hold this host's key yet, as in a mesh's first apply, or a hostile one) has no data path
// yet and is not judged: the apply that reloads tincd neither waits for it over the mesh nor
// restarts tincd for it. Here b's tinc port is a peer that answers a's ID line with its own and
// then says nothing, so a's connection to b stays established and unauthenticated.
func TestDataPathSkipsUnauthenticatedMembers(t *testing.T) {
	n, hosts, vpn := meshCluster(t)
	keys := meshKeys(t, n, hosts, vpn)
	n.Sh("b", "kill $(cat /run/tinc.mesh.pid) && while test -e /run/tinc.mesh.pid; do sleep 0.05; done")
	var ln net.Listener
	if err := restest.InHostNet(n.C.Host("b"), func() (err error) {
		ln, err = net.Listen("tcp", n.C.Host("b").Addr()+":655")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				buf := make([]byte, 64)
				if _, err := c.Read(buf); err == nil {
					_, _ = c.Write([]byte("0 b 17\n")) // b's ID line; then silence
				}
			}()
		}
	}()

	rep, _, stderr := n.Run("a", "apply", map[string]string{"main.hcl": tincBundle(n)}, meshVars(t, n, "a", vpn, keys, []string{"a", "b"})...)
	restest.WantCounts(t, rep, 1, 0)
	mu.Lock()
	dialled := len(conns)
	mu.Unlock()
	if dialled == 0 {
		t.Fatal("a's tincd never dialled b: the test proves nothing")
	}
	if strings.Contains(stderr, "tinc_network mesh:") {
		t.Errorf("the apply judged b, whose meta connection never authenticated (stderr):\n%s", stderr)
	}
}

// A member that drops ICMP echo on its mesh address (a firewall, or a hostile member) looks
// broken to the check and costs the apply its restarts, three and no more, and the log says so.
func TestDataPathMemberDroppingEchoCostsThreeRestarts(t *testing.T) {
	n, vpn, apply := meshPair(t)
	n.Sh("b", "iptables -I INPUT -i tinc-mesh -p icmp --icmp-type echo-request -j DROP")
	vpn["c"] = "10.8.0.9" // a change of members reloads a's tincd
	diff, stderr := apply("a")
	if !strings.Contains(diff, "reload") {
		t.Fatalf("changing a member did not reload tincd:\n%s", diff)
	}
	if !strings.Contains(stderr, "members [b] do not answer over the mesh, also after 3 restarts of tincd") {
		t.Errorf("the apply did not give up on b after three restarts (stderr):\n%s", stderr)
	}
}

// meshPair starts testbed hosts a, b and c for a mesh, with c's tincd down (a member that is down
// is not judged), applies the mesh on a and b and waits until they ping each other. apply
// applies it on a host again and returns the diff of its tinc_network and the apply's stderr.
func meshPair(t *testing.T) (n *restest.NetCluster, vpn map[string]string, apply func(host string) (diff, stderr string)) {
	t.Helper()
	n, hosts, vpn := meshCluster(t)
	keys := meshKeys(t, n, hosts, vpn)
	n.Sh("c", "kill $(cat /run/tinc.mesh.pid)")
	apply = func(h string) (string, string) {
		rep, _, stderr := n.Run(h, "apply", map[string]string{"main.hcl": tincBundle(n)}, meshVars(t, n, h, vpn, keys, hosts)...)
		restest.WantCounts(t, rep, 1, 0)
		return restest.Result(t, rep, `tinc_network.mesh`).Diff, stderr
	}
	apply("a")
	apply("b")
	pollPing(t, n, "a", vpn["b"], true, 30*time.Second)
	pollPing(t, n, "b", vpn["a"], true, 30*time.Second)
	if t.Failed() {
		t.FailNow()
	}
	return n, vpn, apply
}
