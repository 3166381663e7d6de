package master_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
)

// The bootstrap endpoint serves the running binary (here the test binary) with the sha256 it
// announces, at /brine only.
func TestBootstrapEndpoint(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := (&cloud.ControlMaster{Client: m.Client()}).Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// No brine-minion beside the test binary: the endpoint serves the binary itself.
	exe, _ := os.Executable()
	raw, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if info.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("announced sha256 %s is not the binary's", info.SHA256)
	}
	base := "http://" + m.BootstrapAddr()
	if info.BinaryURL != base+"/brine-minion" || info.MasterAddr != "127.0.0.1" || info.MasterFingerprint != m.Key().Fingerprint() {
		t.Fatalf("bootstrap info %+v (endpoint %s)", info, base)
	}
	if !strings.HasSuffix(m.RequestAddr(), ":"+strconv.Itoa(info.RequestPort)) || !strings.HasSuffix(m.PublishAddr(), ":"+strconv.Itoa(info.PublishPort)) {
		t.Fatalf("ports %d/%d, master on %s/%s", info.PublishPort, info.RequestPort, m.PublishAddr(), m.RequestAddr())
	}
	get := func(method, path string) (int, []byte) {
		req, _ := http.NewRequestWithContext(ctx, method, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := get("GET", "/brine-minion")
	got := sha256.Sum256(body)
	if code != 200 || got != sum {
		t.Fatalf("GET /brine-minion: %d, %d bytes, sha256 %x", code, len(body), got)
	}
	if code, body := get("GET", "/brine-minion.sha256"); code != 200 || string(body) != info.SHA256+"  brine-minion\n" {
		t.Fatalf("GET /brine-minion.sha256: %d %q", code, body)
	}
	for _, p := range []string{"/", "/brine", "/brine.sha256", "/brine-minion/", "/etc/passwd", "/../brine-minion", "/master.key", "/brine-minion.sha256x"} {
		if code, _ := get("GET", p); code != 404 {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
	if code, _ := get("POST", "/brine-minion"); code != 405 {
		t.Errorf("POST /brine-minion: %d, want 405", code)
	}
}

// Without bootstrap_addr, or listening everywhere with no advertise_addr, the master says what
// to configure instead of handing droplets an address they cannot reach.
func TestBootstrapNeedsConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	off := master.TestMaster(t)
	if _, err := (&cloud.ControlMaster{Client: off.Client()}).Bootstrap(ctx); err == nil || !strings.Contains(err.Error(), "bootstrap_addr") {
		t.Fatalf("no bootstrap_addr: %v", err)
	}
	if off.BootstrapAddr() != "" {
		t.Fatal("bootstrap endpoint listening without bootstrap_addr")
	}
	wild := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "0.0.0.0:0" })
	if _, err := wild.Bootstrap(); err == nil || !strings.Contains(err.Error(), "advertise_addr") {
		t.Fatalf("0.0.0.0 without advertise_addr: %v", err)
	}
	adv := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0"; c.AdvertiseAddr = "198.51.100.7" })
	if info, err := adv.Bootstrap(); err != nil || !strings.HasPrefix(info.BinaryURL, "http://198.51.100.7:") || info.MasterAddr != "198.51.100.7" {
		t.Fatalf("advertise_addr: %+v %v", info, err)
	}
}

// cloud.ControlMaster over the control socket: a token enrols a minion once, WaitEnrolled sees it,
// Converge applies a bundle directory to that minion alone, and failures say why.
func TestCloudMasterEnrolAndConverge(t *testing.T) {
	m := master.TestMaster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bundles := t.TempDir()
	out := t.TempDir()
	writeFile(t, filepath.Join(bundles, "app", "main.hcl"), `file "marker" {
  path    = "`+out+`/${minion.id}"
  content = "converged ${minion.id} in ${join(",", minion.groups)}\n"
}`)
	writeFile(t, filepath.Join(bundles, "broken", "main.hcl"), `file "x" { colour = "red" }`)
	writeFile(t, filepath.Join(bundles, "failing", "main.hcl"), `file "x" {
  path    = "`+out+`/web-1/under-a-file"
  content = "x"
}`)
	cm := &cloud.ControlMaster{Client: m.Client(), BundleDir: bundles}

	tok, err := cm.CreateToken(ctx, "web-1", []string{"app"}, time.Minute)
	if err != nil || !strings.HasPrefix(tok, "brn2-") {
		t.Fatalf("token %q: %v", tok, err)
	}
	// Nobody enrols as web-2: the wait ends with the context.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	if err := cm.WaitEnrolled(short, "web-2"); err != context.DeadlineExceeded {
		t.Fatalf("wait for a minion that never comes: %v", err)
	}
	cancelShort()

	startMinion(t, m, "web-1", func(c *minion.Config) { c.Token = tok; c.MasterFinger = m.Key().Fingerprint() })
	if err := cm.WaitEnrolled(ctx, "web-1"); err != nil {
		t.Fatal(err)
	}
	if k, _ := m.Keys().Get("web-1"); k.State != pki.StateAccepted || strings.Join(k.Groups, ",") != "app" {
		t.Fatalf("key %+v", k)
	}
	if err := cm.Converge(ctx, "web-1", []string{"app"}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "web-1")); err != nil || string(b) != "converged web-1 in app\n" {
		t.Fatalf("marker: %q %v", b, err)
	}
	if err := cm.Converge(ctx, "web-1", []string{"broken"}); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("broken bundle: %v", err)
	}
	if err := cm.Converge(ctx, "web-1", []string{"failing"}); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("failing bundle: %v", err)
	}
	if err := cm.Converge(ctx, "web-1", []string{"../etc"}); err == nil {
		t.Fatal("a bundle name outside bundle_dir was accepted")
	}
	// web-2 not connected: converging it sends nothing.
	if err := cm.Converge(ctx, "web-2", []string{"app"}); err == nil {
		t.Fatal("converged a minion that does not exist")
	}

	// The same token a second time: refused, the key stays pending.
	startMinion(t, m, "web-3", func(c *minion.Config) { c.Token = tok })
	tb.WaitFor(t, 5*time.Second, "web-3 presented", func() bool { _, ok := m.Keys().Get("web-3"); return ok })
	time.Sleep(300 * time.Millisecond)
	if k, _ := m.Keys().Get("web-3"); k.State != pki.StatePending {
		t.Fatalf("a used token enrolled web-3: %+v", k)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
