package capture

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
	"github.com/brinecm/brine/states/resources/restest"
)

const fixtureKey = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIGFrZWtleWZvcnRlc3RzMDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1u\n-----END EC PRIVATE KEY-----\n"

// writeFixture makes a fake host root: a dpkg database with nPkgs packages, each shipping a
// conffile (pkg0's changed on disk, pkg1 installed as a dependency), nUnowned files no package
// owns, and one file of each kind a capture must recognise.
func writeFixture(t testing.TB, nPkgs, nUnowned int) string {
	t.Helper()
	root := t.TempDir()
	put := func(p, content string, mode os.FileMode) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	var status, auto strings.Builder
	shippedTemplate := "# a template a postinst copies to /etc\nkey = value\n"
	for i := 0; i < nPkgs; i++ {
		name := fmt.Sprintf("pkg%d", i)
		conf := fmt.Sprintf("/etc/%s/%s.conf", name, name)
		shipped := fmt.Sprintf("# %s as shipped\nport = %d\n", name, 1000+i)
		fmt.Fprintf(&status, "Package: %s\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.%d-1\nConffiles:\n %s %s\nDescription: test\n\n", name, i, conf, md5Hex([]byte(shipped)))
		onDisk := shipped
		if i == 0 {
			onDisk += "port = 9999\n"
		}
		put(conf, onDisk, 0o644)
		put("var/lib/dpkg/info/"+name+".list", "/etc\n/etc/"+name+"\n"+conf+"\n/usr/share/"+name+"/template.conf\n", 0o644)
		put("var/lib/dpkg/info/"+name+".md5sums", md5Hex([]byte(shippedTemplate))+"  usr/share/"+name+"/template.conf\n", 0o644)
	}
	fmt.Fprintf(&status, "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n")
	fmt.Fprintf(&auto, "Package: pkg1\nArchitecture: amd64\nAuto-Installed: 1\n\n")
	put("var/lib/dpkg/status", status.String(), 0o644)
	put("var/lib/apt/extended_states", auto.String(), 0o644)
	put("var/lib/dpkg/arch-native", "amd64\n", 0o644)
	for i := 0; i < nUnowned; i++ {
		put(fmt.Sprintf("etc/custom/d%d/f%d.conf", i%20, i), fmt.Sprintf("setting %d\n", i), 0o644)
	}
	put("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nsvc:x:120:120::/nonexistent:/usr/sbin/nologin\nalice:x:1001:1001:Alice:/home/alice:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n", 0o644)
	put("etc/group", "root:x:0:\nadm:x:4:alice\nsvc:x:120:\nalice:x:1001:\nnogroup:x:65534:\n", 0o644)
	put("etc/copied.conf", shippedTemplate, 0o644)
	put("etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
	put("etc/big.bin", strings.Repeat("x", 300<<10), 0o644)
	put("etc/ssl/private/site", "site-secret-xyz\n", 0o600)
	put("etc/app/tls.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"+fixtureKey, 0o640)
	put("etc/app/server.key", "not even PEM\n", 0o600)
	put("etc/app/app.conf.dpkg-old", "old\n", 0o644)
	put("etc/hosts", "127.0.0.1 localhost\n10.0.0.5 web01.example.com web01\n", 0o644)
	put("etc/app/peers", "peer 10.0.0.55\npeer 10.0.0.5:80\nweb010 is another host\n${x} %{y}\n", 0o644)
	put("etc/.hidden.conf", "hidden = yes\n", 0o644)
	put("etc/app/run.sh", "#!/bin/sh\n", 0o755)
	if err := os.Chmod(filepath.Join(root, "etc/app/run.sh"), 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/app/app.conf", filepath.Join(root, "etc/app/current")); err != nil {
		t.Fatal(err)
	}
	return root
}

func fixtureOptions(root string) Options {
	return Options{Root: root, Hostname: "web01", NoFirewall: true, NoServices: true,
		Interfaces: []Interface{{Name: "eth0", Physical: true, IPv4: []string{"10.0.0.5"}}}}
}

func TestCaptureFixture(t *testing.T) {
	root := writeFixture(t, 3, 5)
	res, err := Capture(context.Background(), fixtureOptions(root))
	if err != nil {
		t.Fatal(err)
	}
	f := res.Files
	has := func(file, want string) {
		t.Helper()
		if !bytes.Contains(f[file], []byte(want)) {
			t.Errorf("%s lacks %q:\n%s", file, want, f[file])
		}
	}
	hasNot := func(file, unwanted string) {
		t.Helper()
		if bytes.Contains(f[file], []byte(unwanted)) {
			t.Errorf("%s has %q:\n%s", file, unwanted, f[file])
		}
	}
	has("packages.hcl", `"pkg0" = "1.0-1"`)
	has("packages.hcl", `"pkg2" = "1.2-1"`)
	hasNot("packages.hcl", `"pkg1"`) // a dependency
	hasNot("packages.hcl", `"gone"`) // only its configuration files are left
	has("files.hcl", `file "/etc/pkg0/pkg0.conf"`)
	has("files.hcl", `depends_on = [package["pkg0"]]`)
	has("files.hcl", "changed conffile of pkg0")
	for _, p := range []string{"/etc/pkg2/pkg2.conf", "/etc/copied.conf", "/etc/machine-id", "/etc/big.bin", "dpkg-old", "/etc/passwd", "/etc/group"} {
		hasNot("files.hcl", p)
	}
	has("files.hcl", `file "/etc/custom/d4/f4.conf"`)
	has("files.hcl", `source = "files/etc/%2ehidden.conf"`)
	has("files.hcl", `mode   = "4755"`)
	has("files.hcl", `exec "link:/etc/app/current"`)
	if got := string(f["files/etc/hosts.tmpl"]); got != "127.0.0.1 localhost\n${ipv4_eth0} ${hostname}.example.com ${hostname}\n" {
		t.Errorf("hosts template:\n%s", got)
	}
	if got := string(f["files/etc/app/peers.tmpl"]); got != "peer 10.0.0.55\npeer ${ipv4_eth0}:80\nweb010 is another host\n$${x} %%{y}\n" {
		t.Errorf("peers template:\n%s", got)
	}
	for _, p := range []string{"/etc/ssl/private/site", "/etc/app/tls.pem", "/etc/app/server.key"} {
		has("secrets.hcl", fmt.Sprintf("content = secret(%q)", p))
	}
	has("users.hcl", `useradd -u 1001 -g 'alice' -G 'adm' -d '/home/alice' -s '/bin/bash' -c 'Alice' -M 'alice'`)
	has("users.hcl", `exec "group:alice"`)
	hasNot("users.hcl", "svc")
	hasNot("users.hcl", "nobody")
	has("README.md", "/etc/big.bin: 307200 bytes, over the size cap")
	for name, b := range f {
		if bytes.Contains(b, []byte("MHcCAQEEIGFrZWtleW")) || bytes.Contains(b, []byte("not even PEM")) || bytes.Contains(b, []byte("site-secret-xyz")) {
			t.Errorf("%s holds secret bytes", name)
		}
	}

	// The bundle is one the states language accepts, and it is deterministic.
	b := &states.Bundle{Files: f}
	opts := states.Options{Secrets: map[string]string{"/etc/ssl/private/site": "a", "/etc/app/tls.pem": "b", "/etc/app/server.key": "c"},
		Minion: states.Minion{ID: "web02", Facts: map[string]any{"hostname": "web02", "interfaces": map[string]any{"eth0": map[string]any{"ipv4": []any{"10.0.0.9"}}}}}}
	if _, diags := restest.Compile(b, builtin.Types(), opts); diags.HasErrors() {
		t.Fatalf("the capture does not compile: %s", diags.Error())
	}
	again, err := Capture(context.Background(), fixtureOptions(root))
	if err != nil {
		t.Fatal(err)
	}
	for name := range f {
		if !bytes.Equal(f[name], again.Files[name]) {
			t.Errorf("%s differs between two captures of the same host", name)
		}
	}
	if len(again.Files) != len(f) {
		t.Errorf("two captures have %d and %d files", len(f), len(again.Files))
	}
}
