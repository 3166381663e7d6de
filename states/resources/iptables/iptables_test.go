package iptables

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
	"github.com/brinecm/brine/testbed"
)

func TestSplitArgs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"-p tcp --dport 22 -j ACCEPT", []string{"-p", "tcp", "--dport", "22", "-j", "ACCEPT"}},
		{`-m comment --comment "allow ssh" -j ACCEPT`, []string{"-m", "comment", "--comment", "allow ssh", "-j", "ACCEPT"}},
		{`--comment 'it''s' x`, []string{"--comment", "its", "x"}},
		{`--comment "a \"q\" b"`, []string{"--comment", `a "q" b`}},
		{"  a\t b  ", []string{"a", "b"}},
	} {
		got, err := splitArgs(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("splitArgs(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		back, _ := splitArgs(joinArgs(got))
		if !slices.Equal(back, got) {
			t.Errorf("joinArgs round trip of %q: %q", got, back)
		}
	}
	if _, err := splitArgs(`-m comment --comment "open`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestGuessCanonical(t *testing.T) {
	for _, tc := range []struct {
		fam      ipFamily
		in, want string
	}{
		{famV4, "-p tcp --dport 22 -j ACCEPT", "-p tcp -m tcp --dport 22 -j ACCEPT"},
		{famV4, "-p tcp -s 10.0.0.1 --dport 22 -j ACCEPT", "-s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT"},
		{famV6, "--source ::1 -p tcp --destination-port 22 -j REJECT", "-s ::1/128 -p tcp -m tcp --dport 22 -j REJECT --reject-with icmp6-port-unreachable"},
		{famV4, "-i lo -j ACCEPT", "-i lo -j ACCEPT"},
		{famV4, "-p udp -m udp --sport 53 -j ACCEPT", "-p udp -m udp --sport 53 -j ACCEPT"},
		{famV4, "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"},
		{famV4, "-m state --state NEW,ESTABLISHED,INVALID -j ACCEPT", "-m state --state INVALID,NEW,ESTABLISHED -j ACCEPT"},
		{famV4, "-p all -j ACCEPT", "-j ACCEPT"},
		{famV4, "! -i lo -s 127.0.0.0/8 -j DROP", "-s 127.0.0.0/8 ! -i lo -j DROP"},
		{famV4, "-p tcp -m multiport --dports 80,443 -j ACCEPT", "-p tcp -m multiport --dports 80,443 -j ACCEPT"},
		{famV6, "-p icmpv6 --icmpv6-type 128 -j ACCEPT", "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"},
		{famV6, "-p ipv6-icmp -j ACCEPT", "-p ipv6-icmp -j ACCEPT"},
	} {
		in, _ := splitArgs(tc.in)
		if got := joinArgs(guessCanonical(tc.fam, in)); got != tc.want {
			t.Errorf("guessCanonical(%s, %q) = %q; want %q", tc.fam, tc.in, got, tc.want)
		}
	}
}

// TestGuessCanonicalAgainstIptables checks the fast-path guesses against what iptables itself
// stores, in a private network namespace.
func TestGuessCanonicalAgainstIptables(t *testing.T) {
	inNetns(t, func() {
		for _, tc := range []struct {
			fam  ipFamily
			rule string
		}{
			{famV4, "-p tcp --dport 22 -j ACCEPT"},
			{famV4, "-p tcp -s 10.0.0.1 --dport 22 -j ACCEPT"},
			{famV4, "--source 10.0.0.0/8 --protocol udp --destination-port 53 --jump REJECT"},
			{famV4, "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"},
			{famV4, "-m state --state NEW,ESTABLISHED,INVALID -j ACCEPT"},
			{famV4, "-p all -j ACCEPT"},
			{famV4, "! -i lo -s 127.0.0.0/8 -j DROP"},
			{famV4, "-p tcp -m multiport --dports 80,443 -j ACCEPT"},
			{famV4, "-i eth0 -p tcp --dport 80 -m comment --comment \"web in\" -j ACCEPT"},
			{famV6, "-p icmpv6 --icmpv6-type 128 -j ACCEPT"},
			{famV6, "-s fd00::1 -p tcp --dport 443 -j REJECT"},
		} {
			bin := "iptables"
			if tc.fam == famV6 {
				bin = "ip6tables"
			}
			args, _ := splitArgs(tc.rule)
			exec.Command(bin, "-N", "BRINE-G").Run()
			ipt(t, bin, "-F", "BRINE-G")
			ipt(t, append([]string{bin, "-A", "BRINE-G"}, args...)...)
			lines := strings.Split(strings.TrimSpace(ipt(t, bin, "-S", "BRINE-G")), "\n")
			cs, _ := parseChainListing("BRINE-G", lines)
			if got := guessCanonical(tc.fam, args); len(cs.rules) != 1 || !slices.Equal(cs.rules[0], got) {
				t.Errorf("%s %q: iptables stores %q, the guess is %q", tc.fam, tc.rule, cs.rules, got)
			}
		}
	})
}

// inNetns runs f on an OS thread that has a network namespace of its own, so that the iptables
// processes the code under test starts see a private, empty firewall; the thread is thrown away
// afterwards. It skips where that is not possible.
func inNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		testbed.SkipUnavailable(t, "needs root for a private network namespace")
	}
	for _, bin := range []string{"iptables", "ip6tables", "iptables-restore", "ip6tables-restore"} {
		if _, err := exec.LookPath(bin); err != nil {
			testbed.SkipUnavailable(t, "needs "+bin)
		}
	}
	done := make(chan bool)
	go func() {
		ok := false
		defer func() { done <- ok }()
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			t.Logf("unshare(CLONE_NEWNET): %v", err)
			return
		}
		ok = true
		f()
	}()
	if !<-done {
		testbed.SkipUnavailable(t, "cannot create a network namespace here")
	}
}

func ipt(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

const iptPurgeBundle = `
iptables_chain "filter/BRINE-IN" {
  family = "both"
  purge  = true
  rule { args = "-i lo -j ACCEPT" }
  rule { args = "-p tcp --dport 22 -j ACCEPT" }
  rule {
    args   = "-s 10.1.2.3 -p udp --dport 53 -m comment --comment \"dns from ns1\" -j ACCEPT"
    family = "ipv4"
  }
  rule {
    args   = "-s fd00::1 -p tcp --dport 443 -j ACCEPT"
    family = "ipv6"
  }
  rule { args = "-p tcp -m multiport --dports 80,443 -j REJECT" }
  rule { args = "-j DROP" }
}
iptables_rule "jump" {
  chain    = "INPUT"
  rule     = "-j BRINE-IN"
  position = 1
  family   = "both"
  depends_on = [iptables_chain["filter/BRINE-IN"]]
}
iptables_chain "INPUT" {
  family = "both"
  policy = "DROP"
}
`

func TestIptablesPurgeOrderAndIdempotence(t *testing.T) {
	inNetns(t, func() {
		ipt(t, "iptables", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT") // the jump must go before it
		restest.WantCounts(t, restest.RunHCL(t, testTypes, iptPurgeBundle, false), 3, 0)
		want4 := ipt(t, "iptables", "-S", "BRINE-IN")
		want6 := ipt(t, "ip6tables", "-S", "BRINE-IN")
		if !strings.Contains(want6, "-A BRINE-IN -s fd00::1/128 -p tcp -m tcp --dport 443 -j ACCEPT") || strings.Contains(want6, "10.1.2.3") {
			t.Fatalf("ipv6 chain:\n%s", want6)
		}
		if in := ipt(t, "iptables", "-S", "INPUT"); !strings.HasPrefix(in, "-P INPUT DROP\n-A INPUT -j BRINE-IN\n-A INPUT -p icmp") {
			t.Fatalf("INPUT:\n%s", in)
		}
		// The second apply changes nothing.
		restest.WantCounts(t, restest.RunHCL(t, testTypes, iptPurgeBundle, false), 0, 0)

		// An unmanaged rule and a swapped order: purge restores exactly the declared chain.
		ipt(t, "iptables", "-I", "BRINE-IN", "2", "-p", "tcp", "--dport", "8080", "-j", "ACCEPT")
		ipt(t, "iptables", "-D", "BRINE-IN", "-i", "lo", "-j", "ACCEPT")
		ipt(t, "iptables", "-A", "BRINE-IN", "-i", "lo", "-j", "ACCEPT")
		ipt(t, "ip6tables", "-A", "BRINE-IN", "-p", "udp", "-j", "ACCEPT")
		plan := restest.RunHCL(t, testTypes, iptPurgeBundle, true)
		restest.WantCounts(t, plan, 1, 0)
		if d := plan.Results[0].Diff; !strings.Contains(d, "-A BRINE-IN -p tcp -m tcp --dport 8080 -j ACCEPT") {
			t.Errorf("plan diff does not name the unmanaged rule:\n%s", d)
		}
		restest.WantCounts(t, restest.RunHCL(t, testTypes, iptPurgeBundle, false), 1, 0)
		if got := ipt(t, "iptables", "-S", "BRINE-IN"); got != want4 {
			t.Errorf("ipv4 chain after purge:\n%s\nwant:\n%s", got, want4)
		}
		if got := ipt(t, "ip6tables", "-S", "BRINE-IN"); got != want6 {
			t.Errorf("ipv6 chain after purge:\n%s\nwant:\n%s", got, want6)
		}
		restest.WantCounts(t, restest.RunHCL(t, testTypes, iptPurgeBundle, false), 0, 0)
	})
}

func TestIptablesRefusedRuleLeavesChain(t *testing.T) {
	inNetns(t, func() {
		good := `iptables_chain "BRINE-X" {
  purge = true
  rule { args = "-p tcp --dport 22 -j ACCEPT" }
}`
		restest.WantCounts(t, restest.RunHCL(t, testTypes, good, false), 1, 0)
		before := ipt(t, "iptables", "-S", "BRINE-X")
		bad := `iptables_chain "BRINE-X" {
  purge = true
  rule { args = "-p tcp --dport 23 -j ACCEPT" }
  rule { args = "-p tcp --dprt 24 -j ACCEPT" }
}`
		rep := restest.RunHCL(t, testTypes, bad, false)
		restest.WantCounts(t, rep, 0, 1)
		if e := rep.Results[0].Error; !strings.Contains(e, `unknown option "--dprt"`) || !strings.Contains(e, "left unchanged") {
			t.Errorf("error does not carry iptables' message: %s", e)
		}
		if after := ipt(t, "iptables", "-S", "BRINE-X"); after != before {
			t.Errorf("chain changed by a failed apply:\n%s\nwas:\n%s", after, before)
		}
		rule := `iptables_rule "bad" {
  chain = "BRINE-X"
  rule  = "-p tcp --dport 99999 -j ACCEPT"
}`
		rep = restest.RunHCL(t, testTypes, rule, false)
		restest.WantCounts(t, rep, 0, 1)
		if e := rep.Results[0].Error; !strings.Contains(e, "99999") {
			t.Errorf("error does not carry iptables' message: %s", e)
		}
	})
}

func TestIptablesRulePositionAndAbsent(t *testing.T) {
	inNetns(t, func() {
		ipt(t, "iptables", "-N", "BRINE-R")
		ipt(t, "iptables", "-A", "BRINE-R", "-p", "udp", "-j", "ACCEPT")
		ipt(t, "iptables", "-A", "BRINE-R", "-p", "tcp", "--dport", "25", "-j", "DROP")
		src := `
iptables_rule "first" {
  chain    = "BRINE-R"
  rule     = "--protocol tcp --destination-port 22 --jump ACCEPT"
  position = 1
}
iptables_rule "smtp" {
  chain = "BRINE-R"
  rule  = "-p tcp --dport 25 -j DROP"
  state = "absent"
}
iptables_rule "last" {
  chain    = "BRINE-R"
  rule     = "-m comment --comment \"the end\" -j RETURN"
  position = 99
}`
		restest.WantCounts(t, restest.RunHCL(t, testTypes, src, false), 3, 0)
		want := "-N BRINE-R\n-A BRINE-R -p tcp -m tcp --dport 22 -j ACCEPT\n-A BRINE-R -p udp -j ACCEPT\n-A BRINE-R -m comment --comment \"the end\" -j RETURN\n"
		if got := ipt(t, "iptables", "-S", "BRINE-R"); got != want {
			t.Fatalf("chain:\n%s\nwant:\n%s", got, want)
		}
		restest.WantCounts(t, restest.RunHCL(t, testTypes, src, false), 0, 0)
		// Moved away from its position: put back.
		ipt(t, "iptables", "-D", "BRINE-R", "1")
		ipt(t, "iptables", "-A", "BRINE-R", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
		restest.WantCounts(t, restest.RunHCL(t, testTypes, src, false), 1, 0)
		if got := ipt(t, "iptables", "-S", "BRINE-R"); got != want {
			t.Fatalf("chain after move:\n%s\nwant:\n%s", got, want)
		}
	})
}

// TestIptablesNoChangeForks counts the iptables processes of a no-change run through a wrapper
// first in PATH: the chain is read once, never once per rule.
func TestIptablesNoChangeForks(t *testing.T) {
	inNetns(t, func() {
		var b strings.Builder
		b.WriteString("iptables_chain \"filter/BRINE-BIG\" {\n  purge = true\n")
		for i := range 50 {
			b.WriteString("  rule { args = \"-p tcp --dport " + strconv.Itoa(1000+i) + " -j ACCEPT\" }\n")
		}
		b.WriteString("}\n")
		restest.WantCounts(t, restest.RunHCL(t, testTypes, b.String(), false), 1, 0)

		dir := t.TempDir()
		log := filepath.Join(dir, "calls")
		for _, bin := range []string{"iptables", "ip6tables", "iptables-restore", "ip6tables-restore"} {
			real, _ := exec.LookPath(bin)
			script := "#!/bin/sh\necho \"$0 $*\" >> " + log + "\nexec " + real + " \"$@\"\n"
			if err := os.WriteFile(filepath.Join(dir, bin), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
		restest.WantCounts(t, restest.RunHCL(t, testTypes, b.String(), false), 0, 0)
		calls, _ := os.ReadFile(log)
		lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
		if len(lines) > 2 {
			t.Errorf("a no-change run of 50 rules ran %d iptables processes, want <= 2 (version, -S):\n%s", len(lines), calls)
		}
	})
}

func TestIptablesDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`iptables_chain "BRINE-X" { policy = "DROP" }`, "Policy on a custom chain"},
		{"iptables_chain \"filter/BRINE-X\" {\n purge = true\n}\niptables_rule \"x\" {\n chain = \"BRINE-X\"\n rule = \"-j ACCEPT\"\n}", "which iptables_chain[\"filter/BRINE-X\"] purges"},
		{`iptables_chain "filter/INPUT" { policy = "REJECT" }`, "Invalid policy"},
		{`iptables_chain "filtr/INPUT" { }`, `Did you mean "filter"?`},
		{`iptables_chain "INPUT" { state = "absent" }`, "built-in chain cannot be absent"},
		{`iptables_rule "x" {
 chain = "INPUT"
 rule = "-A INPUT -j ACCEPT"
}`, "give only the match and target"},
		{`iptables_rule "x" {
 chain = "INPUT"
 rule = "-j ACCEPT"
 family = "ipv5"
}`, `family = "ipv5" is not valid`},
		{`iptables_rule "x" {
 chain = "INPUT"
 rule = "-j ACCEPT"
 postion = 1
}`, "Did you mean"},
	} {
		b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(tc.src)}}
		_, diags := restest.Compile(b, testTypes, states.Options{})
		if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%s: diagnostics %q, want one containing %q", tc.src, diags.Error(), tc.want)
		}
	}
}

// TestIptablesInTestbed drives the same bundle through `brine local apply` in a testbed host.
func TestIptablesInTestbed(t *testing.T) {
	n := restest.NewNetCluster(t, "a")
	restest.WantCounts(t, n.Apply("a", iptPurgeBundle), 3, 0)
	want4 := n.Sh("a", "iptables -S BRINE-IN")
	want6 := n.Sh("a", "ip6tables -S BRINE-IN")
	if !strings.Contains(want6, "-A BRINE-IN -s fd00::1/128 -p tcp -m tcp --dport 443 -j ACCEPT") {
		t.Fatalf("ipv6 chain:\n%s", want6)
	}
	restest.WantCounts(t, n.Apply("a", iptPurgeBundle), 0, 0)
	n.Sh("a", "iptables -I BRINE-IN 1 -p tcp --dport 8080 -j ACCEPT && iptables -D BRINE-IN -j DROP && iptables -I BRINE-IN 2 -j DROP && ip6tables -D BRINE-IN -i lo -j ACCEPT")
	restest.WantCounts(t, n.Apply("a", iptPurgeBundle), 1, 0)
	if got := n.Sh("a", "iptables -S BRINE-IN"); got != want4 {
		t.Errorf("ipv4 chain after purge:\n%s\nwant:\n%s", got, want4)
	}
	if got := n.Sh("a", "ip6tables -S BRINE-IN"); got != want6 {
		t.Errorf("ipv6 chain after purge:\n%s\nwant:\n%s", got, want6)
	}
	restest.WantCounts(t, n.Apply("a", iptPurgeBundle), 0, 0)
}

// TestIptablesScratchNormalisation: a rule the fast path cannot guess (icmp type names, recent's
// defaults) is normalised by iptables in a scratch chain, is no change on the next run, and the
// scratch chain is gone afterwards.
func TestIptablesScratchNormalisation(t *testing.T) {
	inNetns(t, func() {
		src := `iptables_chain "BRINE-S" {
  purge = true
  rule { args = "-p icmp --icmp-type echo-request -j ACCEPT" }
  rule { args = "-p tcp --dport 22 -m conntrack --ctstate NEW -m recent --set" }
}`
		restest.WantCounts(t, restest.RunHCL(t, testTypes, src, false), 1, 0)
		restest.WantCounts(t, restest.RunHCL(t, testTypes, src, false), 0, 0)
		if all := ipt(t, "iptables", "-S"); strings.Contains(all, "BRINE-NORM") {
			t.Errorf("scratch chain left behind:\n%s", all)
		}
		if got := ipt(t, "iptables", "-S", "BRINE-S"); !strings.Contains(got, "--icmp-type 8") {
			t.Errorf("chain:\n%s", got)
		}
	})
}

// TestIptablesPlanLeavesTables: normalising a rule the fast path cannot guess runs iptables-restore
// only in a private network namespace, never against the host's tables, during a plan.
func TestIptablesPlanLeavesTables(t *testing.T) {
	inNetns(t, func() {
		dir := t.TempDir()
		log := filepath.Join(dir, "calls")
		for _, bin := range []string{"iptables", "ip6tables", "iptables-restore", "ip6tables-restore"} {
			real, _ := exec.LookPath(bin)
			script := "#!/bin/sh\necho \"$(readlink /proc/self/ns/net) $(basename $0) $*\" >> " + log + "\nexec " + real + " \"$@\"\n"
			if err := os.WriteFile(filepath.Join(dir, bin), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
		self, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		src := `iptables_chain "BRINE-P" {
  purge = true
  rule { args = "-p icmp --icmp-type echo-request -j ACCEPT" }
}`
		restest.WantCounts(t, restest.RunHCL(t, testTypes, src, true), 1, 0)
		calls, _ := os.ReadFile(log)
		var restores int
		for _, l := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
			if strings.Contains(l, "-restore") {
				restores++
				if strings.HasPrefix(l, self+" ") {
					t.Errorf("plan ran iptables-restore on the host's tables: %s", l)
				}
			}
		}
		if restores == 0 {
			t.Errorf("the rule was not normalised by iptables at all:\n%s", calls)
		}
		if out := ipt(t, "iptables", "-S"); strings.Contains(out, "BRINE-") {
			t.Errorf("plan changed the tables:\n%s", out)
		}
	})
}
