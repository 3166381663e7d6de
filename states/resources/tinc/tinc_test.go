package tinc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/file"
	"github.com/brinecm/brine/states/resources/internal/daemon"
	"github.com/brinecm/brine/states/resources/iptables"
	"github.com/brinecm/brine/states/resources/restest"
	"github.com/brinecm/brine/states/resources/ufw"
	"github.com/brinecm/brine/testbed"
)

func TestTincName(t *testing.T) {
	for in, want := range map[string]string{"web1": "web1", "web-1.prod": "web_1_prod", "a_b": "a_b"} {
		if got := TincName(in); got != want {
			t.Errorf("TincName(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestTincDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"tinc_network \"mesh\" {\n name = \"a\"\n}", "needs a VPN address"},
		{"tinc_network \"mesh\" {\n name = \"a\"\n address = \"10.8.0.1/33\"\n}", "with the mesh's prefix length"},
		{"tinc_network \"mesh\" {\n name = \"a\"\n address = \"10.8.0.1/24\"\n members = [{ name = \"b\" }]\n}", "has no vpn_address"},
		{"tinc_network \"mesh\" {\n name = \"a\"\n address = \"10.8.0.1/24\"\n members = [{ name = \"b-1\", vpn_address = \"10.8.0.2\" }, { name = \"b.1\", vpn_address = \"10.8.0.3\" }]\n}", "same tinc name b_1"},
		{"tinc_network \"mesh\" {\n name = \"a\"\n address = \"10.8.0.1/24\"\n members = [{ name = \"b\", vpn_address = \"10.8.0.2\", public_key = \"ssh-rsa AAAA\" }]\n}", "RSA PUBLIC KEY"},
		{"tinc_network \"mesh\" {\n name = \"a\"\n adress = \"10.8.0.1/24\"\n}", "Did you mean"},
		{"tinc_network \"mesh\" {\n name = \"a\"\n address = \"10.8.0.1/24\"\n members = [{ name = \"b\", vpn_address = \"10.8.0.2\" }, { name = \"c\", vpn_address = \"10.8.0.2\" }]\n}", "same vpn_address 10.8.0.2"},
		{"tinc_network \"mesh\" {\n name = \"a\"\n address = \"10.8.0.1/24\"\n members = [{ name = \"b\", vpn_address = \"10.8.0.1\" }]\n}", "has this host's VPN address"},
	} {
		b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(tc.src)}}
		_, diags := restest.Compile(b, testTypes, states.Options{})
		if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%s: diagnostics %q, want one containing %q", tc.src, diags.Error(), tc.want)
		}
	}
}

// TestTincFilesAndFacts writes a network with no daemon under a temporary root: key made once,
// files as tinc 1.0 reads them, the public key reported by Facts, a departed member's file
// removed.
func TestTincFilesAndFacts(t *testing.T) {
	old, oldSystemd := tincRoot, daemon.SystemdDir
	tincRoot = t.TempDir()
	daemon.SystemdDir = filepath.Join(tincRoot, "no-systemd")
	t.Cleanup(func() { tincRoot, daemon.SystemdDir = old, oldSystemd })
	src := func(members string) string {
		return `tinc_network "mesh" {
  name     = "a"
  address  = "10.8.0.1"
  key_size = 1024
  running  = false
  members  = [` + members + `]
}`
	}
	two := `{ name = "a", address = "192.0.2.1", vpn_address = "10.8.0.1" }, { name = "web-2", address = "192.0.2.2", vpn_address = "10.8.0.2" }`
	restest.WantCounts(t, restest.RunHCL(t, testTypes, src(two), false), 1, 0)
	dir := filepath.Join(tincRoot, "etc/tinc/mesh")
	key1, _ := os.ReadFile(filepath.Join(dir, "rsa_key.priv"))
	if st, err := os.Stat(filepath.Join(dir, "rsa_key.priv")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", st, err)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "tinc.conf"))
	for _, want := range []string{"Name = a\n", "Interface = tinc-mesh\n", "AddressFamily = ipv4\n", "Port = 655\n", "StrictSubnets = yes\n", "ConnectTo = web_2\n"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("tinc.conf lacks %q:\n%s", want, conf)
		}
	}
	facts := Facts()["tinc_pubkey"].(map[string]any)
	pub, _ := facts["mesh"].(string)
	self, _ := os.ReadFile(filepath.Join(dir, "hosts/a"))
	if !strings.HasPrefix(pub, "-----BEGIN RSA PUBLIC KEY-----") || !strings.Contains(string(self), pub) || !strings.Contains(string(self), "Subnet = 10.8.0.1/32") {
		t.Fatalf("facts %q; hosts/a:\n%s", pub, self)
	}
	if up, _ := os.Stat(filepath.Join(dir, "tinc-up")); up == nil || up.Mode().Perm()&0o111 == 0 {
		t.Errorf("tinc-up is not executable")
	}
	if h, _ := os.ReadFile(filepath.Join(dir, "hosts/web_2")); !strings.Contains(string(h), "Address = 192.0.2.2 655\nSubnet = 10.8.0.2/32\n") {
		t.Errorf("hosts/web_2:\n%s", h)
	}
	restest.WantCounts(t, restest.RunHCL(t, testTypes, src(two), false), 0, 0)
	// web-2 leaves: its file goes, the key stays.
	restest.WantCounts(t, restest.RunHCL(t, testTypes, src(`{ name = "a", address = "192.0.2.1", vpn_address = "10.8.0.1" }`), false), 1, 0)
	if _, err := os.Stat(filepath.Join(dir, "hosts/web_2")); !os.IsNotExist(err) {
		t.Errorf("hosts/web_2 of a departed member still there: %v", err)
	}
	if key2, _ := os.ReadFile(filepath.Join(dir, "rsa_key.priv")); string(key1) != string(key2) {
		t.Errorf("the key pair was made again")
	}
}

func tincBundle(n *restest.NetCluster) string {
	return `
variable "members" {}
variable "vpn" { type = string }
tinc_network "mesh" {
  address  = var.vpn
  key_size = 2048
  members  = var.members
}
`
}

// meshVars writes a var file with the members and returns the arguments for brine local apply.
func meshVars(t *testing.T, n *restest.NetCluster, host string, vpn map[string]string, keys map[string]string, members []string) []string {
	t.Helper()
	var b strings.Builder
	b.WriteString("members = [\n")
	for _, m := range members {
		fmt.Fprintf(&b, "  { name = %q, address = %q, vpn_address = %q, public_key = <<EOK\n%s\nEOK\n  },\n",
			m, n.C.Host(m).Addr(), vpn[m], keys[m])
	}
	b.WriteString("]\n")
	p := filepath.Join(n.C.SharedDir(), "vars-"+host+".hcl")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--var-file", testbed.HostSharedDir + "/vars-" + host + ".hcl", "--var", "vpn=" + vpn[host] + "/24"}
}

func pollPing(t *testing.T, n *restest.NetCluster, from, ip string, want bool, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		err = restest.PingFrom(n.C.Host(from), ip, time.Second)
		if (err == nil) == want {
			return
		}
	}
	if want {
		t.Errorf("%s cannot ping %s over the mesh: %v", from, ip, err)
	} else {
		t.Errorf("%s still pings %s", from, ip)
	}
}

// meshCluster starts testbed hosts a, b and c for a mesh with VPN addresses 10.8.0.1-3, and
// stops their tincds when the test ends.
func meshCluster(t *testing.T) (n *restest.NetCluster, hosts []string, vpn map[string]string) {
	n = restest.NewNetCluster(t, "a", "b", "c")
	hosts = []string{"a", "b", "c"}
	vpn = map[string]string{"a": "10.8.0.1", "b": "10.8.0.2", "c": "10.8.0.3"}
	t.Cleanup(func() {
		for _, h := range hosts {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			n.C.Host(h).Sh(ctx, "test -f /run/tinc.mesh.pid && kill $(cat /run/tinc.mesh.pid)")
			cancel()
		}
	})
	return n, hosts, vpn
}

// meshKeys applies the mesh with no members on each host, which makes its key pair (the fact
// the minion would report), and returns the public keys, read with Facts through each root.
func meshKeys(t *testing.T, n *restest.NetCluster, hosts []string, vpn map[string]string) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for _, h := range hosts {
		rep, _, stderr := n.Run(h, "apply", map[string]string{"main.hcl": tincBundle(n)}, meshVars(t, n, h, vpn, nil, nil)...)
		restest.WantCounts(t, rep, 1, 0)
		old := tincRoot
		tincRoot = n.C.Host(h).Root()
		k, _ := Facts()["tinc_pubkey"].(map[string]any)["mesh"].(string)
		tincRoot = old
		if k == "" {
			t.Fatalf("no public key fact on %s (%s)", h, stderr)
		}
		keys[h] = k
	}
	return keys
}

func TestTincMeshInTestbed(t *testing.T) {
	n, hosts, vpn := meshCluster(t)
	keys := meshKeys(t, n, hosts, vpn)
	apply := func(h string, members []string) *states.Report {
		rep, _, _ := n.Run(h, "apply", map[string]string{"main.hcl": tincBundle(n)}, meshVars(t, n, h, vpn, keys, members)...)
		return rep
	}
	for _, h := range hosts {
		restest.WantCounts(t, apply(h, hosts), 1, 0)
	}
	for _, from := range hosts {
		for _, to := range hosts {
			if from != to {
				pollPing(t, n, from, vpn[to], true, 30*time.Second)
			}
		}
	}
	if t.Failed() {
		for _, h := range hosts {
			t.Logf("%s log:\n%s", h, n.Sh(h, "cat /var/log/tinc.mesh.log; ip addr; cat /etc/tinc/mesh/tinc.conf"))
		}
		t.FailNow()
	}
	for _, h := range hosts {
		restest.WantCounts(t, apply(h, hosts), 0, 0)
	}

	// A tincd that dies is started again by the next apply, and the mesh heals.
	n.Sh("b", "kill -9 $(cat /run/tinc.mesh.pid)")
	pollPing(t, n, "a", vpn["b"], false, 10*time.Second)
	rep := apply("b", hosts)
	restest.WantCounts(t, rep, 1, 0)
	if d := restest.Result(t, rep, `tinc_network.mesh`).Diff; !strings.Contains(d, "not running -> running") {
		t.Errorf("diff after tincd died:\n%s", d)
	}
	// tincd's own retries bring b back: b connects out at start, a and c retry with a backoff
	// that grew while b was down. Under the whole suite's load a peer's next retry was seen to
	// come later than a minute; SIGALRM ("retry now") stands in for it after 20 s, so the test
	// checks that the restarted tincd rejoins, not how long tinc's backoff is.
	for _, pair := range [][2]string{{"a", "b"}, {"b", "c"}, {"c", "b"}} {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) && restest.PingFrom(n.C.Host(pair[0]), vpn[pair[1]], time.Second) != nil {
		}
		if restest.PingFrom(n.C.Host(pair[0]), vpn[pair[1]], time.Second) != nil {
			t.Logf("%s does not reach %s after 20 s; asking both tincds to retry now", pair[0], pair[1])
			n.Sh(pair[0], "kill -ALRM $(cat /run/tinc.mesh.pid)")
			n.Sh(pair[1], "kill -ALRM $(cat /run/tinc.mesh.pid)")
		}
		pollPing(t, n, pair[0], vpn[pair[1]], true, 30*time.Second)
	}
	if t.Failed() {
		for _, h := range hosts {
			t.Logf("%s after b's tincd restarted:\n%s", h, n.Sh(h, "tail -n 40 /var/log/tinc.mesh.log; cat /run/tinc.mesh.pid; ip -4 -o addr"))
		}
		t.FailNow()
	}

	// c leaves the mesh: a and b drop its hosts file, reload, and lose it.
	for _, h := range []string{"a", "b"} {
		rep := apply(h, []string{"a", "b"})
		restest.WantCounts(t, rep, 1, 0)
		if d := restest.Result(t, rep, `tinc_network.mesh`).Diff; !strings.Contains(d, "reload (SIGHUP") {
			t.Errorf("%s: removing a member did not reload tincd:\n%s", h, d)
		}
		if _, err := os.Stat(filepath.Join(n.C.Host(h).Root(), "etc/tinc/mesh/hosts/c")); !os.IsNotExist(err) {
			t.Errorf("%s: hosts/c still there: %v", h, err)
		}
	}
	pollPing(t, n, "a", vpn["c"], false, 20*time.Second)
	pollPing(t, n, "b", vpn["c"], false, 20*time.Second)
	pollPing(t, n, "a", vpn["b"], true, 20*time.Second)
	pollPing(t, n, "b", vpn["a"], true, 20*time.Second)
}

// peerTypes are the types whose arguments take a peer's data, and file, which takes none.
var peerTypes = states.NewRegistry(Type, ufw.Type, iptables.RuleType, iptables.ChainType, file.Type)

// A peer's bad data (a key with directives around it, an address with a space, an address that
// is every network) fails the resource that renders it on this host; the bundle still compiles,
// and the other resources run. The same value written in the bundle is a compile error.
func TestPeerDataFailsOneResource(t *testing.T) {
	old, oldSystemd := tincRoot, daemon.SystemdDir
	tincRoot = t.TempDir()
	daemon.SystemdDir = filepath.Join(tincRoot, "no-systemd")
	t.Cleanup(func() { tincRoot, daemon.SystemdDir = old, oldSystemd })
	key := restest.TincKey(t)
	src := `
tinc_network "mesh" {
  name     = "a"
  address  = "10.8.0.1/24"
  key_size = 1024
  running  = false
  members  = [for i, p in peers("*") : { name = p.id, address = p.addr, vpn_address = "10.8.0.${i + 2}", public_key = p.key }]
}
ufw {
  rule "peers" {
    from = peers("*")[0].addr
    port = "22"
  }
}
iptables_rule "peer" {
  chain  = "INPUT"
  source = peers("*")[0].addr
  rule   = "-j ACCEPT"
}
file "marker" {
  path    = "` + filepath.Join(t.TempDir(), "marker") + `"
  content = "ok"
}
`
	b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}
	peers := func(addr, k string) states.Options {
		return states.Options{Minion: states.Minion{ID: "a"}, Peers: map[string][]map[string]any{"*": {{"id": "evil", "addr": addr, "key": k}}}}
	}
	for name, o := range map[string]states.Options{
		"key with directives": peers("192.0.2.9", "Subnet = 0.0.0.0/0\n"+key+"\nAddress = 6.6.6.6"),
		"address with space":  peers("192.0.2.9 -j ACCEPT", key),
		"every address":       peers("0.0.0.0/0", key),
		"empty address":       peers("", key),
	} {
		g, diags := restest.Compile(b, peerTypes, o)
		if diags.HasErrors() {
			t.Fatalf("%s: the bundle does not compile: %s", name, diags.Error())
		}
		rep := states.Run(context.Background(), g, true)
		failed := map[string]string{}
		for _, r := range rep.Results {
			if r.Status == states.StatusFailed {
				failed[r.Address] = r.Error
			}
			if r.Type == "file" && r.Status != states.StatusChanged {
				t.Errorf("%s: an unrelated resource did not run: %+v", name, r)
			}
		}
		if len(failed) == 0 {
			t.Errorf("%s: no resource failed", name)
		}
		for addr, e := range failed {
			if !strings.Contains(e, "refused data") && !strings.Contains(addr, "iptables") && !strings.Contains(addr, "ufw") {
				t.Errorf("%s: %s failed for another reason: %s", name, addr, e)
			}
		}
		if name == "key with directives" {
			if _, bad := failed["tinc_network.mesh"]; !bad {
				t.Errorf("%s: tinc_network did not fail: %v", name, failed)
			}
		} else if _, bad := failed["iptables_rule.peer"]; !bad || !strings.Contains(failed["iptables_rule.peer"], "refused data") {
			t.Errorf("%s: iptables_rule did not fail on the data: %v", name, failed)
		}
	}
	// A valid peer: the hosts file holds the key and address, each on its own line.
	g, diags := restest.Compile(b, peerTypes, peers("192.0.2.9", "\n"+key+"\n"))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var tinc *tincNet
	for _, r := range g.Resources() {
		if tn, ok := r.(*tincNet); ok {
			tinc = tn
		}
	}
	if tinc == nil {
		t.Fatal("no tinc_network")
	}
	files, _ := tinc.files("(self)")
	want := "# Managed by brine.\nAddress = 192.0.2.9 655\nSubnet = 10.8.0.2/32\n\n" + key + "\n"
	if got := string(files["hosts/evil"]); got != want {
		t.Fatalf("hosts/evil:\n%s\nwant\n%s", got, want)
	}
	// Written in the bundle, the same mistakes are compile errors with a position.
	restest.WantCompileError(t, peerTypes, `ufw {
  rule "x" {
    from = "0.0.0.0/0"
  }
}`, "every address")
	restest.WantCompileError(t, peerTypes, `ufw {
  rule "x" {
    from = ""
  }
}`, "not one address")
	restest.WantCompileError(t, peerTypes, `iptables_rule "x" {
  chain = "INPUT"
  rule  = "-s 10.0.0.1,0.0.0.0/0 -j ACCEPT"
}`, "not one address")
	restest.WantCompileError(t, peerTypes, "tinc_network \"mesh\" {\n name = \"a\"\n address = \"10.8.0.1/24\"\n members = [{ name = \"b\", vpn_address = \"10.8.0.2\", address = \"1.2.3.4\\nSubnet = 0.0.0.0/0\" }]\n}", "one host name or IP address")
}
