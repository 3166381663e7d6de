package master_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
)

// The address facts (ipv4, ipv6, interfaces.IFACE.ipv4/ipv6) are documented as lists of single
// addresses, so a bundle may write a peer's into another host's configuration. An IPv6 address
// with a zone ("fe80::1%eth0") parses as one address, but its zone is any text: a compromised
// minion's "fe80::1%x\n    allow all;" added lines to every host's file that lists the peers'
// addresses. A report with a zone (brine's own facts never have one) is refused whole, and what
// the other hosts render stays as it was.
func TestEvilMinionAddressFactsCarryNoText(t *testing.T) {
	m := master.TestMaster(t, master.FactsRate(1e6, 1e6)) // a throttled report must not pass for a refused one
	acceptedMinion(t, m, "good1", []string{"mesh"})
	evil := evilMinion(t, m, "evil", []string{"mesh"}, nil)
	if r, _, ok := evil.request(wire.KindFacts, map[string]any{"os": "linux", "ipv6": []any{"2001:db8::6"}}); !ok || !r.OK {
		t.Fatalf("the evil minion's first facts were refused: %+v", r)
	}
	kept := m.Facts("evil")
	b := bundle(t, map[string]string{"main.hcl": `
variable "root" {
  type = string
}

file "allow" {
  path    = "${var.root}/allow.conf"
  content = join("", [for p in peers("group:mesh") : "    allow ${try(p.ipv6[0], "::1")};\n" if p.id != minion.id])
}

file "iface" {
  path    = "${var.root}/iface.conf"
  content = join("", [for p in peers("group:mesh") : "    allow ${try(p.interfaces.eth0.ipv6[0], "::1")};\n" if p.id != minion.id])
}
`})
	root := t.TempDir()
	base := planOf(t, m, b, root, "good1")["good1"]
	if d := base["file.allow"].Diff; !strings.Contains(d, "allow 2001:db8::6;") {
		t.Fatalf("the peer's address is not in the plan:\n%s", d)
	}
	for _, tc := range []struct{ name, zone string }{
		{"newline", "x\n    allow all;\n#"},
		{"quote", `x"; include /etc/shadow; #`},
		{"shell", "x$(touch /tmp/brine-zone)"},
		{"space", "eth0 allow all"},
		{"bidi", "\u202e"},
		{"plain", "eth0"},
	} {
		name, zone := tc.name, tc.zone
		for _, where := range []string{"ipv6", "interfaces.ipv6"} {
			facts := map[string]any{"os": "linux", "ipv6": []any{"fe80::1%" + zone}}
			if where != "ipv6" {
				facts = map[string]any{"os": "linux", "interfaces": map[string]any{"eth0": map[string]any{"ipv4": []any{}, "ipv6": []any{"fe80::1%" + zone}}}}
			}
			r, _, ok := evil.request(wire.KindFacts, facts)
			if !ok {
				t.Fatalf("%s in %s: the master did not answer", name, where)
			}
			if r.OK || !strings.Contains(r.Error, "zone") && !strings.Contains(r.Error, "one line of text") {
				t.Errorf("%s in %s: facts accepted (%+v)", name, where, r)
			}
			if got := m.Facts("evil"); !reflect.DeepEqual(got, kept) {
				t.Errorf("%s in %s: the evil minion's facts changed:\n%v", name, where, got)
				after := planOf(t, m, b, root, "good1")["good1"]
				t.Fatalf("good1 renders:\n%s\n%s", after["file.allow"].Diff, after["file.iface"].Diff)
			}
		}
	}
	if after := planOf(t, m, b, root, "good1")["good1"]; !reflect.DeepEqual(after, base) || after["file.allow"].Status == states.StatusFailed {
		t.Fatalf("good1 renders differently after the attack:\n%+v\nwant\n%+v", after, base)
	}
}

// The other facts of an interface that brine reports itself are checked for their shape too:
// its name is a Linux interface name (at most 15 bytes, no white space, '/' or ':'), its mac one
// hardware address or empty. A compromised minion's "aa:bb\n  allow all;" or an interface
// named "eth0 allow all" reached every host's file built from the peers' interfaces (dhcpd
// static leases, say).
func TestEvilMinionInterfaceFactsHaveTheirShape(t *testing.T) {
	m := master.TestMaster(t, master.FactsRate(1e6, 1e6)) // a throttled report must not pass for a refused one
	acceptedMinion(t, m, "good1", []string{"mesh"})
	evil := evilMinion(t, m, "evil", []string{"mesh"}, nil)
	iface := func(name string, mac any) map[string]any {
		return map[string]any{"os": "linux", "interfaces": map[string]any{name: map[string]any{"ipv4": []any{"10.0.0.6"}, "ipv6": []any{}, "mac": mac}}}
	}
	if r, _, ok := evil.request(wire.KindFacts, iface("eth0", "52:54:00:12:34:56")); !ok || !r.OK {
		t.Fatalf("the evil minion's first facts were refused: %+v", r)
	}
	for _, ok := range []map[string]any{iface("lo", ""), iface("tinc-mesh", ""), iface("ib0", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01")} {
		if r, _, _ := evil.request(wire.KindFacts, ok); !r.OK {
			t.Fatalf("facts like a real host's refused: %v: %s", ok, r.Error)
		}
	}
	if r, _, _ := evil.request(wire.KindFacts, iface("eth0", "52:54:00:12:34:56")); !r.OK {
		t.Fatal(r.Error)
	}
	b := bundle(t, map[string]string{"main.hcl": `
variable "root" {
  type = string
}

file "leases" {
  path    = "${var.root}/leases.conf"
  content = join("", flatten([for p in peers("group:mesh") : [for n, i in p.interfaces : "host ${p.id}-${n} { hardware ethernet ${i.mac}; }\n"] if p.id != minion.id]))
}
`})
	root := t.TempDir()
	base := planOf(t, m, b, root, "good1")["good1"]
	if d := base["file.leases"].Diff; !strings.Contains(d, "host evil-eth0 { hardware ethernet 52:54:00:12:34:56; }") {
		t.Fatalf("the peer's interface is not in the plan:\n%s", d)
	}
	refusedWithoutEffect(t, m, evil, b, root, "file.leases", base, map[string]map[string]any{
		"mac with a newline":       iface("eth0", "52:54:00:12:34:56; }\n  allow all;\n#"),
		"mac that is text":         iface("eth0", "$(touch /tmp/brine-mac)"),
		"interface with a space":   iface("eth0 { allow all; } host x", ""),
		"interface with a newline": iface("eth0\n", ""),
		"interface with a slash":   iface("../eth0", ""),
		"interface too long":       iface("eth0-0123456789ab", ""),
		"interface with a quote":   iface("e\"$(id)", ""),
		"interface with a bidi":    iface("eth\u202e0", ""),
		"mac not a string":         iface("eth0", 5),
	})
}

// The host facts brine reports itself have their shape too (hostname and fqdn host names; os,
// os_version, arch and kernel one word; cpus and memory_mb whole numbers), and no fact's string
// may hold a control or bidirectional formatting character: a bundle that lists the peers in
// /etc/hosts took a compromised minion's hostname "evil\n10.0.0.9 bank.example" (or the same
// with a tab or a space) as a line or an alias of its own on every host.
func TestEvilMinionHostFactsHaveTheirShape(t *testing.T) {
	m := master.TestMaster(t, master.FactsRate(1e6, 1e6)) // a throttled report must not pass for a refused one
	acceptedMinion(t, m, "good1", []string{"mesh"})
	evil := evilMinion(t, m, "evil", []string{"mesh"}, nil)
	host := func(k string, v any) map[string]any {
		f := map[string]any{"os": "debian", "os_version": "12", "os_name": "Debian GNU/Linux 12 (bookworm)", "arch": "amd64",
			"kernel": "6.1.0-18-amd64", "hostname": "evil", "fqdn": "evil.example.com", "cpus": 2, "memory_mb": 24000,
			"ipv4": []any{"10.0.0.6"}}
		if k != "" {
			f[k] = v
		}
		return f
	}
	for _, f := range []map[string]any{host("hostname", ""), host("fqdn", "evil.example.com."), host("kernel", "6.6.13+rpt-rpi-v8"),
		host("os_version", "22.04"), host("hostname", "web_1-a"), host("note", "a line of text, with spaces ( ) / ' \" é"),
		host("note", "\U0001F469\u200d\U0001F4BB soft\u00adhyphen \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"), host("hostname", strings.Repeat("a", 64))} {
		if r, _, ok := evil.request(wire.KindFacts, f); !ok || !r.OK {
			t.Fatalf("facts like a real host's refused: %v: %+v", f, r)
		}
	}
	if r, _, ok := evil.request(wire.KindFacts, host("", nil)); !ok || !r.OK {
		t.Fatalf("the evil minion's facts were refused: %+v", r)
	}
	b := bundle(t, map[string]string{"main.hcl": `
variable "root" {
  type = string
}

file "hosts" {
  path    = "${var.root}/hosts"
  content = join("", [for p in peers("group:mesh") : "${p.ipv4[0]} ${p.hostname} ${p.fqdn} # ${p.os} ${p.os_version} ${p.kernel} ${p.arch} ${p.cpus} ${p.memory_mb} ${try(p.note, "")}\n" if p.id != minion.id])
}
`})
	root := t.TempDir()
	base := planOf(t, m, b, root, "good1")["good1"]
	if d := base["file.hosts"].Diff; !strings.Contains(d, "10.0.0.6 evil evil.example.com # debian 12 6.1.0-18-amd64 amd64 2 24000") {
		t.Fatalf("the peer is not in the plan:\n%s", d)
	}
	refusedWithoutEffect(t, m, evil, b, root, "file.hosts", base, map[string]map[string]any{
		"hostname with a newline":   host("hostname", "evil\n10.0.0.9 bank.example"),
		"hostname with a tab":       host("hostname", "evil\tbank.example"),
		"hostname with a space":     host("hostname", "evil bank.example"),
		"hostname that is a shell":  host("hostname", "$(touch /tmp/brine-host)"),
		"hostname too long":         host("hostname", strings.Repeat("a", 65)),
		"fqdn with a quote":         host("fqdn", `evil.example"; allow all; #`),
		"os with a bidi override":   host("os", "debian\u202e"),
		"kernel with a space":       host("kernel", "6.1.0 ; rm -rf /"),
		"arch not a string":         host("arch", []any{"amd64"}),
		"os_version with a newline": host("os_version", "12\n"),
		"cpus that is text":         host("cpus", "2; reboot"),
		"memory_mb with a fraction": host("memory_mb", 1.5),
		"os_name with a return":     host("os_name", "Debian\r10.0.0.9 bank.example"),
		"a fact with a newline":     host("note", "one\n10.0.0.9 bank.example"),
		"a nested fact with a tab":  host("note", map[string]any{"x": []any{"a\tb"}}),
		"a fact with a separator":   host("note", "one\u2028two"),
		"a key like tinc_pubkey's":  host("tinc_pubkey.x", "evil\n10.0.0.9 bank.example"),
		"an object under that key":  host("tinc_pubkey.x", map[string]any{"y": "a\nb\u202e"}),
		"a key with a separator":    host("a\u2028b", "x"),
		"a key with a bidi":         host("role\u202e", "x"),
		"a zero-width space":        host("hostname_alias", "web\u200b1"),
		"a byte order mark":         host("note", "\ufeffx"),
	})
}

// refusedWithoutEffect sends each of cases as the evil minion's facts and checks that the master
// refuses it and keeps the minion's facts, and that good1 renders b as in base after them all
// (file names the resource to show when it does not).
func refusedWithoutEffect(t *testing.T, m *master.Master, evil *rawClient, b *states.Bundle, root, file string, base map[string]states.Result, cases map[string]map[string]any) {
	t.Helper()
	kept := m.Facts("evil")
	for name, facts := range cases {
		r, _, ok := evil.request(wire.KindFacts, facts)
		if !ok {
			t.Fatalf("%s: the master did not answer", name)
		}
		if r.OK {
			t.Errorf("%s: facts accepted", name)
		}
		if got := m.Facts("evil"); !reflect.DeepEqual(got, kept) {
			after := planOf(t, m, b, root, "good1")["good1"]
			t.Fatalf("%s: the evil minion's facts changed; good1 renders:\n%s", name, after[file].Diff)
		}
	}
	if after := planOf(t, m, b, root, "good1")["good1"]; !reflect.DeepEqual(after, base) {
		t.Fatalf("good1 renders differently after the attack:\n%+v\nwant\n%+v", after, base)
	}
}
