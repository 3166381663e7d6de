package testbed

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// skipWithoutMirror skips t, with the one-line reason, when the machine's Debian mirror cannot
// be reached: the one skip a real-host test may take on a machine that can run it, because the
// network beyond the machine is not the machine's to promise.
func skipWithoutMirror(t testing.TB) {
	t.Helper()
	if err := DebianReachable(context.Background(), 5*time.Second); err != nil {
		t.Skipf("real Debian packages: %v", err)
	}
}

func TestSourceURIs(t *testing.T) {
	files := map[string][]byte{
		"etc/apt/sources.list": []byte("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://ftp.example.org/debian bookworm main\ndeb-src http://src.example.org/debian bookworm main\n"),
		"etc/apt/sources.list.d/debian.sources": []byte("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n" +
			"Types: deb\nURIs: https://off.example.org/x\nSuites: stable\nEnabled: no\n"),
	}
	uris, probe := sourceURIs(files)
	want := []string{"http://deb.debian.org/debian/", "http://ftp.example.org/debian/", "http://src.example.org/debian/"}
	if strings.Join(uris, " ") != strings.Join(want, " ") {
		t.Errorf("uris %v, want %v", uris, want)
	}
	if !strings.HasSuffix(probe, "/dists/bookworm/InRelease") {
		t.Errorf("probe %q", probe)
	}
}

// A Debian host installs a real package from the machine's mirror through the cluster's proxy,
// and a second host gets the same package from the machine's cache; the proxy serves the
// machine's mirrors only, and hosts still cannot reach beyond the machine by themselves.
func TestDebianHosts(t *testing.T) {
	if err := Available(); err != nil {
		SkipUnavailable(t, err)
	}
	skipWithoutMirror(t)
	if _, err := exec.LookPath("hello"); err == nil {
		t.Skip("the machine has GNU hello installed: nothing for a host to install")
	}
	// A private cache, so that the first host really downloads.
	old := MirrorCacheDir
	MirrorCacheDir = t.TempDir()
	t.Cleanup(func() { MirrorCacheDir = old })
	c := newT(t, Options{Hosts: []string{"d1", "d2"}, Debian: true})
	d1, d2 := c.Host("d1"), c.Host("d2")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, h := range []*Host{d1, d2} {
		out, code, err := h.Sh(ctx, "apt-get install -y -q hello >/dev/null 2>&1 || exit 1; hello")
		if err != nil || code != 0 || !strings.Contains(out, "Hello, world!") {
			t.Fatalf("%s: install hello: %d %v\n%s", h.Name(), code, err, out)
		}
	}
	cached, fetched := c.MirrorStats()
	if fetched < 1 || cached < 1 {
		t.Errorf("mirror proxy: %d package files from the cache, %d fetched; want the second host served from the cache", cached, fetched)
	}
	if m, _ := filepath.Glob(filepath.Join(MirrorCacheDir, "*", "*", "pool", "*", "h", "hello", "hello_*.deb")); len(m) == 0 {
		if m2, _ := filepath.Glob(filepath.Join(MirrorCacheDir, "*", "pool", "*", "h", "hello", "hello_*.deb")); len(m2) == 0 {
			t.Error("the package is not in the machine's cache")
		}
	}
	if _, err := os.Stat("/usr/bin/hello"); err == nil {
		t.Error("the host's install reached the machine")
	}

	proxy := strings.TrimSpace(mustSh(t, d1, "sed -n 's/^Acquire::http::Proxy \"\\(.*\\)\";/\\1/p' /etc/apt/apt.conf.d/00brine-testbed-proxy"))
	if !strings.HasPrefix(proxy, "http://"+c.BridgeAddr()+":") {
		t.Fatalf("proxy %q", proxy)
	}
	for _, tc := range []struct{ args, want string }{
		{"-x " + proxy + " http://example.com/", "403"},
		{"-x " + proxy + " -X POST http://deb.debian.org/debian/", "405"},
		{"-x " + proxy + " ftp://deb.debian.org/debian/", "400"},
	} {
		out, _, _ := d1.Sh(ctx, "curl -s -o /dev/null -w '%{http_code}' --max-time 10 "+tc.args)
		if strings.TrimSpace(out) != tc.want {
			t.Errorf("curl %s: %q, want %s", tc.args, out, tc.want)
		}
	}
	if _, code, _ := d1.Sh(ctx, "curl -s -o /dev/null --max-time 5 --noproxy '*' http://deb.debian.org/debian/"); code == 0 {
		t.Error("a host reaches the mirror without the proxy: the bridge forwards")
	}
}
