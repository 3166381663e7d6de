package tinc

import (
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/states/resources/restest"
)

// A member of a mesh whose host is broken into holds its tinc private key and may run any tincd
// it likes. tinc 1.0 takes the Subnets a node announces over the mesh unless StrictSubnets is set:
// c, whose hosts file (written by every other member from peers() data) says 10.8.0.3, announced
// b's VPN address with a better weight (Subnet = 10.8.0.2/32#1), and a sent b's traffic to c, which
// answered for b. With StrictSubnets each member routes only the subnets its own hosts files give
// the others: c's claim is ignored, and a's packets for b never reach c.
func TestMeshMemberCannotClaimAnothersSubnet(t *testing.T) {
	n, hosts, vpn := meshCluster(t)
	keys := meshKeys(t, n, hosts, vpn)
	for _, h := range hosts {
		rep, _, _ := n.Run(h, "apply", map[string]string{"main.hcl": tincBundle(n)}, meshVars(t, n, h, vpn, keys, hosts)...)
		restest.WantCounts(t, rep, 1, 0)
	}
	for _, to := range []string{"b", "c"} {
		pollPing(t, n, "a", vpn[to], true, 30*time.Second)
	}
	if t.Failed() {
		t.FailNow()
	}

	// c, compromised: its own tincd announces b's address too, and c answers for it.
	n.Sh("c", `set -e
kill $(cat /run/tinc.mesh.pid); while test -e /run/tinc.mesh.pid; do sleep 0.1; done
sed -i '2i Subnet = 10.8.0.2/32#1' /etc/tinc/mesh/hosts/c
tincd -n mesh --pidfile=/run/tinc.mesh.pid --logfile=/var/log/tinc.mesh.log
for i in $(seq 50); do ip link show tinc-mesh >/dev/null 2>&1 && break; sleep 0.1; done
ip addr add 10.8.0.2/32 dev tinc-mesh`)
	pollPing(t, n, "a", vpn["c"], true, 30*time.Second)
	// b goes away; whatever answers a's pings to b's address now is c.
	n.Sh("b", "kill $(cat /run/tinc.mesh.pid)")
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if restest.PingFrom(n.C.Host("a"), vpn["b"], time.Second) == nil {
			n.Sh("a", "kill -USR2 $(cat /run/tinc.mesh.pid); sleep 0.5")
			log := n.Sh("a", "grep -A20 'Subnet list' /var/log/tinc.mesh.log | tail -n 20; cat /etc/tinc/mesh/tinc.conf")
			t.Fatalf("a's packets for b's address (%s) reached c, which claimed it:\n%s", vpn["b"], log)
		}
	}
	if log := n.Sh("a", "cat /var/log/tinc.mesh.log"); !strings.Contains(log, "10.8.0.2") {
		t.Logf("a's log does not mention c's claim:\n%s", log)
	}
}
