package capture_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/brinecm/brine/capture"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/testbed"
)

// rtHost runs commands and brine in one testbed host.
type rtHost struct {
	t *testing.T
	h *testbed.Host
}

func (r rtHost) sh(script string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, code, err := r.h.Sh(ctx, script)
	if err != nil || code != 0 {
		r.t.Fatalf("%s: %q: exit %d %v\n%s", r.h.Name(), script, code, err, out)
	}
	return out
}

// brine runs `brine ARGS` in the host and returns stdout, failing the test on a non-zero exit.
func (r rtHost) brine(args ...string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, stderr, code, err := r.h.Run(ctx, append([]string{testbed.HostSharedDir + "/brine"}, args...)...)
	if err != nil || code != 0 {
		r.t.Fatalf("%s: brine %s: exit %d %v\nstdout: %s\nstderr: %s", r.h.Name(), strings.Join(args, " "), code, err, out, stderr)
	}
	return out
}

// report runs brine local plan|apply --json and decodes the report.
func (r rtHost) report(verb, secrets, dir string) *states.Report {
	r.t.Helper()
	out := r.brine("local", verb, "--json", "--secrets-file", secrets, dir)
	var rep states.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		r.t.Fatalf("%s: brine local %s: not a report: %v\n%s", r.h.Name(), verb, err, out)
	}
	return &rep
}

func noChanges(t *testing.T, what string, rep *states.Report) {
	t.Helper()
	var bad []string
	for _, res := range rep.Results {
		if res.Status == states.StatusChanged || res.Status == states.StatusFailed || res.Status == states.StatusSkipped {
			bad = append(bad, fmt.Sprintf("%s %s: %s %s", res.Address, res.Status, res.Diff, res.Error))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%s: want no changes, got:\n%s", what, strings.Join(bad, "\n"))
	}
}

// readTree reads every regular file under dir by relative path.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// fakeKey is a PEM private key block with random content, so that the test can look for its
// bytes anywhere.
func fakeKey(t *testing.T, kind string) (pemText, body string) {
	t.Helper()
	raw := make([]byte, 600)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	body = base64.StdEncoding.EncodeToString(raw)
	var lines []string
	for s := body; len(s) > 0; {
		n := min(64, len(s))
		lines = append(lines, s[:n])
		s = s[n:]
	}
	return "-----BEGIN " + kind + "-----\n" + strings.Join(lines, "\n") + "\n-----END " + kind + "-----\n", body
}

var (
	descriptionRE = regexp.MustCompile(`(?m)^\s*description\s*=.*\n`)
	spaces        = regexp.MustCompile(` +`)
)

// TestCaptureRoundTrip sets up a "legacy" host by hand (packages from the test repository, a
// changed conffile, unowned files with the host's name and address, a symlink, private keys,
// a tinc network's files, iptables chains, ufw, a user), captures it, and checks the round trip:
// the capture plans to no changes on its host; applied to a fresh host it converges; and a
// capture of that host is the same bundle up to the values of its variables. No byte of the
// private keys is in any file of either capture.
func TestCaptureRoundTrip(t *testing.T) {
	if err := testbed.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	for _, tool := range []string{"ufw", "iptables-save", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			testbed.SkipUnavailable(t, fmt.Sprintf("needs %s: %v", tool, err))
		}
	}
	c := testbed.NewT(t, "srcvm", "dstvm")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.EnableApt(ctx, ""); err != nil {
		t.Fatal(err)
	}
	testbed.InstallBrine(t, c.SharedDir())
	src, dst := rtHost{t, c.Host("srcvm")}, rtHost{t, c.Host("dstvm")}
	tlsKey, tlsBody := fakeKey(t, "PRIVATE KEY")
	tincKey, tincBody := fakeKey(t, "RSA PRIVATE KEY")
	shared := func(p string) string { return filepath.Join(c.SharedDir(), p) }
	inHost := func(p string) string { return testbed.HostSharedDir + "/" + p }
	for name, content := range map[string]string{"tls.pem": tlsKey, "rsa_key.priv": tincKey} {
		if err := os.WriteFile(shared(name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The legacy host, set up by hand.
	addr := src.h.Addr()
	src.sh(`set -e
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q brine-conf brine-hello=1.0 brine-app-dep >/dev/null
echo 'workers = 8' >> /etc/brine-conf/brine-conf.conf
mkdir -p /etc/legacy /etc/tinc/mesh/hosts
printf 'server_name srcvm;\nlisten ` + addr + `:8080;\nupstream ${backend} 100%%{x};\n' > /etc/legacy/app.conf
ln -s /etc/legacy/app.conf /etc/legacy/current.conf
install -m 0640 ` + inHost("tls.pem") + ` /etc/legacy/tls.pem
printf 'Name = srcvm\nInterface = tinc-mesh\nAddressFamily = ipv4\nPort = 655\n' > /etc/tinc/mesh/tinc.conf
printf 'Address = ` + addr + `\nSubnet = 10.8.0.1/32\n' > /etc/tinc/mesh/hosts/srcvm
printf '#!/bin/sh\nip link set "$INTERFACE" up\nip addr replace 10.8.0.1/24 dev "$INTERFACE"\n' > /etc/tinc/mesh/tinc-up
chmod 0755 /etc/tinc/mesh/tinc-up
install -m 0600 ` + inHost("rsa_key.priv") + ` /etc/tinc/mesh/rsa_key.priv
groupadd -g 1500 devs
useradd -u 1500 -g devs -G adm -m -d /home/alice -s /bin/sh -c 'Alice Admin' alice
ufw --force reset >/dev/null
ufw default deny incoming >/dev/null
ufw allow 22/tcp >/dev/null
ufw allow from 10.9.0.0/16 to any port 5432 proto tcp comment 'db clients' >/dev/null
ufw --force enable >/dev/null
iptables -N LEGACY-IN
iptables -A LEGACY-IN -s 10.9.0.0/16 -p tcp --dport 8080 -m comment --comment "app clients" -j ACCEPT
iptables -A LEGACY-IN -d ` + addr + `/32 -p tcp --dport 9090 -j ACCEPT
iptables -A INPUT -j LEGACY-IN
iptables -t nat -A POSTROUTING -s 10.8.0.0/24 -j MASQUERADE
ip6tables -N LEGACY-IN
ip6tables -A LEGACY-IN -p tcp --dport 8080 -j ACCEPT
`)

	// Capture it.
	out := src.brine("local", "capture", "--json", "--out", inHost("cap-src"))
	var sum capture.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("capture summary: %v\n%s", err, out)
	}
	capSrc := readTree(t, shared("cap-src"))
	size := 0
	for _, b := range capSrc {
		size += len(b)
	}
	t.Logf("capture of srcvm: %s, %d files, %d bytes; %d packages, %d files (%d templates), %d links, %d secrets, %d users, %d chains, %d ufw rules, %d notes",
		sum.DurationNS.Round(time.Millisecond), len(capSrc), size, sum.Packages, sum.Files, sum.Templates, sum.Links, len(sum.Secrets), sum.Users, sum.Chains, sum.UfwRules, len(sum.Notes))

	// No key material anywhere; secret() references instead.
	for name, b := range capSrc {
		for _, needle := range []string{tlsBody[:40], tincBody[:40], "PRIVATE KEY-----"} {
			if bytes.Contains(b, []byte(needle)) {
				t.Fatalf("capture file %s holds private key material %q", name, needle)
			}
		}
	}
	for _, want := range []string{`secret("/etc/legacy/tls.pem")`, `secret("/etc/tinc/mesh/rsa_key.priv")`} {
		if !bytes.Contains(capSrc["secrets.hcl"], []byte(want)) {
			t.Fatalf("secrets.hcl lacks %s:\n%s", want, capSrc["secrets.hcl"])
		}
	}
	// What the host was set up with is there, host values as variables.
	for file, wants := range map[string][]string{
		"packages.hcl":                   {`"brine-conf"    = "1.0"`, `"brine-hello"   = "1.0"`, `"brine-app-dep" = "1.0"`},
		"files.hcl":                      {`file "/etc/brine-conf/brine-conf.conf"`, `depends_on = [package["brine-conf"]]`, `template = "files/etc/legacy/app.conf.tmpl"`, `exec "link:/etc/legacy/current.conf"`, `file "/etc/tinc/mesh/tinc-up"`, `mode  = "0755"`},
		"firewall.hcl":                   {`iptables_chain "filter/LEGACY-IN"`, `"-d ${local.ipv4_eth0}/32 -p tcp -m tcp --dport 9090 -j ACCEPT"`, `iptables_chain "nat/POSTROUTING"`, `port   = "5432"`, `comment = "db clients"`, `enabled = true`},
		"users.hcl":                      {`exec "user:alice"`, `-G 'adm'`, `exec "group:devs"`},
		"variables.hcl":                  {`variable "hostname"`, `variable "ipv4_eth0"`},
		"files/etc/legacy/app.conf.tmpl": {"server_name ${hostname};\nlisten ${ipv4_eth0}:8080;\nupstream $${backend} 100%%{x};\n"},
	} {
		for _, w := range wants {
			if !strings.Contains(spaces.ReplaceAllString(string(capSrc[file]), " "), spaces.ReplaceAllString(w, " ")) {
				t.Errorf("%s lacks %q:\n%s", file, w, capSrc[file])
			}
		}
	}
	if bytes.Contains(capSrc["packages.hcl"], []byte(`"brine-lib"`)) {
		t.Errorf("packages.hcl names brine-lib, which apt installed as a dependency:\n%s", capSrc["packages.hcl"])
	}
	if t.Failed() {
		t.FailNow()
	}

	// The secrets, as an operator would give them (outside the capture).
	var sec bytes.Buffer
	for name, content := range map[string]string{"/etc/legacy/tls.pem": tlsKey, "/etc/tinc/mesh/rsa_key.priv": tincKey} {
		fmt.Fprintf(&sec, "secret %s {\n  value = %s\n}\n", hclwrite.TokensForValue(cty.StringVal(name)).Bytes(), hclwrite.TokensForValue(cty.StringVal(content)).Bytes())
	}
	if err := os.WriteFile(shared("secrets.hcl"), sec.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	// 1. On the host it came from, the capture changes nothing.
	noChanges(t, "plan of the capture on srcvm", src.report("plan", inHost("secrets.hcl"), inHost("cap-src")))

	// 2. Applied to a fresh host it converges.
	rep := dst.report("apply", inHost("secrets.hcl"), inHost("cap-src"))
	if rep.Failed() {
		t.Fatalf("apply of the capture on dstvm failed: %+v", rep.Results)
	}
	t.Logf("apply on dstvm: %v", rep.Counts())
	noChanges(t, "second plan on dstvm", dst.report("plan", inHost("secrets.hcl"), inHost("cap-src")))
	if got := dst.sh("cat /etc/legacy/app.conf"); !strings.Contains(got, "server_name dstvm;\nlisten "+dst.h.Addr()+":8080;") {
		t.Errorf("dstvm's app.conf has not its own name and address:\n%s", got)
	}
	if got := dst.sh("cat /etc/tinc/mesh/rsa_key.priv"); got != tincKey {
		t.Errorf("dstvm's tinc key is not the secret given")
	}

	// 3. A capture of the fresh host is the same bundle, up to the values of its variables.
	dst.brine("local", "capture", "--out", inHost("cap-dst"))
	capDst := readTree(t, shared("cap-dst"))
	normalise := func(files map[string][]byte) map[string][]byte {
		out := map[string][]byte{}
		for k, v := range files {
			switch k {
			case "README.md": // names the host
			case "variables.hcl":
				out[k] = descriptionRE.ReplaceAll(v, nil)
			default:
				out[k] = v
			}
		}
		return out
	}
	a, b := normalise(capSrc), normalise(capDst)
	var names []string
	for k := range a {
		names = append(names, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		if !bytes.Equal(a[k], b[k]) {
			t.Errorf("%s differs between the capture of srcvm and that of dstvm:\n--- srcvm\n%s\n--- dstvm\n%s", k, a[k], b[k])
		}
	}
}
