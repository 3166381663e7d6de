package capture

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSecretReason(t *testing.T) {
	for p, want := range map[string]bool{
		"/etc/nginx/site.key":               true,
		"/etc/tinc/mesh/rsa_key.priv":       true,
		"/etc/ssh/ssh_host_ed25519_key":     true,
		"/etc/ssh/ssh_host_ed25519_key.pub": false,
		"/etc/ssl/private/anything":         true,
		"/etc/app/store.p12":                true,
		"/etc/nginx/nginx.conf":             false,
	} {
		if got := secretReason(p, []byte("plain text\n")) != ""; got != want {
			t.Errorf("%s: secret %t, want %t", p, got, want)
		}
	}
	for _, content := range []string{fixtureKey, "-----BEGIN OPENSSH PRIVATE KEY-----\n", "-----BEGIN PGP PRIVATE KEY BLOCK-----", "PuTTY-User-Key-File-3: ssh-ed25519"} {
		if secretReason("/etc/app/x.conf", []byte("a = 1\n"+content)) == "" {
			t.Errorf("%q not recognised as a private key", content)
		}
	}
}

func TestExcluded(t *testing.T) {
	for _, tc := range []struct {
		p    string
		dir  bool
		want bool
	}{
		{"/etc/machine-id", false, true},
		{"/etc/ssh/ssh_host_rsa_key", false, true},
		{"/etc/alternatives", true, true},
		{"/etc/rc2.d", true, true},
		{"/etc/systemd/system/multi-user.target.wants", true, true},
		{"/etc/nginx/nginx.conf.dpkg-old", false, true},
		{"/etc/nginx/nginx.conf", false, false},
		{"/etc/alternatives", false, false}, // a file named so: only directories match "dir/"
	} {
		if got := excluded(tc.p, tc.dir, DefaultExcludes); got != tc.want {
			t.Errorf("excluded(%s, dir=%t) = %t, want %t", tc.p, tc.dir, got, tc.want)
		}
	}
}

func TestUfwRulesMerge(t *testing.T) {
	st := &ufwState{ipv6: true,
		rules4: []string{"allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in", "allow tcp 5432 0.0.0.0/0 any 10.9.0.0/16 in comment=6462", "deny any any 0.0.0.0/0 any 0.0.0.0/0 out_eth1", "allow-app any any 0.0.0.0/0 any 0.0.0.0/0 in"},
		rules6: []string{"allow tcp 22 ::/0 any ::/0 in", "allow tcp 443 ::/0 any 2001:db8::/32 in", "deny any any ::/0 any ::/0 out_eth1"},
	}
	rules, skipped := ufwRules(st)
	var got []string
	for _, r := range rules {
		got = append(got, r.action+" "+r.port+" "+r.from+" "+r.direction+" "+r.iface+" "+r.comment)
	}
	// Any interleaving that keeps each family's order declares the same two files; the merge
	// takes a family's own rules as soon as they come.
	want := []string{"allow 22 any in  ", "allow 443 2001:db8::/32 in  ", "allow 5432 10.9.0.0/16 in  db", "deny any any out eth1 "}
	if !slices.Equal(got, want) {
		t.Errorf("merged rules:\n%q\nwant\n%q", got, want)
	}
	if len(skipped) != 1 {
		t.Errorf("skipped %q, want the application rule", skipped)
	}
}

func TestParseServices(t *testing.T) {
	enabled := "nginx.service enabled enabled\ngetty@.service enabled enabled\nsystemd-timesyncd.service enabled enabled\ncron.service enabled enabled\n"
	running := "nginx.service loaded active running A high performance web server\nmyapp.service loaded active running My app\ndbus.service loaded active running D-Bus\n"
	got := parseServices(enabled, running)
	want := []service{{"cron", true, false}, {"myapp", false, true}, {"nginx", true, true}}
	if !slices.Equal(got, want) {
		t.Errorf("services %+v, want %+v", got, want)
	}
}

func TestParseIptablesSave(t *testing.T) {
	out := "# Generated\n*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:APP - [0:0]\n-A INPUT -j APP\n-A APP -m comment --comment \"two words\" -j ACCEPT\nCOMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
	tabs := parseIptablesSave(out)
	f := tabs["filter"]
	if f == nil || f.policy["INPUT"] != "DROP" || f.policy["APP"] != "" || !slices.Equal(f.chains, []string{"INPUT", "FORWARD", "APP"}) {
		t.Fatalf("filter: %+v", f)
	}
	if !slices.Equal(f.rules["APP"], []string{`-m comment --comment "two words" -j ACCEPT`}) || jumpTarget(f.rules["INPUT"][0]) != "APP" {
		t.Errorf("rules: %q", f.rules)
	}
	if tabs["nat"] == nil {
		t.Errorf("nat table missing")
	}
}

func TestWriteDirAndKeyGuard(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := &Result{Files: map[string][]byte{"main.hcl": []byte("# x\n")}}
	if err := r.WriteDir(dir); err == nil {
		t.Errorf("WriteDir into a non-empty directory succeeded")
	}
	out := filepath.Join(t.TempDir(), "new")
	if err := r.WriteDir(out); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("capture directory: %v %v, want mode 0700", st.Mode(), err)
	}
	if err := (&Result{Files: map[string][]byte{"../escape": nil}}).WriteDir(filepath.Join(t.TempDir(), "e")); err == nil {
		t.Errorf("WriteDir wrote a path outside the directory")
	}
	if err := checkNoKeyMaterial(map[string][]byte{"files/etc/x": []byte(fixtureKey)}); err == nil {
		t.Errorf("a private key block in a capture file passed the guard")
	}
}

// BenchmarkCapture500Packages2000Files captures a host with 500 installed packages, each with
// a conffile, and 1,500 more files under /etc (2,000 in all), as the benchmark asks.
func BenchmarkCapture500Packages2000Files(b *testing.B) {
	root := writeFixture(b, 500, 1500)
	opts := fixtureOptions(root)
	b.ResetTimer()
	for b.Loop() {
		res, err := Capture(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		if res.Summary.Files < 1500 {
			b.Fatalf("captured %d files", res.Summary.Files)
		}
	}
}
