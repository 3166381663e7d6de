package ufw

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

// ---- ufw ----

const ufwBundle = `
ufw {
  default_incoming = "deny"
  default_outgoing = "allow"
  default_routed   = "deny"
  logging          = "low"
  enabled          = true
  rule "ssh" {
    action  = "allow"
    port    = "22"
    proto   = "tcp"
    comment = "operators"
  }
  rule "x11" {
    action = "allow"
    port   = "6000:6007"
    proto  = "tcp"
    from   = "10.99.0.0/16"
  }
  rule "smtp-out" {
    action    = "reject"
    port      = "25"
    proto     = "tcp"
    direction = "out"
  }
  rule "ssh-lo" {
    action    = "limit"
    port      = "2222"
    interface = "lo"
  }
}
`

func TestUfwInTestbed(t *testing.T) {
	n := restest.NewNetCluster(t, "a", "b")
	a, b := n.C.Host("a"), n.C.Host("b")
	restest.ListenIn(t, a, 22)
	restest.ListenIn(t, a, 8080)
	for _, port := range []int{22, 8080} {
		if err := restest.DialFrom(b, fmt.Sprintf("%s:%d", a.Addr(), port), 3*time.Second); err != nil {
			t.Fatalf("before ufw, b cannot reach a:%d: %v", port, err)
		}
	}

	rep := n.Apply("a", ufwBundle)
	restest.WantCounts(t, rep, 1, 0)
	if err := restest.DialFrom(b, a.Addr()+":22", 3*time.Second); err != nil {
		t.Errorf("ufw allows ssh but b cannot reach a:22: %v", err)
	}
	if err := restest.DialFrom(b, a.Addr()+":8080", time.Second); err == nil {
		t.Errorf("ufw denies incoming but b reached a:8080")
	}
	status := n.Sh("a", "ufw status verbose")
	for _, want := range []string{"Status: active", "Logging: on (low)", "Default: deny (incoming), allow (outgoing)",
		"22/tcp                     ALLOW IN    Anywhere                   # operators", "6000:6007/tcp              ALLOW IN    10.99.0.0/16",
		"25/tcp                     REJECT OUT  Anywhere", "2222 on lo                 LIMIT IN    Anywhere"} {
		if !strings.Contains(status, want) {
			t.Errorf("ufw status lacks %q:\n%s", want, status)
		}
	}

	// Routed shows as "disabled" while the host does not forward; the policy is in the file.
	if d := n.Sh("a", "cat /etc/default/ufw"); !strings.Contains(d, `DEFAULT_FORWARD_POLICY="DROP"`) {
		t.Errorf("routed policy not set:\n%s", d)
	}

	// The second apply changes nothing and touches none of ufw's files.
	before := restest.Mtimes(t, a, "/etc/ufw", "/lib/ufw", "/etc/default/ufw")
	time.Sleep(20 * time.Millisecond)
	rep = n.Apply("a", ufwBundle)
	restest.WantCounts(t, rep, 0, 0)
	after := restest.Mtimes(t, a, "/etc/ufw", "/lib/ufw", "/etc/default/ufw")
	if len(before) == 0 || fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("a no-change apply touched ufw's files:\nbefore %v\nafter  %v", before, after)
	}

	// A rule added by hand is removed, a changed rule replaced, order kept.
	n.Sh("a", "ufw allow 9999/udp && ufw delete allow 6000:6007/tcp >/dev/null 2>&1; ufw allow from 10.99.0.0/16 to any port 6000:6007 proto udp")
	rep = n.Apply("a", ufwBundle)
	restest.WantCounts(t, rep, 1, 0)
	restest.WantCounts(t, n.Apply("a", ufwBundle), 0, 0)
	if s := n.Sh("a", "ufw status"); strings.Contains(s, "9999") || strings.Contains(s, "6000:6007/udp") {
		t.Errorf("undeclared rules survived:\n%s", s)
	}
}

func TestUfwLockoutGuard(t *testing.T) {
	n := restest.NewNetCluster(t, "a")
	n.Sh("a", "mkdir -p /etc/ssh/sshd_config.d && echo 'Port 2200' > /etc/ssh/sshd_config.d/brine-test.conf")
	noSSH := `
ufw {
  default_incoming = "deny"
  enabled          = true
  rule "web" {
    port  = "22"
    proto = "tcp"
  }
}
`
	plan, code, _ := n.Run("a", "plan", map[string]string{"main.hcl": noSSH})
	if r := restest.Result(t, plan, "ufw"); !strings.Contains(r.Diff, "WARNING") || !strings.Contains(r.Diff, "2200") {
		t.Errorf("plan (exit %d) does not warn about port 2200:\n%s", code, r.Diff)
	}
	rep := n.Apply("a", noSSH)
	r := restest.Result(t, rep, "ufw")
	if r.Status != states.StatusFailed || !strings.Contains(r.Error, "refusing") || !strings.Contains(r.Error, "allow_lockout") {
		t.Fatalf("apply of a bundle that locks out sshd: %s %s", r.Status, r.Error)
	}
	if s := n.Sh("a", "ufw status"); !strings.Contains(s, "inactive") {
		t.Errorf("the refused apply changed ufw:\n%s", s)
	}
	// Allowing sshd's port is enough; so is saying the lockout is intended.
	withSSH := strings.Replace(noSSH, `port  = "22"`, `port  = "2200"`, 1)
	restest.WantCounts(t, n.Apply("a", withSSH), 1, 0)
	intended := strings.Replace(noSSH, `enabled          = true`, "enabled = true\n  allow_lockout = true", 1)
	restest.WantCounts(t, n.Apply("a", intended), 1, 0)
}

func TestUfwDecode(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`ufw { default_incoming = "drop" }`, `default_incoming = "drop" is not valid`},
		{"ufw {\n rule \"x\" {\n port = \"1:2\"\n }\n}", "needs proto"},
		{"ufw {\n rule \"x\" {\n action = \"permit\"\n }\n}", "use allow, deny, reject or limit"},
		{"ufw {\n rule \"x\" {\n from = \"10.0.0.1\"\n to = \"::1\"\n }\n}", "Mixed address families"},
		{"ufw {\n rule \"x\" {\n prot = \"tcp\"\n }\n}", "Did you mean"},
		{"ufw {\n deny \"x\" {\n action = \"allow\"\n }\n}", "Conflicting ufw rule action"},
	} {
		b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(tc.src)}}
		_, diags := restest.Compile(b, testTypes, states.Options{})
		if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%s: diagnostics %q, want one containing %q", tc.src, diags.Error(), tc.want)
		}
	}
	// Shorthand blocks keep their place among rule blocks.
	b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(`ufw {
  allow "ssh" {
    port  = 22
    proto = "tcp"
  }
  rule "x" {
    action = "deny"
    port   = "23"
  }
  limit "y" {
    port = "2222"
  }
}`)}}
	g, diags := restest.Compile(b, testTypes, states.Options{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var got []string
	for _, u := range g.Resources()[0].(*ufwRes).rules {
		got = append(got, u.name+"="+u.action+":"+u.port)
	}
	if strings.Join(got, " ") != "ssh=allow:22 x=deny:23 y=limit:2222" {
		t.Errorf("rules in order: %v", got)
	}
	u, _, _ := decodeUfwRule(ufwRuleBlock{Name: "n", Port: "22", Proto: "tcp", From: "10.1.2.3/8", Comment: "hi"}, nil, nil)
	if got, want := u.tuple(false), "allow tcp 22 0.0.0.0/0 any 10.0.0.0/8 in comment=6869"; got != want || u.v6 {
		t.Errorf("tuple = %q (v6 %t); want %q, v4 only", got, u.v6, want)
	}
}

// ufw refuses quotes in comments with its usage text; the bundle says so first, with a position.
func TestUfwCommentWithQuoteIsABundleError(t *testing.T) {
	b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(`ufw {
  rule "tinc" {
    port    = "655"
    comment = "the mesh's transport"
  }
}`)}}
	_, diags := restest.Compile(b, testTypes, states.Options{})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "Invalid comment") {
		t.Fatalf("a quote in a comment was accepted: %v", diags)
	}
}

func TestReadableTuple(t *testing.T) {
	got := readableTuple("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=" + hex.EncodeToString([]byte("operators")))
	if got != `allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment="operators"` {
		t.Fatal(got)
	}
	if got := readableTuple("allow any 655 0.0.0.0/0 any 0.0.0.0/0 in"); got != "allow any 655 0.0.0.0/0 any 0.0.0.0/0 in" {
		t.Fatal(got)
	}
}

// ufw blocks of several bundles merge into one firewall; a conflicting setting or a different
// rule under the same name is an error naming both blocks.
func TestUfwBlocksMerge(t *testing.T) {
	tree, _ := restest.WriteTree(t, map[string]string{
		"base/fw.hcl": `ufw {
  default_incoming = "deny"
  allow "ssh" {
    port  = "22"
    proto = "tcp"
  }
}`,
		"web/fw.hcl": `ufw {
  allow "http" {
    port  = "80"
    proto = "tcp"
  }
  allow "ssh-again" {
    port  = "22"
    proto = "tcp"
  }
}`,
		"db/fw.hcl": `ufw {
  default_incoming = "allow"
  allow "ssh" {
    port  = "2222"
    proto = "tcp"
  }
}`,
	})
	m, _ := states.MergeBundles(tree, []string{"base", "web"})
	g, diags := restest.Compile(m, testTypes, states.Options{Minion: states.Minion{ID: "m1"}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if g.Len() != 1 {
		t.Fatalf("want one ufw resource, got %v", g.Addresses())
	}
	u := g.Resources()[0].(*ufwRes)
	var names []string
	for _, r := range u.rules {
		names = append(names, r.name)
	}
	if strings.Join(names, ",") != "ssh,http" || u.defaults["incoming"] != "deny" {
		t.Fatalf("merged ufw: rules %v, defaults %v", names, u.defaults)
	}
	m, _ = states.MergeBundles(tree, []string{"base", "db"})
	_, diags = restest.Compile(m, testTypes, states.Options{Minion: states.Minion{ID: "m1"}})
	text := restest.AllDiags(diags)
	for _, want := range []string{"default_incoming is allow here and deny at", "A different rule named \"ssh\""} {
		if !strings.Contains(text, want) {
			t.Fatalf("diagnostics lack %q: %s", want, text)
		}
	}
}
